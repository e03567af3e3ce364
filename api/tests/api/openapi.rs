//! The OpenAPI contract: `api/openapi.json` against real responses of real API instances on the
//! shared cluster, so that the document cannot drift from the code.
//!
//! Every exchange is checked against the operation's documented response for its status: the
//! body against the response's JSON Schema (draft 2020-12, OpenAPI 3.1's dialect, with the
//! `jsonschema` crate), the content type against the documented media types, every documented
//! header against its schema (and its presence when required), and every header of a policed
//! set (caching, CORS, `Allow`, `Retry-After`, ...) that the server sends must be documented for
//! that response. At the end, every documented status of every operation, and every header
//! documented for it, must have been seen at least once, save the few listed in [`NOT_PRODUCED`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const DOC: &str = api::assets::OPENAPI;
/// The allow-listed origin every checked request comes from: with an allow-list the API sends
/// `Vary: Origin` on every response, and with an allowed origin the grant headers, so one
/// exchange shows all the CORS headers a response can carry.
const ORIGIN: &str = "https://shop.example";

/// Headers whose presence is part of the contract: each one the server sends must be
/// documented for that response. (Transport headers such as `content-length` or `date` are
/// not.)
const POLICED: [&str; 13] = [
    "etag",
    "cache-control",
    "retry-after",
    "allow",
    "vary",
    "x-request-id",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
    "x-content-type-options",
    "content-security-policy",
];

/// Documented statuses no test provokes, and why: each is documented because the code can
/// answer it.
const NOT_PRODUCED: [(&str, &str, &str, &str); 4] = [
    (
        "/products/{id}/related",
        "get",
        "500",
        "a query failing on a replica that otherwise answers needs a broken database",
    ),
    ("/products/{id}/related", "head", "500", "as GET"),
    (
        "/api/data/{id}",
        "get",
        "500",
        "a query failing on a replica that otherwise answers needs a broken database",
    ),
    ("/api/data/{id}", "head", "500", "as GET"),
];

/// Component responses that no path lists because they answer any path.
const ANY_PATH: [&str; 2] = ["NotFound", "UriTooLong"];

/// The document, and what the exchanges have shown of it.
struct Contract {
    doc: Value,
    /// (path, method, status) answered.
    seen: BTreeSet<(String, String, String)>,
    /// (path, method, status, header name as documented) sent.
    seen_headers: BTreeSet<(String, String, String, String)>,
}

impl Contract {
    fn new() -> Contract {
        Contract {
            doc: serde_json::from_str(DOC).expect("api/openapi.json is JSON"),
            seen: BTreeSet::new(),
            seen_headers: BTreeSet::new(),
        }
    }

    /// Follows a local `$ref` (`#/components/...`) to what it names.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(pointer) => {
                let target = self
                    .doc
                    .pointer(pointer.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("dangling $ref {pointer}"));
                self.resolve(target)
            }
            None => value,
        }
    }

    /// `instance` against `schema`, whose `$ref`s point into this document's components.
    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        // The schema is wrapped in a root that carries the components, so `#/components/...`
        // resolves as it does in the document.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::draft202012::new(&root).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The documented response of `method` on `path` for `status`.
    fn documented(&self, path: &str, method: &str, status: &str) -> &Value {
        let op = self.doc["paths"][path]
            .get(method)
            .unwrap_or_else(|| panic!("{method} {path} is not documented"));
        let response = op["responses"]
            .get(status)
            .unwrap_or_else(|| panic!("{method} {path} answered {status}, not documented"));
        self.resolve(response)
    }

    /// Checks one exchange against the documented `response` and records what it showed.
    async fn check_against(
        &mut self,
        key: (&str, &str),
        documented: Value,
        what: &str,
        response: reqwest::Response,
    ) {
        let (path, method) = key;
        let status = response.status().as_u16().to_string();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body");
        let context = format!("{what} ({method} {path} -> {status})");

        let documented_headers = documented["headers"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, header) in &documented_headers {
            let header = self.resolve(header);
            match headers.get(name.as_str()) {
                Some(value) => {
                    let text = value.to_str().expect("ASCII header");
                    if let Err(e) = self.validate(&header["schema"], &json!(text)) {
                        panic!("{context}: header {name}: {text:?} does not match: {e}");
                    }
                    self.seen_headers.insert((
                        path.into(),
                        method.into(),
                        status.clone(),
                        name.clone(),
                    ));
                }
                None if header["required"] == true => {
                    panic!("{context}: required header {name} missing: {headers:?}")
                }
                None => {}
            }
        }
        for name in headers.keys() {
            if POLICED.contains(&name.as_str()) {
                assert!(
                    documented_headers
                        .keys()
                        .any(|d| d.eq_ignore_ascii_case(name.as_str())),
                    "{context}: header {name} is sent but not documented"
                );
            }
        }

        match documented.get("content").and_then(Value::as_object) {
            None => assert!(
                body.is_empty(),
                "{context}: documented without a body, got {} bytes",
                body.len()
            ),
            Some(content) => {
                let media = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("{context}: a body without Content-Type"));
                let schema = &content
                    .get(media)
                    .unwrap_or_else(|| panic!("{context}: Content-Type {media} not documented"))
                    ["schema"];
                let instance = if media.starts_with("application/json") {
                    serde_json::from_slice(&body)
                        .unwrap_or_else(|e| panic!("{context}: body is not JSON: {e}"))
                } else {
                    Value::String(String::from_utf8(body.to_vec()).expect("UTF-8 body"))
                };
                if let Err(e) = self.validate(schema, &instance) {
                    panic!("{context}: body does not match the documented schema: {e}\n{instance}");
                }
            }
        }
        self.seen.insert((path.into(), method.into(), status));
    }

    /// Checks a response of `method` on the documented `path`.
    async fn check(&mut self, path: &str, method: &str, what: &str, response: reqwest::Response) {
        let status = response.status().as_u16().to_string();
        let documented = self.documented(path, method, &status).clone();
        self.check_against((path, method), documented, what, response)
            .await;
    }

    /// Checks a response against a component response that answers any path.
    async fn check_any_path(&mut self, name: &str, what: &str, response: reqwest::Response) {
        let documented = self.doc["components"]["responses"][name].clone();
        assert!(documented.is_object(), "no component response {name}");
        self.check_against((name, "any path"), documented, what, response)
            .await;
    }
}

/// Requests from [`ORIGIN`] to one API instance.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base: format!("http://{addr}"),
        }
    }

    async fn send(&self, method: &str, path: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .http
            .request(
                method.to_ascii_uppercase().parse().unwrap(),
                format!("{}{path}", self.base),
            )
            .header("origin", ORIGIN);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request completes")
    }
}

/// An API instance on `urls` with the CORS allow-list that shows every CORS header.
async fn instance(cluster: &SharedCluster, urls: Option<Vec<String>>) -> TestApp {
    let mut config = test_config(cluster);
    if let Some(urls) = urls {
        config.replicas = urls;
    }
    config.allowed_origins = vec![ORIGIN.into()];
    spawn_app(config).await
}

/// GET and HEAD of `concrete` (documented as `path`), each expected to answer `status`; with
/// `etag`, a conditional request as well.
async fn get_and_head(
    contract: &mut Contract,
    client: &Client,
    path: &str,
    concrete: &str,
    status: u16,
    extra: &[(&str, &str)],
) {
    for method in ["get", "head"] {
        let r = client.send(method, concrete, extra).await;
        assert_eq!(r.status().as_u16(), status, "{method} {concrete} {extra:?}");
        contract
            .check(path, method, &format!("{concrete} {extra:?}"), r)
            .await;
    }
}

/// The OPTIONS (plain and preflight) and the refused methods of `path`.
async fn options_and_refusals(
    contract: &mut Contract,
    client: &Client,
    path: &str,
    concrete: &str,
) {
    let plain = client.send("options", concrete, &[]).await;
    contract
        .check(path, "options", "plain OPTIONS", plain)
        .await;
    let preflight = client
        .send(
            "options",
            concrete,
            &[
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "if-none-match"),
            ],
        )
        .await;
    assert_eq!(preflight.status(), 204);
    contract
        .check(path, "options", "preflight", preflight)
        .await;
    for method in ["put", "post", "delete", "patch"] {
        let r = client.send(method, concrete, &[]).await;
        assert_eq!(r.status(), 405, "{method} {concrete}");
        contract.check(path, method, "refused method", r).await;
    }
}

/// 200, then 304 with the ETag it gave, for GET and HEAD.
async fn fresh_and_revalidated(
    contract: &mut Contract,
    client: &Client,
    path: &str,
    concrete: &str,
) {
    get_and_head(contract, client, path, concrete, 200, &[]).await;
    let etag = client.send("get", concrete, &[]).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    get_and_head(
        contract,
        client,
        path,
        concrete,
        304,
        &[("if-none-match", &etag)],
    )
    .await;
}

/// Every route, status and header of the document against real responses, then the coverage:
/// what is documented must have happened. It takes the shared cluster alone because the 504
/// needs a table lock that would stall other tests' queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_match_the_document_and_every_documented_status_occurs() {
    let cluster = shared_cluster_alone().await;
    let mut contract = Contract::new();

    // The healthy instance: 200, 304, 400, 404, 405, OPTIONS, the probes, the embedded files.
    let app = instance(&cluster, None).await;
    let client = Client::new(app.addr);
    for (path, concrete) in [
        ("/products/{id}/related", "/products/1/related"),
        ("/api/data/{id}", "/api/data/1"),
    ] {
        fresh_and_revalidated(&mut contract, &client, path, concrete).await;
        let with_limit = format!("{concrete}?limit=5");
        get_and_head(&mut contract, &client, path, &with_limit, 200, &[]).await;
        for bad in [
            concrete.replace('1', "abc"),
            format!("{concrete}?limit=0"),
            format!("{concrete}?limit=1&limit=2"),
            format!("{concrete}?x=%zz"),
        ] {
            get_and_head(&mut contract, &client, path, &bad, 400, &[]).await;
        }
        options_and_refusals(&mut contract, &client, path, concrete).await;
    }
    let unknown = format!("/products/{UNKNOWN_PRODUCT}/related");
    get_and_head(
        &mut contract,
        &client,
        "/products/{id}/related",
        &unknown,
        404,
        &[],
    )
    .await;
    let lonely = format!("/products/{LONELY_PRODUCT}/related");
    get_and_head(
        &mut contract,
        &client,
        "/products/{id}/related",
        &lonely,
        200,
        &[],
    )
    .await;
    get_and_head(
        &mut contract,
        &client,
        "/api/data/{id}",
        &format!("/api/data/{UNKNOWN_PRODUCT}"),
        200,
        &[],
    )
    .await;
    for probe in ["/healthz", "/readyz"] {
        get_and_head(&mut contract, &client, probe, probe, 200, &[]).await;
        options_and_refusals(&mut contract, &client, probe, probe).await;
    }
    for file in [
        "/openapi.json",
        "/widget/related-items.js",
        "/widget/demo.html",
    ] {
        fresh_and_revalidated(&mut contract, &client, file, file).await;
        options_and_refusals(&mut contract, &client, file, file).await;
    }
    // The operator listener's /metrics, documented with its own server.
    let admin = Client::new(app.admin_addr);
    get_and_head(&mut contract, &admin, "/metrics", "/metrics", 200, &[]).await;
    options_and_refusals(&mut contract, &admin, "/metrics", "/metrics").await;
    // What answers any path: an unknown one (also /metrics on the public listener), and one
    // too long to be a route.
    for path in ["/nope", "/metrics", "/widget/", "/widget/other.js"] {
        let r = client.send("get", path, &[]).await;
        assert_eq!(r.status(), 404, "{path}");
        contract.check_any_path("NotFound", path, r).await;
    }
    let long = format!("/products/{}", "9".repeat(3000));
    let r = client.send("get", &long, &[]).await;
    assert_eq!(r.status(), 414);
    contract.check_any_path("UriTooLong", "long path", r).await;

    // The default CORS (`*`, no Vary) matches the same document.
    let open = spawn_app(test_config(&cluster)).await;
    let r = Client::new(open.addr)
        .send("get", "/products/2/related", &[])
        .await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("vary"));
    contract
        .check("/products/{id}/related", "get", "CORS *", r)
        .await;
    open.stop().await;

    // 503: an instance whose only replica does not answer (a port nothing listens on).
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let live_port = cluster.nodes()[0].port;
    let dead_url = cluster
        .api_url(0)
        .replace(&format!(":{live_port}/"), &format!(":{dead_port}/"));
    assert_ne!(dead_url, cluster.api_url(0));
    let down = instance(&cluster, Some(vec![dead_url])).await;
    let down_client = Client::new(down.addr);
    for (path, concrete) in [
        ("/products/{id}/related", "/products/3/related"),
        ("/api/data/{id}", "/api/data/3"),
    ] {
        get_and_head(&mut contract, &down_client, path, concrete, 503, &[]).await;
    }
    let not_ready = eventually(Duration::from_secs(10), || async {
        down_client.send("get", "/readyz", &[]).await.status() == 503
    })
    .await;
    assert!(not_ready, "/readyz answers 503 without a usable replica");
    get_and_head(&mut contract, &down_client, "/readyz", "/readyz", 503, &[]).await;
    down.stop().await;

    // 504: an instance reading from the primary, whose relation table is locked past the
    // request deadline. The instance is warmed first, so its connections hold the prepared
    // statement already and the lock stalls the query, not the connecting.
    let mut config = test_config(&cluster);
    config.replicas = vec![cluster.api_url(0)];
    config.allowed_origins = vec![ORIGIN.into()];
    config.request_timeout_ms = 500;
    let slow = spawn_app(config).await;
    let slow_client = Client::new(slow.addr);
    for warm in ["/products/4/related", "/api/data/4"] {
        assert_eq!(slow_client.send("get", warm, &[]).await.status(), 200);
    }
    let locker = cluster.connect(0).await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE related_items IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    for (path, concrete) in [
        ("/products/{id}/related", "/products/5/related"),
        ("/api/data/{id}", "/api/data/5"),
    ] {
        get_and_head(&mut contract, &slow_client, path, concrete, 504, &[]).await;
    }
    locker.batch_execute("ROLLBACK;").await.unwrap();
    slow.stop().await;

    // The coverage: every documented status of every operation, and every header documented
    // for it, happened.
    let mut missing = Vec::new();
    for (path, item) in contract.doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for (status, response) in responses {
                let key = (path.clone(), method.clone(), status.clone());
                if NOT_PRODUCED
                    .iter()
                    .any(|(p, m, s, _)| (*p, *m, *s) == (path, method, status))
                {
                    continue;
                }
                if !contract.seen.contains(&key) {
                    missing.push(format!("{method} {path} {status}"));
                    continue;
                }
                let response = contract.resolve(response);
                for name in response["headers"]
                    .as_object()
                    .map(|h| h.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let k = (path.clone(), method.clone(), status.clone(), name.clone());
                    if !contract.seen_headers.contains(&k) {
                        missing.push(format!("{method} {path} {status}: header {name}"));
                    }
                }
            }
        }
    }
    for name in ANY_PATH {
        if !contract.seen.iter().any(|(p, _, _)| p == name) {
            missing.push(format!("component response {name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "documented but never seen:\n{}",
        missing.join("\n")
    );
    app.stop().await;
}

/// `/openapi.json` serves the committed file byte for byte, and the document names every route
/// the code has: the metrics' route labels and the embedded files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_committed_one_and_lists_every_route() {
    let cluster = shared_cluster().await;
    let app = spawn_app(test_config(&cluster)).await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), DOC);
    app.stop().await;

    let doc: Value = serde_json::from_str(DOC).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut routes: BTreeSet<&str> = api::counters::ROUTES
        .iter()
        .map(|(_, label)| *label)
        .filter(|label| label.starts_with('/'))
        .collect();
    routes.extend(api::assets::ASSETS.iter().map(|a| a.path));
    assert_eq!(paths, routes, "documented paths against the code's routes");
    // Every error the code can answer is documented under its status, with its code.
    use api::HttpError::*;
    for e in [
        InvalidId,
        InvalidLimit,
        InvalidQuery,
        ProductNotFound,
        RouteNotFound,
        MethodNotAllowed { allow: "" },
        UriTooLong,
        NoReplica,
        PoolTimeout,
        Overloaded,
        ShuttingDown,
        DeadlineExceeded,
        Internal,
    ] {
        let schema = &doc["components"]["schemas"][format!("Error{}", e.status().as_u16())];
        let codes = &schema["allOf"][1]["properties"]["code"]["enum"];
        assert!(
            codes
                .as_array()
                .is_some_and(|c| c.contains(&json!(e.code()))),
            "{} {} is not documented",
            e.status(),
            e.code()
        );
    }
    // Every schema in the document is a valid draft 2020-12 schema.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let mut schema = schema.clone();
        schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        assert!(
            jsonschema::meta::validate(&schema).is_ok(),
            "components.schemas.{name} is not a valid JSON Schema"
        );
    }
    // Every component is used, and every $ref resolves: read from the parsed document, so the
    // file's spacing cannot make the check pass with nothing checked.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 10, "the document's $refs: {refs:?}");
    for kind in ["schemas", "responses", "headers", "parameters"] {
        for name in doc["components"][kind].as_object().unwrap().keys() {
            let reference = format!("#/components/{kind}/{name}");
            assert!(
                refs.contains(&reference) || ANY_PATH.contains(&name.as_str()),
                "components.{kind}.{name} is never used"
            );
        }
    }
    for pointer in &refs {
        assert!(
            pointer.starts_with('#') && doc.pointer(&pointer[1..]).is_some(),
            "dangling $ref {pointer}"
        );
    }
}

/// Every `$ref` in `value`, depth first.
fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => refs.push(r.clone()),
                    _ => collect_refs(v, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}
