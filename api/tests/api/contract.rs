//! The HTTP contract: statuses, JSON shapes, order, limits, the compatibility route, ETag/304,
//! Cache-Control, CORS preflight, HEAD, 405 with Allow, health and metrics endpoints. Each
//! check is its own test on the shared cluster, with its own API instance.

use serde_json::Value;

use crate::helpers::*;

/// An API instance on the shared cluster with a recognisable `Cache-Control` max-age.
async fn contract_app(cluster: &SharedCluster) -> TestApp {
    let mut config = test_config(cluster);
    config.max_age_secs = 120;
    spawn_app(config).await
}

fn ids_of(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

fn expected_ids(product: i32, count: usize) -> Vec<i64> {
    related_ids(product)[..count]
        .iter()
        .map(|&i| i as i64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn related_items_come_in_position_order_with_the_full_shape() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;

    // Default limit: 16 items of product 1 (which has 20), in position order, full shape.
    let r = app.get("/products/1/related").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "public, max-age=120");
    assert!(r.headers().contains_key("x-request-id"));
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["product_id"], 1);
    assert_eq!(ids_of(&body["items"]), expected_ids(1, 16));
    let first = &body["items"][0];
    let id = related_ids(1)[0];
    assert_eq!(first["name"], format!("Product {id}"));
    assert_eq!(
        first["category"],
        ["Running", "Tennis", "Hiking", "Cycling"][id as usize % 4]
    );
    assert_eq!(first["price_cents"], id * 100 + 99);
    assert_eq!(first["image_url"], format!("https://img.example/{id}.jpg"));
    assert_eq!(first["rating"].as_f64().unwrap(), (id % 51) as f64 / 10.0);
    assert_eq!(first["review_count"], id * 3);
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "category",
            "id",
            "image_url",
            "name",
            "price_cents",
            "rating",
            "review_count"
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_applied_and_bad_ones_are_400() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    // Bounds and beyond what exists.
    for (limit, count) in [(1, 1), (5, 5), (20, 20), (100, 20)] {
        let body: Value = app
            .get(&format!("/products/1/related?limit={limit}"))
            .await
            .json()
            .await
            .unwrap();
        let ids = ids_of(&body["items"]);
        assert_eq!(ids.len(), count, "limit {limit}");
        assert_eq!(ids, expected_ids(1, count));
    }
    for bad in ["0", "101", "-1", "abc", "1.5", ""] {
        let r = app.get(&format!("/products/1/related?limit={bad}")).await;
        assert_eq!(r.status(), 400, "limit={bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_limit");
        assert!(body["error"].as_str().unwrap().len() > 10);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_without_relations_is_200_and_an_unknown_one_404() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    let r = app
        .get(&format!("/products/{LONELY_PRODUCT}/related"))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"product_id": LONELY_PRODUCT, "items": []})
    );
    let r = app
        .get(&format!("/products/{UNKNOWN_PRODUCT}/related"))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "product_not_found");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_400_with_json() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    for bad in ["0", "-1", "abc", "1.5", "2147483648", "+7"] {
        let r = app.get(&format!("/products/{bad}/related")).await;
        assert_eq!(r.status(), 400, "id {bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_id");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compat_route_answers_bare_arrays() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    // The bare array, [] for an unknown id.
    let r = app.get("/api/data/1").await;
    assert_eq!(r.status(), 200);
    let arr: Value = r.json().await.unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 16);
    assert_eq!(arr[0]["id"], related_ids(1)[0]);
    for product in [UNKNOWN_PRODUCT, LONELY_PRODUCT] {
        let arr: Value = app
            .get(&format!("/api/data/{product}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(arr, serde_json::json!([]), "product {product}");
    }
    assert_eq!(app.get("/api/data/x").await.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_are_stable_and_a_match_is_304() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    let etag = app.get("/products/1/related").await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    // The same body gives the same tag; a match gives 304 with no body.
    let again = app.get("/products/1/related").await;
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    let r = app
        .client
        .get(app.url("/products/1/related"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.headers()["cache-control"], "public, max-age=120");
    assert!(r.bytes().await.unwrap().is_empty());
    let r = app
        .client
        .get(app.url("/products/1/related"))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(app.url("/products/1/related?limit=5"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "another limit is another representation");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_the_headers_of_get_without_a_body() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    let get_len = app
        .get("/products/2/related")
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    let r = app
        .client
        .head(app.url("/products/2/related"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], get_len.to_string().as_str());
    assert!(r.headers().contains_key("etag"));
    let r = app
        .client
        .head(app.url("/api/data/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_405_with_allow() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url("/products/1/related"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
        assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_any_origin_by_default_and_answers_preflights() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    let r = app
        .client
        .get(app.url("/products/1/related"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/products/1/related"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "if-none-match, x-request-id",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers()["access-control-allow-methods"],
        "GET, HEAD, OPTIONS"
    );
    assert_eq!(
        r.headers()["access-control-allow-headers"],
        "if-none-match, x-request-id"
    );
    assert!(r.headers().contains_key("access-control-max-age"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_json_404() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    for path in [
        "/",
        "/products",
        "/products/1",
        "/products/1/related/x",
        "/api/data",
        "/nope",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_and_the_probes_answer() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_listed_series_and_no_secrets() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    assert_eq!(app.get("/products/1/related").await.status(), 200);
    let unknown = format!("/products/{UNKNOWN_PRODUCT}/related");
    assert_eq!(app.get(&unknown).await.status(), 404);
    let text = app.metrics().await;
    for series in [
        "api_requests_total{route=\"/products/{id}/related\",status=\"200\"}",
        "api_requests_total{route=\"/products/{id}/related\",status=\"404\"}",
        "api_request_duration_seconds_bucket",
        "api_replica_in_flight{replica=",
        "api_replica_bans_total{replica=",
        "api_errors_total",
        "api_pool_waits_total{replica=",
        "api_cache_hits_total",
        "api_cache_misses_total",
    ] {
        assert!(text.contains(series), "metrics lack {series}:\n{text}");
    }
    assert!(!text.contains("password"), "no secrets in metrics");
    let url: tokio_postgres::Config = cluster.api_url(0).parse().unwrap();
    let password = String::from_utf8(url.get_password().unwrap().to_vec()).unwrap();
    assert!(!text.contains(&password), "no password in metrics");
    app.stop().await;
}

/// `/metrics` is served on the operator listener (`--admin-listen`) and nowhere else: the public
/// listener answers it as any unknown path, and the operator one serves nothing but the probes
/// and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_on_the_operator_listener_only() {
    let cluster = shared_cluster().await;
    let app = contract_app(&cluster).await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let r = app.get_admin("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(r.text().await.unwrap().contains("api_requests_total"));
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(app.get(probe).await.status(), 200, "public {probe}");
        assert_eq!(app.get_admin(probe).await.status(), 200, "operator {probe}");
    }
    for path in ["/products/1/related", "/api/data/1", "/"] {
        let r = app.get_admin(path).await;
        assert_eq!(r.status(), 404, "operator {path}");
    }
    app.stop().await;
}

/// CORS with an allow-list: listed origins are echoed (with Vary), others get no grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allow_list() {
    let cluster = shared_cluster().await;
    let mut config = test_config(&cluster);
    config.allowed_origins = vec!["https://a.example".into(), "https://b.example".into()];
    let app = spawn_app(config).await;
    let r = app
        .client
        .get(app.url("/products/1/related"))
        .header("origin", "https://b.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://b.example"
    );
    assert_eq!(r.headers()["vary"], "Origin");
    let r = app
        .client
        .get(app.url("/products/1/related"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    app.stop().await;
}
