//! The floor for a cache hit: a bare hyper server that answers every request with the same
//! bytes and headers as one of the API's cached responses, doing nothing else (no routing,
//! no parsing, no counters, no cache lookup). `scripts/bench-floor` runs it beside the API on
//! the same runtime settings (one worker per core, one malloc arena) so that the difference is
//! what the API's own request path costs.
//!
//! ```text
//! cargo build --release -p api --example floor
//! target/release/examples/floor --listen 127.0.0.1:18090 --body-file body.json --etag '"abc"'
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

#[derive(Parser)]
#[command(
    name = "floor",
    about = "A bare hyper server returning one fixed response"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "FLOOR_LISTEN", default_value = "127.0.0.1:18090")]
    listen: String,
    /// The body every request gets (a response saved from the API).
    #[arg(long, env = "FLOOR_BODY_FILE")]
    body_file: std::path::PathBuf,
    /// The ETag sent with it (the API's, so the response has the same size).
    #[arg(long, env = "FLOOR_ETAG", default_value = "\"0000000000000000\"")]
    etag: String,
    /// The Cache-Control sent with it.
    #[arg(
        long,
        env = "FLOOR_CACHE_CONTROL",
        default_value = "public, max-age=60"
    )]
    cache_control: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body = Bytes::from(std::fs::read(&cli.body_file)?);
    let etag = HeaderValue::from_str(&cli.etag)?;
    let cache_control = HeaderValue::from_str(&cli.cache_control)?;
    api::alloc::one_malloc_arena();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cli.listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (body, etag, cache_control) = (body.clone(), etag.clone(), cache_control.clone());
            let service = service_fn(move |_req| {
                let mut r = Response::new(Full::new(body.clone()));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(header::ETAG, etag.clone());
                h.insert(header::CACHE_CONTROL, cache_control.clone());
                // The API's request id header, at its usual length.
                h.insert(X_REQUEST_ID, HeaderValue::from_static("5f3a9c1e-1b2c3d"));
                async move { Ok::<_, Infallible>(r) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
