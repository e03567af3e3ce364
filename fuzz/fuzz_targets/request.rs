//! Arbitrary bytes as a request head (`METHOD TARGET ...` then `Name: value` lines), built into
//! a request and served by the API's real handler (`App::handle`: routing, the method check,
//! id and query validation, CORS, request ids) on both listeners, without a database: the one
//! replica is 127.0.0.1:1, where nothing listens, so a request that passes validation ends in
//! a quick 503. Heads that hyper could not parse (an invalid method, target or header) are left
//! to the `server` target, which feeds raw bytes to hyper's parser.
//!
//! Invariants besides not panicking: no 500 for any input, the only 5xx being the 503 of "no
//! replica"; every error body is `{"error": "...", "code": "..."}` JSON; every response has an
//! `X-Request-Id` of at most 128 plain characters (a caller's is echoed only when plain), and a
//! preflight's `Access-Control-Allow-Headers` echoes only a plain list of names.

#![no_main]

use std::sync::{Arc, OnceLock};

use api::counters::Counters;
use api::http::{App, Surface};
use api::{Config, ReplicaSet};
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: App,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let app = runtime.block_on(async {
            let config =
                Config::with_replicas(vec!["postgres://api:fuzz@127.0.0.1:1/related".into()]);
            let settings = config.validate().expect("default settings validate");
            let counters = Arc::new(Counters::default());
            let replicas = ReplicaSet::new(&settings, counters.clone()).expect("one replica");
            App::new(&settings, replicas, counters)
        });
        Harness { runtime, app }
    })
}

/// The request `data` spells, or `None` where hyper would have refused the head itself.
fn decode(data: &[u8]) -> Option<Request<()>> {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut start = lines.next()?.splitn(3, |&b| b == b' ');
    let method = Method::from_bytes(start.next()?).ok()?;
    let uri = Uri::try_from(start.next()?).ok()?;
    let mut req = Request::builder().method(method).uri(uri).body(()).ok()?;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        req.headers_mut().append(name, value);
    }
    Some(req)
}

async fn check(app: &App, surface: Surface, req: Request<()>) {
    let described = format!("{surface:?} {} {:?}", req.method(), req.uri());
    let response = app.handle(surface, req).await;
    let status = response.status();
    let plain = |v: &HeaderValue, extra: &[u8], max: usize| {
        v.len() <= max
            && v.as_bytes()
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    let id = response.headers().get("x-request-id");
    assert!(
        id.is_some_and(|id| !id.is_empty() && plain(id, b"-_.:", 128)),
        "{described}: request id {id:?}"
    );
    if let Some(allow) = response.headers().get("access-control-allow-headers") {
        assert!(plain(allow, b"-_, ", 512), "{described}: {allow:?}");
    }
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t == "application/json");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a full body")
        .to_bytes();
    assert!(
        !status.is_server_error() || status == 503,
        "{described}: {status}: {body:?}"
    );
    if status.is_client_error() || status.is_server_error() {
        assert!(json, "{described}: {status} without a JSON content type");
        let value: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{described}: {status}: body is not JSON ({e}): {body:?}"));
        assert!(
            value["error"].is_string() && value["code"].is_string(),
            "{described}: {status}: {value}"
        );
        if status == 503 {
            assert_eq!(value["code"], "no_replica", "{described}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = decode(data) else {
        return;
    };
    let h = harness();
    h.runtime.block_on(async {
        for surface in [Surface::Public, Surface::Operator] {
            let mut copy = Request::builder()
                .method(req.method().clone())
                .uri(req.uri().clone())
                .body(())
                .expect("the same parts");
            *copy.headers_mut() = req.headers().clone();
            check(&h.app, surface, copy).await;
        }
    });
});
