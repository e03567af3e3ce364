//! Every knob of the API as one `clap::Args` struct, so that the `api` binary and the load
//! generator's own subcommand (which flattens it) expose the same flags and environment variables.

use std::path::PathBuf;
use std::time::Duration;

/// How a pooled connection is checked when it is taken from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolCheck {
    /// Only look whether the connection's socket task has ended (free).
    Closed,
    /// bb8's classic `test_on_check_out`: a round trip to the server before every use.
    RoundTrip,
}

/// The API's configuration: every option is a flag and an `API_*` environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// A read replica's libpq-style URL (repeat the flag, or comma-separate in the variable).
    #[arg(long = "replica", env = "API_REPLICAS", value_delimiter = ',')]
    pub replicas: Vec<String>,

    /// A file with one replica URL per line (blank lines and `#` comments skipped), read at
    /// start and re-read on SIGHUP; its URLs are added to the `--replica` ones.
    #[arg(long, env = "API_REPLICA_FILE")]
    pub replica_file: Option<PathBuf>,

    /// The primary's URL, used only while no replica is usable (off when unset).
    #[arg(long, env = "API_PRIMARY_FALLBACK")]
    pub primary_fallback: Option<String>,

    /// Connections per replica pool. Clients beyond it wait for a connection (--pool-wait-ms);
    /// about two per database core served best in results/api.md (4 on a 2-core server beat 16).
    #[arg(long, env = "API_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,

    /// How long a request waits for a pooled connection before it gets a 503.
    #[arg(long, env = "API_POOL_WAIT_MS", default_value_t = 1000)]
    pub pool_wait_ms: u64,

    /// How a connection is checked on checkout: `closed` (free) or `round-trip` (one query).
    #[arg(long, env = "API_POOL_CHECK", value_enum, default_value_t = PoolCheck::Closed)]
    pub pool_check: PoolCheck,

    /// Cached rendered responses (0 turns the cache off).
    #[arg(long, env = "API_CACHE_CAPACITY", default_value_t = 0)]
    pub cache_capacity: u64,

    /// How long a cached response lives.
    #[arg(long, env = "API_CACHE_TTL_SECS", default_value_t = 30)]
    pub cache_ttl_secs: u64,

    /// `Cache-Control: public, max-age=` on successful responses.
    #[arg(long, env = "API_MAX_AGE_SECS", default_value_t = 60)]
    pub max_age_secs: u64,

    /// Origins allowed by CORS, comma-separated; `*` allows any.
    #[arg(
        long,
        env = "API_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_origins: Vec<String>,

    /// Deadline for one request, queueing, retries and query included (504 past it).
    #[arg(long, env = "API_REQUEST_TIMEOUT_MS", default_value_t = 2000)]
    pub request_timeout_ms: u64,

    /// Deadline for one query attempt on one replica; past it the replica is banned and the
    /// request retried elsewhere if the request deadline allows.
    #[arg(long, env = "API_QUERY_TIMEOUT_MS", default_value_t = 1000)]
    pub query_timeout_ms: u64,

    /// Requests served at once; more get an immediate 503 with Retry-After.
    #[arg(long, env = "API_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// How long a client may take to send its request headers.
    #[arg(long, env = "API_HEADER_READ_TIMEOUT_MS", default_value_t = 5000)]
    pub header_read_timeout_ms: u64,

    /// Largest request head (request line and headers) in bytes; larger gets 431 (minimum 8192).
    #[arg(long, env = "API_MAX_HEADER_BYTES", default_value_t = 16384)]
    pub max_header_bytes: usize,

    /// Most headers in one request; more gets 431.
    #[arg(long, env = "API_MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,

    /// First ban of a failing replica; doubles on each consecutive failure.
    #[arg(long, env = "API_BAN_MS", default_value_t = 1000)]
    pub ban_ms: u64,

    /// Longest ban.
    #[arg(long, env = "API_MAX_BAN_MS", default_value_t = 30000)]
    pub max_ban_ms: u64,

    /// Interval of the background health check of each replica.
    #[arg(long, env = "API_HEALTH_INTERVAL_MS", default_value_t = 500)]
    pub health_interval_ms: u64,

    /// Skip a replica whose replay lag is over this many milliseconds (off when unset). The lag
    /// is how long the replica has held received WAL it has not replayed, as the health checks
    /// see it (to within one --health-interval-ms). When every replica lags, requests go to
    /// --primary-fallback if set, else to the freshest replica.
    #[arg(long, env = "API_MAX_REPLICA_LAG_MS")]
    pub max_replica_lag_ms: Option<u64>,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "API_SHUTDOWN_GRACE_MS", default_value_t = 10000)]
    pub shutdown_grace_ms: u64,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "API_LOG_JSON")]
    pub log_json: bool,

    /// Log one line per request (by default only errors are logged).
    #[arg(long, env = "API_LOG_REQUESTS")]
    pub log_requests: bool,
}

impl Config {
    /// A configuration with every default and the given replicas (for tests and embedding).
    pub fn with_replicas(replicas: Vec<String>) -> Config {
        use clap::{Args, FromArgMatches};
        let command = Config::augment_args(clap::Command::new("api").no_binary_name(true));
        // Parse an empty command line without reading API_* variables from this process's
        // environment, so that a test run is not changed by its shell.
        let matches = command
            .mut_args(|a| a.env(None::<&str>))
            .try_get_matches_from(Vec::<String>::new())
            .expect("defaults parse");
        let mut config = Config::from_arg_matches(&matches).expect("defaults parse");
        config.replicas = replicas;
        config
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }
    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.pool_wait_ms)
    }
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The replica URLs from the flags and the replica file, deduplicated, in order.
    pub fn replica_urls(&self) -> Result<Vec<String>, crate::ApiError> {
        let mut urls: Vec<String> = self
            .replicas
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if let Some(path) = &self.replica_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| crate::ApiError::ReplicaFile {
                    path: path.display().to_string(),
                    source,
                })?;
            urls.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        let mut seen = std::collections::HashSet::new();
        urls.retain(|u| seen.insert(u.clone()));
        Ok(urls)
    }
}
