//! Accepting connections and shutting down: hyper-util's auto builder (HTTP/1.1 keep-alive and
//! h2c), TCP_NODELAY, the header-read timeout and head-size limits, graceful shutdown, and the
//! SIGTERM/SIGINT/SIGHUP wiring of [`serve`]. The configuration is validated here, once, before
//! anything starts ([`crate::config::Config::validate`]); the rest runs on [`Settings`].
//!
//! A server has two listeners ([`Listeners`]): the public one (`--listen`: the API, `/healthz`,
//! `/readyz`) and the operator one (`--admin-listen`, loopback by default: `/metrics`,
//! `/healthz`, `/readyz`), so that what only operators need is never served where the public
//! edge forwards requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::{Config, Settings};
use crate::counters::Counters;
use crate::error::ApiError;
use crate::http::{App, Surface};
use crate::replicas::ReplicaSet;

/// How often an h2c connection pings its peer, and how long it waits for the answer before
/// closing the connection.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets one server accepts on.
pub struct Listeners {
    /// The API, `/healthz` and `/readyz`; never `/metrics`.
    pub public: TcpListener,
    /// The operator endpoints: `/metrics`, `/healthz`, `/readyz`. `None` serves none.
    pub admin: Option<TcpListener>,
}

/// A public listener alone: no operator endpoints.
impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Listeners {
        Listeners {
            public,
            admin: None,
        }
    }
}

/// Serves on `listeners` (a [`TcpListener`] alone is the public one, without operator
/// endpoints) until `shutdown` completes, then finishes in-flight requests (within
/// `--shutdown-grace-ms`) and returns. The replica list is fixed (see [`run_with_reload`]).
/// A configuration that does not validate is refused before anything starts. `--listen` and
/// `--admin-listen` are not read: the listeners are the caller's.
pub async fn run(
    listeners: impl Into<Listeners>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    run_with_reload(listeners, config, shutdown, Arc::new(Notify::new())).await
}

/// [`run`], re-reading the replica list (flags plus `--replica-file`) whenever `reload` is
/// notified.
pub async fn run_with_reload(
    listeners: impl Into<Listeners>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Arc<Notify>,
) -> Result<(), ApiError> {
    let settings = config.validate()?;
    run_settings(listeners.into(), settings, shutdown, reload).await
}

/// One accepted connection from either listener, or a listener's accept error.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// [`run_with_reload`] with settings validated already.
pub async fn run_settings(
    listeners: Listeners,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Arc<Notify>,
) -> Result<(), ApiError> {
    let Listeners {
        public: listener,
        admin,
    } = listeners;
    let counters = Arc::new(Counters::default());
    let replicas = ReplicaSet::new(&settings, counters.clone())?;
    let app = Arc::new(App::new(&settings, replicas.clone(), counters.clone()));

    let reloader = {
        let replicas = replicas.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            loop {
                reload.notified().await;
                match replicas.reload() {
                    Ok(n) => {
                        counters
                            .reloads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(replicas = n, "replica list reloaded");
                    }
                    Err(e) => {
                        counters
                            .reload_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(error = %e, "replica list reload refused; keeping the old list");
                    }
                }
            }
        })
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers.get());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(settings.max_header_bytes).expect("validated to at most 1 MiB"),
        )
        .max_concurrent_streams(256)
        // h2 has no header-read timeout between requests: pings find peers that are gone.
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);

    let graceful = GracefulShutdown::new();
    let shutdown = shutdown;
    tokio::pin!(shutdown);
    let addr_of = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        addr = %addr_of(&listener),
        admin = %admin.as_ref().map_or_else(|| "off".to_string(), addr_of),
        replicas = replicas.snapshot().len(),
        "listening"
    );
    loop {
        let (accepted, surface) = tokio::select! {
            accepted = accept(Some(&listener)) => (accepted, Surface::Public),
            accepted = accept(admin.as_ref()) => (accepted, Surface::Operator),
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let first_request = Arc::new(Notify::new());
        let service = service_fn({
            let first_request = first_request.clone();
            move |req| {
                first_request.notify_one();
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(surface, req).await) }
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let first_request_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            // hyper's header-read timer starts with the first byte: the auto builder's wait
            // for bytes that tell HTTP/1 from h2c has none, so a client that connects and
            // stays silent would hold its connection until shutdown. Its first request head
            // must arrive within the header-read timeout of the accept.
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = first_request.notified() => conn.await,
                _ = tokio::time::sleep(first_request_timeout) => {
                    tracing::debug!("no request within the header-read timeout of connecting; closed");
                    return;
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting now; idle keep-alive connections close, busy ones finish their request.
    drop(listener);
    drop(admin);
    reloader.abort();
    tracing::info!("shutting down; finishing in-flight requests");
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period ended with requests still in flight");
    }
    Ok(())
}

/// Validates the configuration, sets up logging, binds `--listen` and `--admin-listen`, and
/// serves until SIGTERM or SIGINT; SIGHUP reloads the replica list. Nonsense configuration is an
/// error naming the flag.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_settings(config.validate()?).await
}

/// [`serve`] with settings validated already (the `api` binary validates before it builds its
/// runtime).
pub async fn serve_settings(settings: Settings) -> anyhow::Result<()> {
    init_tracing(settings.log_json);
    let bind = |addr: String, flag: &'static str| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|source| ApiError::Bind { addr, flag, source })
    };
    let listeners = Listeners {
        public: bind(settings.listen.clone(), "--listen").await?,
        admin: match &settings.admin_listen {
            Some(addr) => Some(bind(addr.clone(), "--admin-listen").await?),
            None => None,
        },
    };
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|source| ApiError::Io {
        context: "install the SIGTERM handler",
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| ApiError::Io {
        context: "install the SIGINT handler",
        source,
    })?;
    let mut hup = signal(SignalKind::hangup()).map_err(|source| ApiError::Io {
        context: "install the SIGHUP handler",
        source,
    })?;
    let reload = Arc::new(Notify::new());
    let reload_tx = reload.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload_tx.notify_one();
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    run_settings(listeners, settings, shutdown, reload).await?;
    Ok(())
}

/// Human-readable logs by default, JSON lines with `--log-json`; `RUST_LOG` filters (default
/// `info`). A second call (a process embedding the API twice) keeps the first subscriber.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
