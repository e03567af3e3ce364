//! The HTTP layer: routing (the id and `limit` are checked by [`crate::params`]), the JSON
//! contract, ETag/304, Cache-Control, CORS, the concurrency bound, the per-request deadline,
//! request ids and per-request counters. Each request arrives on one [`Surface`]: the public
//! listener serves the API, the probes and the embedded files of [`crate::assets`]
//! (`/openapi.json`, `/widget/...`), the operator listener the probes and `/metrics`, which serves
//! what [`crate::metrics`] renders from snapshots of the counters, the replicas and the cache.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::assets::{self, Asset};
use crate::cache::{CacheKey, CachedResponse, ResponseCache, Shape};
use crate::config::Settings;
use crate::counters::{Counters, RouteLabel};
use crate::error::HttpError;
use crate::metrics::{self, Exposition};
use crate::params::{parse_id, parse_limit};
use crate::query::Lookup;
use crate::render;
use crate::replicas::ReplicaSet;

pub type Body = Full<Bytes>;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const ALLOW_READ: &str = "GET, HEAD, OPTIONS";
/// Longer paths cannot be a valid route; answer 414 before looking at them.
const MAX_PATH_BYTES: usize = 2048;

/// Which listener a request came in on; it decides which routes exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `--listen`: the API, `/healthz`, `/readyz`, `/openapi.json` and the widget's files.
    /// `/metrics` is an unknown path here (404).
    Public,
    /// `--admin-listen`: `/metrics`, `/healthz`, `/readyz`; nothing else.
    Operator,
}

/// Shared state of the server: one per process, behind an `Arc` in every connection task.
pub struct App {
    pub replicas: Arc<ReplicaSet>,
    pub counters: Arc<Counters>,
    cache: Option<ResponseCache>,
    /// Requests in progress, bounded by `max_in_flight`.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    request_timeout: std::time::Duration,
    cache_control: HeaderValue,
    cors: Cors,
    log_requests: bool,
    request_id_prefix: u32,
    request_seq: AtomicU64,
    #[cfg(debug_assertions)]
    debug_spin: std::time::Duration,
}

/// Which origins may read responses from a browser.
enum Cors {
    Any,
    List(Vec<String>),
}

impl Cors {
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::List(list) => {
                let origin_text = origin.to_str().ok()?;
                list.iter()
                    .any(|o| o == origin_text)
                    .then(|| origin.clone())
            }
        }
    }
}

impl App {
    pub fn new(settings: &Settings, replicas: Arc<ReplicaSet>, counters: Arc<Counters>) -> App {
        let cache = settings
            .cache
            .as_ref()
            .map(|cache| ResponseCache::new(cache, counters.clone()));
        let origins: Vec<String> = settings
            .allowed_origins
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        let cors = if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else {
            Cors::List(origins)
        };
        App {
            replicas,
            counters,
            cache,
            in_flight: AtomicUsize::new(0),
            max_in_flight: settings.max_concurrent_requests.get(),
            request_timeout: settings.request_timeout,
            // Static bytes: a clone is a pointer copy, where a shared one would be a reference
            // count that every request on every thread increments and decrements. One short
            // string per App, for the life of the process.
            cache_control: HeaderValue::from_static(Box::leak(
                format!("public, max-age={}", settings.max_age_secs).into_boxed_str(),
            )),
            cors,
            log_requests: settings.log_requests,
            request_id_prefix: rand::random(),
            request_seq: AtomicU64::new(0),
            #[cfg(debug_assertions)]
            debug_spin: settings.debug_spin,
        }
    }

    /// Serves one request that came in on `surface`. Never fails: every outcome is a response.
    pub async fn handle<B>(&self, surface: Surface, req: Request<B>) -> Response<Body> {
        let started = Instant::now();
        #[cfg(debug_assertions)]
        while started.elapsed() < self.debug_spin {
            std::hint::spin_loop();
        }
        let request_id = self.request_id(req.headers());
        let (route, mut response) = self.route(surface, &req).await;
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID, request_id.clone());
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            if let Some(allowed) = self.cors.allow(origin) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("ETag, X-Request-Id"),
                );
            }
        }
        if matches!(self.cors, Cors::List(_)) {
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        let status = response.status();
        let elapsed = started.elapsed();
        self.counters.record(route, status.as_u16(), elapsed);
        // A 503 from /readyz is the probe's answer, not a failed request: not logged.
        if status.is_server_error() && route != RouteLabel::Readyz {
            tracing::warn!(
                request_id = request_id.to_str().unwrap_or(""),
                method = %req.method(),
                path = req.uri().path(),
                status = status.as_u16(),
                micros = elapsed.as_micros() as u64,
                "request failed"
            );
        } else if self.log_requests {
            tracing::info!(
                request_id = request_id.to_str().unwrap_or(""),
                method = %req.method(),
                path = req.uri().path(),
                status = status.as_u16(),
                micros = elapsed.as_micros() as u64,
                "request"
            );
        }
        response
    }

    /// The caller's `X-Request-Id` if it is short and plain, otherwise a new one.
    fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty()
                && b.len() <= 128
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
            {
                return v.clone();
            }
        }
        let seq = self.request_seq.fetch_add(1, Relaxed);
        // Formatted on the stack: every request without an id of its own gets one.
        let mut text = [0u8; 8 + 1 + 16];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        std::io::Write::write_fmt(
            &mut cursor,
            format_args!("{:08x}-{seq:x}", self.request_id_prefix),
        )
        .expect("25 bytes hold 8 + 1 + 16 hex digits");
        let len = cursor.position() as usize;
        HeaderValue::from_bytes(&text[..len]).expect("hex is a valid header")
    }

    async fn route<B>(&self, surface: Surface, req: &Request<B>) -> (RouteLabel, Response<Body>) {
        let path = req.uri().path();
        if path.len() > MAX_PATH_BYTES {
            return (RouteLabel::Other, error_response(&HttpError::UriTooLong));
        }
        let method = req.method();
        let (label, target) = match (surface, path) {
            (_, "/healthz") => (RouteLabel::Healthz, Target::Healthz),
            (_, "/readyz") => (RouteLabel::Readyz, Target::Readyz),
            (Surface::Operator, "/metrics") => (RouteLabel::Metrics, Target::Metrics),
            (Surface::Operator, _) => {
                return (RouteLabel::Other, error_response(&HttpError::RouteNotFound))
            }
            (Surface::Public, _) => {
                if let Some(rest) = path.strip_prefix("/products/") {
                    match rest.split_once('/') {
                        Some((id, "related")) => {
                            (RouteLabel::Related, Target::Items(Shape::Related, id))
                        }
                        _ => return (RouteLabel::Other, error_response(&HttpError::RouteNotFound)),
                    }
                } else if let Some(id) = path.strip_prefix("/api/data/") {
                    (RouteLabel::Compat, Target::Items(Shape::Compat, id))
                } else if let Some((asset, etag)) = assets::find(path) {
                    (RouteLabel::Static, Target::Asset(asset, etag))
                } else {
                    return (RouteLabel::Other, error_response(&HttpError::RouteNotFound));
                }
            }
        };
        if method == Method::OPTIONS {
            return (label, self.options(req));
        }
        if method != Method::GET && method != Method::HEAD {
            let e = HttpError::MethodNotAllowed { allow: ALLOW_READ };
            let mut r = error_response(&e);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW_READ));
            return (label, r);
        }
        let response = match target {
            Target::Healthz => {
                text_response(StatusCode::OK, "application/json", "{\"status\":\"ok\"}")
            }
            Target::Readyz => {
                if self.replicas.any_usable() {
                    text_response(StatusCode::OK, "application/json", "{\"status\":\"ready\"}")
                } else {
                    error_response(&HttpError::NoReplica)
                }
            }
            Target::Metrics => {
                let text = metrics::render(&Exposition {
                    counters: &self.counters.snapshot(),
                    replicas: &self.replicas.stats(),
                    cache_entries: self.cache.as_ref().map(ResponseCache::entries),
                });
                text_response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                )
            }
            Target::Items(shape, id) => match self.items(req, shape, id).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            },
            Target::Asset(asset, etag) => asset_response(req, asset, etag),
        };
        (label, response)
    }

    /// `OPTIONS`: a CORS preflight gets the allowed methods and headers; a plain OPTIONS gets
    /// `Allow`.
    fn options<B>(&self, req: &Request<B>) -> Response<Body> {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ALLOW, HeaderValue::from_static(ALLOW_READ));
        let preflight = req.headers().get(header::ORIGIN).is_some()
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_READ),
            );
            if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                // Echo a plain list of header names; anything odd is left out.
                let plain = asked.len() <= 512
                    && asked
                        .as_bytes()
                        .iter()
                        .all(|c| c.is_ascii_alphanumeric() || b"-_, ".contains(c));
                if plain {
                    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                }
            }
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
        r
    }

    async fn items<B>(
        &self,
        req: &Request<B>,
        shape: Shape,
        id: &str,
    ) -> Result<Response<Body>, HttpError> {
        let product_id = parse_id(id)?;
        let limit = parse_limit(req.uri().query())?;
        // Bound the work in progress: past it, shed load at once instead of queueing into
        // the deadline.
        let Some(_slot) = InFlightSlot::take(&self.in_flight, self.max_in_flight) else {
            self.counters.overloaded.fetch_add(1, Relaxed);
            return Err(HttpError::Overloaded);
        };
        let key = CacheKey {
            shape,
            product_id,
            limit,
        };
        let hit = match &self.cache {
            Some(cache) => cache.get(&key),
            None => None,
        };
        let cached = match hit {
            Some(cached) => cached,
            // What may query is boxed inside (see `fetch`): hyper moves each request's future
            // a few times, and a cache hit should not pay for kilobytes it does not use.
            None => self.fetch(key).await?,
        };
        let rendered = match &*cached {
            Ok(rendered) => rendered,
            Err(e) => return Err(e.clone()),
        };
        let not_modified = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|inm| render::if_none_match(inm, &rendered.etag));
        let mut r = if not_modified {
            let mut r = Response::new(Body::default());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = Response::new(Full::new(rendered.body.clone()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        let h = r.headers_mut();
        h.insert(header::ETAG, rendered.etag.clone());
        h.insert(header::CACHE_CONTROL, self.cache_control.clone());
        Ok(r)
    }

    /// A response that was not in the cache (or every response, with the cache off): loaded
    /// within the request's deadline, through the cache when it is on, so that concurrent
    /// misses on one key run one query.
    async fn fetch(&self, key: CacheKey) -> Result<Arc<CachedResponse>, HttpError> {
        let deadline = Instant::now() + self.request_timeout;
        // The load (the replica set's retries and batching: kilobytes) is boxed once, here:
        // held by value, every future that moves or wraps it gets room for another copy
        // (rustc keeps a moved-from local's storage), which made this future 17 KB to copy.
        let load = Box::pin(self.load(key, deadline));
        let outcome = match &self.cache {
            Some(cache) => {
                tokio::time::timeout_at(deadline.into(), cache.get_or_load(key, load)).await
            }
            None => {
                tokio::time::timeout_at(deadline.into(), async { load.await.map(Arc::new) }).await
            }
        };
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.counters.deadline_exceeded.fetch_add(1, Relaxed);
                Err(HttpError::DeadlineExceeded)
            }
        }
    }

    /// The query and its rendering: what the cache stores.
    async fn load(&self, key: CacheKey, deadline: Instant) -> Result<CachedResponse, HttpError> {
        let lookup = self
            .replicas
            .fetch(key.product_id, i64::from(key.limit), deadline)
            .await?;
        Ok(match (key.shape, lookup) {
            (Shape::Related, Lookup::Found(found)) => Ok(render::related(&found)),
            (Shape::Related, Lookup::UnknownProduct(_)) => Err(HttpError::ProductNotFound),
            (Shape::Compat, Lookup::Found(found)) => Ok(render::compat(&found)),
            // The original service answered an unknown id with `[]`; existing widgets expect it.
            (Shape::Compat, Lookup::UnknownProduct(_)) => Ok(render::compat_empty()),
        })
    }
}

/// One request's place among those in progress; given back when dropped. A counter rather
/// than a semaphore: nothing ever waits for a place (past the bound a request is shed at once),
/// and releasing a tokio semaphore's permit takes its waiters' lock on every request.
struct InFlightSlot<'a>(&'a AtomicUsize);

impl<'a> InFlightSlot<'a> {
    fn take(in_flight: &'a AtomicUsize, max: usize) -> Option<InFlightSlot<'a>> {
        if in_flight.fetch_add(1, Relaxed) >= max {
            in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(InFlightSlot(in_flight))
    }
}

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

enum Target<'a> {
    Healthz,
    Readyz,
    Metrics,
    Items(Shape, &'a str),
    Asset(&'static Asset, &'static HeaderValue),
}

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// An embedded file, or a 304 when the caller's `If-None-Match` holds its ETag.
fn asset_response<B>(req: &Request<B>, asset: &Asset, etag: &HeaderValue) -> Response<Body> {
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|inm| render::if_none_match(inm, etag));
    let mut r = if not_modified {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if let Some(csp) = asset.csp {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            );
        }
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(assets::CACHE_CONTROL),
    );
    // The script is run by other sites' pages: never let a browser guess another type.
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    r
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `{"error", "code"}` with the error's status, `Retry-After` on 503s, and no caching.
pub fn error_response(e: &HttpError) -> Response<Body> {
    let mut r = text_response(e.status(), "application/json", e.body());
    if let Some(secs) = e.retry_after() {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app whose replica is port 1, where nothing listens: for what needs no query.
    fn app_without_database() -> App {
        let config =
            crate::Config::with_replicas(vec!["postgres://api:secret@127.0.0.1:1/related".into()]);
        let settings = config.validate().unwrap();
        let counters = Arc::new(Counters::default());
        let replicas = ReplicaSet::new(&settings, counters.clone()).unwrap();
        App::new(&settings, replicas, counters)
    }

    /// The routes of each listener, none of which needs a database: the public one has no
    /// `/metrics`, the operator one nothing but the probes and `/metrics`.
    #[tokio::test]
    async fn metrics_are_served_on_the_operator_listener_only() {
        let app = app_without_database();
        let status = |surface, path: &'static str| {
            let app = &app;
            async move {
                let req = Request::get(path).body(()).unwrap();
                app.handle(surface, req).await.status().as_u16()
            }
        };
        assert_eq!(status(Surface::Public, "/metrics").await, 404);
        assert_eq!(status(Surface::Operator, "/metrics").await, 200);
        assert_eq!(status(Surface::Public, "/healthz").await, 200);
        assert_eq!(status(Surface::Operator, "/healthz").await, 200);
        assert_eq!(status(Surface::Operator, "/products/1/related").await, 404);
        assert_eq!(status(Surface::Operator, "/api/data/1").await, 404);
        let req = Request::get("/metrics").body(()).unwrap();
        let body = app.handle(Surface::Public, req).await.into_body();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            body,
            HttpError::RouteNotFound.body(),
            "the same 404 as any unknown path"
        );
    }

    #[test]
    fn in_flight_slots_are_bounded_and_given_back() {
        let in_flight = AtomicUsize::new(0);
        let a = InFlightSlot::take(&in_flight, 2).unwrap();
        let b = InFlightSlot::take(&in_flight, 2).unwrap();
        assert!(
            InFlightSlot::take(&in_flight, 2).is_none(),
            "past the bound"
        );
        assert_eq!(
            in_flight.load(Relaxed),
            2,
            "a refused request holds nothing"
        );
        drop(a);
        let _c = InFlightSlot::take(&in_flight, 2).unwrap();
        drop(b);
        assert_eq!(in_flight.load(Relaxed), 1);
    }

    #[test]
    fn etag_matching() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(render::if_none_match(
            &HeaderValue::from_static("\"abc\""),
            &etag
        ));
        assert!(render::if_none_match(
            &HeaderValue::from_static("\"x\", W/\"abc\""),
            &etag
        ));
        assert!(render::if_none_match(&HeaderValue::from_static("*"), &etag));
        assert!(!render::if_none_match(
            &HeaderValue::from_static("\"abd\""),
            &etag
        ));
    }

    /// hyper moves each request's future a few times; the database path is boxed so that the
    /// future of a cache hit stays small (it was 23 KB before, 4% of a hit's CPU in memmove),
    /// and the part a miss adds is boxed once (it was 17 KB copied into a box per miss).
    #[tokio::test]
    async fn a_requests_future_is_small() {
        let app = app_without_database();
        let req = Request::get("/products/1/related").body(()).unwrap();
        let size = std::mem::size_of_val(&app.handle(Surface::Public, req));
        assert!(size <= 4096, "{size} bytes");
        // A miss boxes the replica set's part once; what is left is small.
        let key = CacheKey {
            shape: Shape::Related,
            product_id: 1,
            limit: 16,
        };
        let size = std::mem::size_of_val(&app.fetch(key));
        assert!(size <= 1024, "{size} bytes");
    }
}
