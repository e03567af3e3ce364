//! The API's configuration: every knob as one `clap::Args` struct ([`Config`]), so that the `api`
//! binary and the load generator's own subcommand (which flattens it) expose the same flags and
//! environment variables; and [`Config::validate`], which checks it once at start into typed
//! [`Settings`] (durations, bounded sizes) or refuses it with a [`ConfigError`] naming the flag.
//! Nothing past start clamps a value: the rest of the crate reads only [`Settings`].

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the operator endpoints listen unless told otherwise: loopback, on the port
/// OpenTelemetry's Prometheus exporter uses by convention.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

/// How a pooled connection is checked when it is taken from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolCheck {
    /// Only look whether the connection's socket task has ended (free).
    Closed,
    /// bb8's classic `test_on_check_out`: a round trip to the server before every use.
    RoundTrip,
}

/// The API's configuration: every option is a flag and an `API_*` environment variable. No
/// `Debug`: it holds replica URLs with their password, and a `{:?}` would put them in a log.
///
/// ```compile_fail
/// fn show(config: &api::Config) -> String {
///     format!("{config:?}")
/// }
/// ```
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Address of the operator listener: `/metrics` (Prometheus), `/healthz` and `/readyz`.
    /// The public listener (--listen) does not serve `/metrics`. Loopback by default so that
    /// only this machine can scrape it; `off` serves no operator endpoints. Each instance on one
    /// machine needs its own (port 0 picks a free one; the address is logged at start).
    #[arg(long, env = "API_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: String,

    /// A read replica's libpq-style URL (repeat the flag, or comma-separate in the variable).
    /// A URL holds a password: pass it in API_REPLICAS or --replica-file, not on a command line
    /// that every local user can read (`ps`).
    #[arg(
        long = "replica",
        env = "API_REPLICAS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub replicas: Vec<String>,

    /// A file with one replica URL per line (blank lines and `#` comments skipped), read at
    /// start and re-read on SIGHUP; its URLs are added to the `--replica` ones.
    #[arg(long, env = "API_REPLICA_FILE")]
    pub replica_file: Option<PathBuf>,

    /// The primary's URL, used only while no replica is usable (off when unset). It holds a
    /// password: pass it in API_PRIMARY_FALLBACK or --primary-fallback-file, not on a command
    /// line.
    #[arg(long, env = "API_PRIMARY_FALLBACK", hide_env_values = true)]
    pub primary_fallback: Option<String>,

    /// A file holding the URL of --primary-fallback (blank lines and `#` comments skipped),
    /// read at start.
    #[arg(
        long,
        env = "API_PRIMARY_FALLBACK_FILE",
        conflicts_with = "primary_fallback"
    )]
    pub primary_fallback_file: Option<PathBuf>,

    /// Connections per replica pool. Clients beyond it wait for a connection (--pool-wait-ms);
    /// about two per database core served best in results/api.md (4 on a 2-core server beat 16).
    #[arg(long, env = "API_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,

    /// How long a request waits for a pooled connection before it gets a 503.
    #[arg(long, env = "API_POOL_WAIT_MS", default_value_t = 1000)]
    pub pool_wait_ms: u64,

    /// Most lookups one query may answer: when a pooled connection comes free and several
    /// requests wait for that replica, up to this many go out as one query over an array of
    /// ids. No request ever waits for company: a lone request goes at once. 1 (the default)
    /// turns batching off: one query per request. 16 served the most in results/api.md (+51 to
    /// +73% requests/s at saturation, the same p99 at half load), but on oversubscribed cores
    /// its p99 at saturation was 3 to 30 times the unbatched one, so it is opt-in.
    #[arg(long, env = "API_BATCH_MAX", default_value_t = 1)]
    pub batch_max: usize,

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

    /// How long a client may take to send its request headers (the first request's counted
    /// from the connection's accept), and how long a keep-alive connection may stay idle.
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

    /// Debug (test) builds only, absent from release builds: spend this many microseconds of
    /// CPU at the start of every request. The CI gate's own test uses it as a candidate that is
    /// known to be slower without a change to its code.
    #[cfg(debug_assertions)]
    #[arg(long, env = "API_DEBUG_SPIN_US", default_value_t = 0, hide = true)]
    pub debug_spin_us: u64,
}

/// A configuration value that makes no sense, named by its flag and its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {flag} ({env}) must be {expected}; got {got}")]
    OutOfRange {
        flag: &'static str,
        env: &'static str,
        expected: String,
        got: String,
    },
    #[error(
        "invalid configuration: --max-ban-ms (API_MAX_BAN_MS) must be at least --ban-ms \
         (API_BAN_MS, {ban_ms}); got {max_ban_ms}"
    )]
    BanOrder { ban_ms: u64, max_ban_ms: u64 },
    #[error("invalid configuration: {flag} ({env}) {path}: {reason}")]
    File {
        flag: &'static str,
        env: &'static str,
        path: String,
        reason: String,
    },
}

/// The URLs in a URL file's text (`--replica-file`, `--primary-fallback-file`): one per line,
/// trimmed, blank lines and `#` comments skipped.
pub fn url_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The one URL in the file behind `flag`.
fn url_in_file(path: &Path, flag: &'static str, env: &'static str) -> Result<String, ConfigError> {
    let error = |reason: String| ConfigError::File {
        flag,
        env,
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let url = url_lines(&text).next().map(str::to_string);
    url.ok_or_else(|| error("holds no URL".into()))
}

/// Bounds of the checked values. Timeouts and intervals stop at an hour: past that a value is a
/// typo (seconds given as milliseconds), and deadlines stay far from `Instant` overflow.
pub mod limits {
    use std::ops::RangeInclusive;

    /// Milliseconds of a timeout, an interval or a ban.
    pub const TIMEOUT_MS: RangeInclusive<u64> = 1..=3_600_000;
    /// The shutdown grace may be zero: stop at once.
    pub const SHUTDOWN_GRACE_MS: RangeInclusive<u64> = 0..=3_600_000;
    /// Health checks more often than this would be load, not checks.
    pub const HEALTH_INTERVAL_MS: RangeInclusive<u64> = 10..=3_600_000;
    /// Connections per replica pool (bb8 needs at least one).
    pub const POOL_SIZE: RangeInclusive<u32> = 1..=10_000;
    /// Lookups per batched query (1: no batching); an array of ids past this is no longer a
    /// short index lookup.
    pub const BATCH_MAX: RangeInclusive<usize> = 1..=1000;
    /// Requests served at once (tokio's semaphore holds at most `usize::MAX >> 3` permits).
    pub const MAX_CONCURRENT_REQUESTS: RangeInclusive<usize> = 1..=(usize::MAX >> 3);
    /// Request head bytes: hyper refuses a buffer under 8 KiB; 1 MiB of headers is no request.
    pub const MAX_HEADER_BYTES: RangeInclusive<usize> = 8192..=1 << 20;
    /// Headers in one request.
    pub const MAX_HEADERS: RangeInclusive<usize> = 1..=1024;
    /// Seconds a cached response lives (a year is plenty).
    pub const CACHE_TTL_SECS: RangeInclusive<u64> = 1..=365 * 24 * 3600;
    /// Runtime worker threads of the `api` binary.
    pub const WORKER_THREADS: RangeInclusive<usize> = 1..=1024;
}

/// The validated configuration: what the server runs with. Built by [`Config::validate`] (and
/// by nothing outside this crate: it is `non_exhaustive`). No `Debug`, as for [`Config`]:
///
/// ```compile_fail
/// fn show(settings: &api::Settings) -> String {
///     format!("{settings:?}")
/// }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    pub listen: String,
    /// The operator listener's address; `None` when `--admin-listen off`.
    pub admin_listen: Option<String>,
    /// Replica URLs from `--replica`, in order (the replica set adds the replica file's).
    pub replicas: Vec<String>,
    pub replica_file: Option<PathBuf>,
    pub primary_fallback: Option<String>,
    pub pool: PoolSettings,
    /// `None` when the cache is off.
    pub cache: Option<CacheSettings>,
    pub max_age_secs: u64,
    pub allowed_origins: Vec<String>,
    pub request_timeout: Duration,
    pub query_timeout: Duration,
    pub max_concurrent_requests: NonZeroUsize,
    pub header_read_timeout: Duration,
    /// At least 8192 (hyper's smallest buffer) and at most 1 MiB, so it also fits HTTP/2's u32.
    pub max_header_bytes: usize,
    pub max_headers: NonZeroUsize,
    /// First ban of a failing replica (at least 1 ms).
    pub ban: Duration,
    /// Longest ban (at least `ban`).
    pub max_ban: Duration,
    /// At least 10 ms.
    pub health_interval: Duration,
    pub max_replica_lag: Option<Duration>,
    pub shutdown_grace: Duration,
    pub log_json: bool,
    pub log_requests: bool,
    /// `--debug-spin-us` (debug builds only).
    #[cfg(debug_assertions)]
    pub debug_spin: Duration,
}

impl Settings {
    /// The longest one pooled connection's setup (connect, authenticate, prepare the
    /// statements) may take: as long as a request could still be waiting for it (its deadline,
    /// or the pool wait if that is longer). A slower setup serves no request that asked for it,
    /// and one that never ends (a server that accepts and then says nothing) would otherwise
    /// hold a pool slot for as long as the kernel keeps the connection. Preparing waits for
    /// locks on the tables as a query does, which is load, so this is not the connect timeout.
    pub fn connection_setup_timeout(&self) -> Duration {
        self.request_timeout.max(self.pool.wait)
    }
}

/// One replica pool's settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub size: NonZeroU32,
    /// At least 1 ms.
    pub wait: Duration,
    pub check: PoolCheck,
    /// Most lookups per query; 1 is one query per request.
    pub batch_max: NonZeroUsize,
}

/// The response cache's settings, present only when the cache is on.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub capacity: NonZeroU64,
    /// At least one second.
    pub ttl: Duration,
}

/// `value` if it lies in `range`, else the error naming `flag` and `env`.
fn in_range<T>(
    flag: &'static str,
    env: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + Copy + std::fmt::Display,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            flag,
            env,
            expected: format!("from {} to {}", range.start(), range.end()),
            got: value.to_string(),
        })
    }
}

fn millis(
    flag: &'static str,
    env: &'static str,
    value: u64,
    range: RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    in_range(flag, env, value, range).map(Duration::from_millis)
}

/// The `api` binary's `--worker-threads`, checked like the rest.
pub fn worker_threads(threads: Option<usize>) -> Result<Option<NonZeroUsize>, ConfigError> {
    threads
        .map(|n| {
            in_range(
                "--worker-threads",
                "API_WORKER_THREADS",
                n,
                limits::WORKER_THREADS,
            )
            .map(|n| NonZeroUsize::new(n).expect("the range starts at 1"))
        })
        .transpose()
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

    /// Checks every value once and turns it into what the server runs with; the first value
    /// out of its range is refused with a message that names the flag and its variable.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        use limits::*;
        let pool_size = in_range("--pool-size", "API_POOL_SIZE", self.pool_size, POOL_SIZE)?;
        let pool = PoolSettings {
            size: NonZeroU32::new(pool_size).expect("the range starts at 1"),
            wait: millis(
                "--pool-wait-ms",
                "API_POOL_WAIT_MS",
                self.pool_wait_ms,
                TIMEOUT_MS,
            )?,
            check: self.pool_check,
            batch_max: NonZeroUsize::new(in_range(
                "--batch-max",
                "API_BATCH_MAX",
                self.batch_max,
                BATCH_MAX,
            )?)
            .expect("the range starts at 1"),
        };
        let ttl = in_range(
            "--cache-ttl-secs",
            "API_CACHE_TTL_SECS",
            self.cache_ttl_secs,
            CACHE_TTL_SECS,
        )?;
        let cache = NonZeroU64::new(self.cache_capacity).map(|capacity| CacheSettings {
            capacity,
            ttl: Duration::from_secs(ttl),
        });
        let request_timeout = millis(
            "--request-timeout-ms",
            "API_REQUEST_TIMEOUT_MS",
            self.request_timeout_ms,
            TIMEOUT_MS,
        )?;
        let query_timeout = millis(
            "--query-timeout-ms",
            "API_QUERY_TIMEOUT_MS",
            self.query_timeout_ms,
            TIMEOUT_MS,
        )?;
        let max_concurrent_requests = in_range(
            "--max-concurrent-requests",
            "API_MAX_CONCURRENT_REQUESTS",
            self.max_concurrent_requests,
            MAX_CONCURRENT_REQUESTS,
        )?;
        let header_read_timeout = millis(
            "--header-read-timeout-ms",
            "API_HEADER_READ_TIMEOUT_MS",
            self.header_read_timeout_ms,
            TIMEOUT_MS,
        )?;
        let max_header_bytes = in_range(
            "--max-header-bytes",
            "API_MAX_HEADER_BYTES",
            self.max_header_bytes,
            MAX_HEADER_BYTES,
        )?;
        let max_headers = in_range(
            "--max-headers",
            "API_MAX_HEADERS",
            self.max_headers,
            MAX_HEADERS,
        )?;
        let ban = millis("--ban-ms", "API_BAN_MS", self.ban_ms, TIMEOUT_MS)?;
        let max_ban = millis(
            "--max-ban-ms",
            "API_MAX_BAN_MS",
            self.max_ban_ms,
            TIMEOUT_MS,
        )?;
        if max_ban < ban {
            return Err(ConfigError::BanOrder {
                ban_ms: self.ban_ms,
                max_ban_ms: self.max_ban_ms,
            });
        }
        let health_interval = millis(
            "--health-interval-ms",
            "API_HEALTH_INTERVAL_MS",
            self.health_interval_ms,
            HEALTH_INTERVAL_MS,
        )?;
        let shutdown_grace = millis(
            "--shutdown-grace-ms",
            "API_SHUTDOWN_GRACE_MS",
            self.shutdown_grace_ms,
            SHUTDOWN_GRACE_MS,
        )?;
        let admin_listen = match self.admin_listen.trim() {
            "" => {
                return Err(ConfigError::OutOfRange {
                    flag: "--admin-listen",
                    env: "API_ADMIN_LISTEN",
                    expected: "an address such as 127.0.0.1:9464, or off".into(),
                    got: "an empty value".into(),
                })
            }
            off if off.eq_ignore_ascii_case("off") => None,
            addr => Some(addr.to_string()),
        };
        Ok(Settings {
            listen: self.listen.clone(),
            admin_listen,
            replicas: self.replicas.clone(),
            replica_file: self.replica_file.clone(),
            primary_fallback: match &self.primary_fallback_file {
                Some(path) => Some(url_in_file(
                    path,
                    "--primary-fallback-file",
                    "API_PRIMARY_FALLBACK_FILE",
                )?),
                None => self.primary_fallback.clone(),
            },
            pool,
            cache,
            max_age_secs: self.max_age_secs,
            allowed_origins: self.allowed_origins.clone(),
            request_timeout,
            query_timeout,
            max_concurrent_requests: NonZeroUsize::new(max_concurrent_requests)
                .expect("the range starts at 1"),
            header_read_timeout,
            max_header_bytes,
            max_headers: NonZeroUsize::new(max_headers).expect("the range starts at 1"),
            ban,
            max_ban,
            health_interval,
            max_replica_lag: self.max_replica_lag_ms.map(Duration::from_millis),
            shutdown_grace,
            log_json: self.log_json,
            log_requests: self.log_requests,
            #[cfg(debug_assertions)]
            debug_spin: Duration::from_micros(self.debug_spin_us.min(1_000_000)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::with_replicas(vec!["postgres://u@127.0.0.1:5432/related".into()])
    }

    /// Why `config` is refused (`Settings` has no `Debug`, so no `unwrap_err`).
    fn refusal(config: &Config) -> String {
        config.validate().err().expect("refused").to_string()
    }

    /// The flag named by a refusal.
    fn refused_flag(config: &Config) -> &'static str {
        match config.validate() {
            Err(ConfigError::OutOfRange { flag, .. }) => flag,
            Err(ConfigError::BanOrder { .. }) => "--max-ban-ms",
            Err(ConfigError::File { flag, .. }) => flag,
            Ok(_) => panic!("a nonsense configuration was accepted"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        let s = config().validate().expect("defaults validate");
        assert_eq!(s.pool.size.get(), 16);
        assert_eq!(s.pool.wait, Duration::from_millis(1000));
        assert_eq!(s.pool.batch_max.get(), 1);
        assert!(s.cache.is_none(), "the cache is off by default");
        assert_eq!(s.request_timeout, Duration::from_millis(2000));
        assert_eq!(s.query_timeout, Duration::from_millis(1000));
        assert_eq!(s.ban, Duration::from_millis(1000));
        assert_eq!(s.max_ban, Duration::from_millis(30000));
        assert_eq!(s.health_interval, Duration::from_millis(500));
        assert_eq!(s.max_replica_lag, None);
        assert_eq!(s.max_header_bytes, 16384);
        assert_eq!(s.max_headers.get(), 64);
        assert_eq!(s.admin_listen.as_deref(), Some("127.0.0.1:9464"));
    }

    #[test]
    fn the_operator_listener_can_be_moved_or_turned_off() {
        let mut c = config();
        c.admin_listen = "127.0.0.1:0".into();
        assert_eq!(
            c.validate().unwrap().admin_listen.as_deref(),
            Some("127.0.0.1:0")
        );
        c.admin_listen = "off".into();
        assert_eq!(c.validate().unwrap().admin_listen, None);
        c.admin_listen = "OFF".into();
        assert_eq!(c.validate().unwrap().admin_listen, None);
    }

    /// The fallback's URL may come from a file, which keeps its password off the command
    /// line; an unreadable or empty file is a configuration error naming the flag.
    #[test]
    fn the_primary_fallback_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("primary.url");
        std::fs::write(
            &file,
            "# the primary\n\n  postgres://u:p@127.0.0.1:5432/related  \n",
        )
        .unwrap();
        let mut c = Config::with_replicas(vec!["postgres://u:p@127.0.0.1:1/related".into()]);
        c.primary_fallback_file = Some(file.clone());
        assert_eq!(
            c.validate().unwrap().primary_fallback.as_deref(),
            Some("postgres://u:p@127.0.0.1:5432/related")
        );
        std::fs::write(&file, "\n# none\n").unwrap();
        let err = refusal(&c);
        assert!(
            err.contains("--primary-fallback-file") && err.contains("holds no URL"),
            "{err}"
        );
        c.primary_fallback_file = Some(dir.path().join("missing"));
        let err = refusal(&c);
        assert!(err.contains("--primary-fallback-file"), "{err}");
    }

    /// `--help` shows where a replica URL comes from, never the URL (it holds a password).
    #[test]
    fn help_hides_the_urls_from_the_environment() {
        use clap::Args;
        let command = Config::augment_args(clap::Command::new("api"));
        for name in ["replicas", "primary_fallback"] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == name)
                .expect("the argument exists");
            assert!(arg.is_hide_env_values_set(), "{name} shows its value");
        }
    }

    #[test]
    fn a_cache_capacity_turns_the_cache_on() {
        let mut c = config();
        c.cache_capacity = 1000;
        c.cache_ttl_secs = 60;
        let cache = c.validate().unwrap().cache.expect("cache on");
        assert_eq!(cache.capacity.get(), 1000);
        assert_eq!(cache.ttl, Duration::from_secs(60));
    }

    /// Puts one nonsense value into a configuration.
    type Breaker = fn(&mut Config);

    /// Each nonsense value, with the flag its refusal must name.
    fn nonsense() -> Vec<(&'static str, Breaker)> {
        vec![
            ("--pool-size", |c| c.pool_size = 0),
            ("--pool-size", |c| c.pool_size = 100_000),
            ("--pool-wait-ms", |c| c.pool_wait_ms = 0),
            ("--batch-max", |c| c.batch_max = 0),
            ("--batch-max", |c| c.batch_max = 1001),
            ("--cache-ttl-secs", |c| c.cache_ttl_secs = 0),
            ("--request-timeout-ms", |c| c.request_timeout_ms = 0),
            ("--request-timeout-ms", |c| c.request_timeout_ms = u64::MAX),
            ("--query-timeout-ms", |c| c.query_timeout_ms = 0),
            ("--max-concurrent-requests", |c| {
                c.max_concurrent_requests = 0
            }),
            ("--max-concurrent-requests", |c| {
                c.max_concurrent_requests = usize::MAX
            }),
            ("--header-read-timeout-ms", |c| c.header_read_timeout_ms = 0),
            ("--max-header-bytes", |c| c.max_header_bytes = 100),
            ("--max-header-bytes", |c| c.max_header_bytes = usize::MAX),
            ("--max-headers", |c| c.max_headers = 0),
            ("--ban-ms", |c| c.ban_ms = 0),
            ("--max-ban-ms", |c| c.max_ban_ms = 0),
            ("--max-ban-ms", |c| {
                c.ban_ms = 1000;
                c.max_ban_ms = 500;
            }),
            ("--health-interval-ms", |c| c.health_interval_ms = 0),
            ("--health-interval-ms", |c| c.health_interval_ms = 5),
            ("--shutdown-grace-ms", |c| c.shutdown_grace_ms = u64::MAX),
            ("--admin-listen", |c| c.admin_listen = " ".into()),
        ]
    }

    #[test]
    fn nonsense_is_refused_with_the_flag_named() {
        for (flag, break_it) in nonsense() {
            let mut c = config();
            break_it(&mut c);
            assert_eq!(
                refused_flag(&c),
                flag,
                "the configuration broken for {flag}"
            );
        }
    }

    #[test]
    fn a_refusal_reads_clearly() {
        let mut c = config();
        c.pool_size = 0;
        assert_eq!(
            refusal(&c),
            "invalid configuration: --pool-size (API_POOL_SIZE) must be from 1 to 10000; got 0"
        );
        let mut c = config();
        c.max_ban_ms = 10;
        assert_eq!(
            refusal(&c),
            "invalid configuration: --max-ban-ms (API_MAX_BAN_MS) must be at least --ban-ms \
             (API_BAN_MS, 1000); got 10"
        );
    }

    #[test]
    fn edges_of_the_ranges_are_accepted() {
        let mut c = config();
        c.pool_size = 1;
        c.pool_wait_ms = 1;
        c.batch_max = 1;
        c.max_header_bytes = 8192;
        c.max_headers = 1;
        c.ban_ms = 5;
        c.max_ban_ms = 5;
        c.health_interval_ms = 10;
        c.shutdown_grace_ms = 0;
        c.max_concurrent_requests = 1;
        c.max_replica_lag_ms = Some(0);
        let s = c.validate().expect("edges validate");
        assert_eq!(s.ban, s.max_ban);
        assert_eq!(s.shutdown_grace, Duration::ZERO);
        assert_eq!(s.max_replica_lag, Some(Duration::ZERO));
    }

    #[test]
    fn worker_threads_must_be_positive() {
        assert_eq!(worker_threads(None), Ok(None));
        assert_eq!(worker_threads(Some(2)).unwrap().unwrap().get(), 2);
        assert!(matches!(
            worker_threads(Some(0)),
            Err(ConfigError::OutOfRange {
                flag: "--worker-threads",
                ..
            })
        ));
    }

    /// Every flag and variable a refusal names is one the command line really has.
    #[test]
    fn refusals_name_real_flags_and_variables() {
        use clap::Args;
        let command = Config::augment_args(clap::Command::new("api"));
        let known: Vec<(String, String)> = command
            .get_arguments()
            .filter_map(|a| {
                Some((
                    format!("--{}", a.get_long()?),
                    a.get_env()?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        for (_, break_it) in nonsense() {
            let mut c = config();
            break_it(&mut c);
            if let Err(ConfigError::OutOfRange { flag, env, .. }) = c.validate() {
                assert!(
                    known.contains(&(flag.to_string(), env.to_string())),
                    "{flag} ({env}) is not a flag of the command line"
                );
            }
        }
    }
}
