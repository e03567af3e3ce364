//! A primary with streaming read replicas: creating it, finding it again from its state file,
//! stopping single nodes (to test failover), adding replicas, and tearing it all down.
//! Bringing an existing topology back up without losing its data is in `restart`.

mod faults;
mod restart;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use crate::postgres::{conf_string, socket_dir_ok, PgBinaries, ServerDir};
use crate::process::{free_port, port_is_free, random_secret, ServerUser};
use crate::secret::write_private;
use crate::{io_err, Result, StackError};

/// The database every part of the project uses.
pub const DATABASE: &str = "related";
/// The read-only role the API connects as.
pub const API_ROLE: &str = "related_api";
const STATE_FILE: &str = "stack.json";
/// The primary's superuser URL, written by [`Cluster::write_connection_files`].
pub const SUPERUSER_URL_FILE: &str = "superuser.url";
/// The API role's replica URLs in `api --replica-file` form.
pub const API_REPLICAS_FILE: &str = "api-replicas.list";
/// libpq's password file for every server and both roles (`PGPASSFILE`).
pub const PGPASS_FILE: &str = "pgpass";

/// Where [`Cluster::write_connection_files`] put the connection details (each file 0600).
#[derive(Debug, Clone)]
pub struct ConnectionFiles {
    /// The primary's superuser URL, one line.
    pub superuser_url: PathBuf,
    /// The API role's URL of every replica, one a line (`api --replica-file`).
    pub api_replicas: PathBuf,
    /// A libpq password file (`PGPASSFILE=<path> psql -h 127.0.0.1 -p <port> -U postgres`).
    pub pgpass: PathBuf,
}

/// Server settings for a read-heavy workload; the journey changes these per stage to model a
/// small or a large database host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PgSettings {
    pub shared_buffers_mb: u32,
    pub effective_cache_size_mb: u32,
    pub max_connections: u32,
    /// Any further `key = value` lines, written verbatim after the defaults.
    #[serde(default)]
    pub extra: Vec<(String, String)>,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            shared_buffers_mb: 256,
            effective_cache_size_mb: 4096,
            max_connections: 200,
            extra: Vec::new(),
        }
    }
}

impl PgSettings {
    fn lines(&self) -> Vec<(String, String)> {
        let mut lines: Vec<(String, String)> = [
            ("listen_addresses", "'127.0.0.1'".to_string()),
            ("max_connections", self.max_connections.to_string()),
            ("shared_buffers", format!("{}MB", self.shared_buffers_mb)),
            (
                "effective_cache_size",
                format!("{}MB", self.effective_cache_size_mb),
            ),
            ("work_mem", "16MB".into()),
            ("maintenance_work_mem", "512MB".into()),
            ("max_parallel_maintenance_workers", "4".into()),
            ("wal_level", "replica".into()),
            ("max_wal_senders", "16".into()),
            ("max_replication_slots", "16".into()),
            ("hot_standby", "on".into()),
            ("hot_standby_feedback", "on".into()),
            // Loads are resumable from the seeder's own ledger, so a lost last commit after a
            // crash costs a re-run of one chunk, not correctness.
            ("synchronous_commit", "off".into()),
            ("checkpoint_timeout", "30min".into()),
            ("max_wal_size", "8GB".into()),
            ("random_page_cost", "1.1".into()),
            // JIT compiles plans for microseconds-long lookups: pure overhead here.
            ("jit", "off".into()),
            ("log_min_duration_statement", "-1".into()),
            ("track_activity_query_size", "2048".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        lines.extend(self.extra.iter().cloned());
        lines
    }
}

/// The primary's node index: the first server a cluster creates, the replicas after it.
pub const PRIMARY: usize = 0;

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Holds the state file (and, where the server user can reach it, the data).
    pub dir: PathBuf,
    pub replicas: usize,
    pub settings: PgSettings,
    /// A fixed primary port; `None` picks a free one.
    pub primary_port: Option<u16>,
}

impl ClusterSpec {
    pub fn new(dir: impl Into<PathBuf>, replicas: usize) -> Self {
        Self {
            dir: dir.into(),
            replicas,
            settings: PgSettings::default(),
            primary_port: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Primary,
    Replica,
}

/// One server as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub role: NodeRole,
    pub port: u16,
}

/// What `cluster.json` keeps (mode 0600). No `Debug`: it holds the passwords.
#[derive(Clone, Serialize, Deserialize)]
struct ClusterState {
    data_root: PathBuf,
    superuser_password: String,
    api_password: String,
    settings: PgSettings,
    nodes: Vec<NodeState>,
}

/// A running primary and its replicas. Dropping it stops every server and removes the data,
/// unless [`Cluster::keep`] was called (`loadgen up` keeps it for a later `loadgen down`).
pub struct Cluster {
    dir: PathBuf,
    bins: PgBinaries,
    user: ServerUser,
    state: ClusterState,
    keep: bool,
}

impl Cluster {
    /// Build and start a primary and `spec.replicas` replicas, and wait until every replica has
    /// replayed the primary's WAL.
    pub async fn create(spec: ClusterSpec) -> Result<Cluster> {
        let bins = PgBinaries::find()?;
        let user = ServerUser::detect()?;
        clear_stale(&spec.dir)?;
        std::fs::create_dir_all(&spec.dir)
            .map_err(io_err(format!("create {}", spec.dir.display())))?;
        let dir = spec
            .dir
            .canonicalize()
            .map_err(io_err(format!("resolve {}", spec.dir.display())))?;
        let data_root = pick_data_root(&dir, &user)?;
        if data_root != dir {
            tracing::info!(
                "{} is not reachable by the postgres user; keeping server data in {}",
                dir.display(),
                data_root.display()
            );
        }
        let mut cluster = Cluster {
            dir,
            bins,
            user,
            state: ClusterState {
                data_root,
                superuser_password: random_secret(24),
                api_password: random_secret(24),
                settings: spec.settings.clone(),
                nodes: Vec::new(),
            },
            keep: false,
        };
        cluster.create_primary(spec.primary_port).await?;
        for _ in 0..spec.replicas {
            cluster.add_replica().await?;
        }
        cluster.save()?;
        Ok(cluster)
    }

    /// Find a cluster that an earlier `loadgen up` left running.
    pub fn open(dir: &Path) -> Result<Cluster> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|_| StackError::NotFound(dir.display().to_string()))?;
        let state: ClusterState = serde_json::from_str(&text)
            .map_err(|e| StackError::Other(format!("{} is damaged: {e}", path.display())))?;
        Ok(Cluster {
            dir: dir.to_path_buf(),
            bins: PgBinaries::find()?,
            user: ServerUser::detect()?,
            state,
            keep: true,
        })
    }

    /// Leave the servers running when this value is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn nodes(&self) -> &[NodeState] {
        &self.state.nodes
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// Indexes of the replicas in [`Cluster::nodes`].
    pub fn replica_indexes(&self) -> Vec<usize> {
        (0..self.state.nodes.len())
            .filter(|&i| self.state.nodes[i].role == NodeRole::Replica)
            .collect()
    }

    /// Superuser URL of the primary (for the seeder and for tests).
    pub fn primary_url(&self) -> String {
        self.superuser_url(PRIMARY)
    }

    /// Superuser URL of any node.
    pub fn superuser_url(&self, node: usize) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{DATABASE}",
            self.state.superuser_password, self.state.nodes[node].port
        )
    }

    /// URL of a node for the read-only API role.
    pub fn api_url(&self, node: usize) -> String {
        format!(
            "postgres://{API_ROLE}:{}@127.0.0.1:{}/{DATABASE}",
            self.state.api_password, self.state.nodes[node].port
        )
    }

    /// The API role's URLs for every replica, the list the API is started with.
    pub fn replica_api_urls(&self) -> Vec<String> {
        self.replica_indexes()
            .into_iter()
            .map(|i| self.api_url(i))
            .collect()
    }

    /// Where the servers' folders live: the topology's own folder, or a private one under the
    /// temp dir when the server user cannot reach it.
    pub fn data_root(&self) -> &Path {
        &self.state.data_root
    }

    /// The folder holding a node's data, log and Unix socket.
    pub fn server_folder(&self, node: usize) -> PathBuf {
        self.server_dir(node).node_dir
    }

    /// The postmaster PID of a node, if it runs.
    pub fn pid(&self, node: usize) -> Option<i32> {
        self.server_dir(node).pid()
    }

    /// A superuser connection to a node; the connection task runs on the current runtime.
    pub async fn connect(&self, node: usize) -> Result<Client> {
        connect(&self.superuser_url(node), &self.state.nodes[node].name).await
    }

    /// Fast-stop one server (the others keep running).
    pub fn stop_node(&self, node: usize) {
        self.server_dir(node).stop(Duration::from_secs(30));
    }

    /// Kill one server abruptly, as if its host died.
    pub fn kill_node(&self, node: usize) {
        self.server_dir(node).kill();
    }

    /// Start a stopped server again and wait until it accepts connections.
    pub fn start_node(&self, node: usize) -> Result<i32> {
        self.server_dir(node).start(&self.bins, &self.user)
    }

    /// Stream a new replica from the primary, start it, and wait until it has caught up.
    /// Returns its index in [`Cluster::nodes`].
    pub async fn add_replica(&mut self) -> Result<usize> {
        let number = self.state.nodes.len();
        let name = format!("replica{number}");
        let node = ServerDir {
            node_dir: self.state.data_root.join(&name),
        };
        node.basebackup(
            &self.bins,
            &self.user,
            self.state.nodes[0].port,
            &self.state.superuser_password,
            &name,
        )?;
        self.state.nodes.push(NodeState {
            name,
            role: NodeRole::Replica,
            port: 0,
        });
        self.start_new_node(number, None)?;
        self.save()?;
        self.wait_for_replicas(Duration::from_secs(300)).await?;
        Ok(number)
    }

    /// Wait until every running replica has replayed the primary's current WAL position, so
    /// that what was committed on the primary is visible on every replica.
    pub async fn wait_for_replicas(&self, timeout: Duration) -> Result<()> {
        let lsn = self.primary_lsn().await?;
        let deadline = Instant::now() + timeout;
        for node in self.replica_indexes() {
            if self.pid(node).is_none() {
                continue;
            }
            let client = self.connect(node).await?;
            if !self.replayed_on(&client, node, &lsn, deadline).await? {
                return Err(StackError::Timeout {
                    what: format!("{} to replay WAL up to {lsn}", self.state.nodes[node].name),
                    secs: timeout.as_secs(),
                });
            }
        }
        Ok(())
    }

    /// The primary's current WAL insert position, as text (`0/3000060`).
    async fn primary_lsn(&self) -> Result<String> {
        let primary = self.connect(0).await?;
        let row = bounded(
            "primary",
            "reading the WAL position",
            DATABASE_WAIT,
            primary.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]),
        )
        .await?;
        Ok(row.get(0))
    }

    /// Whether the replica behind `client` replays up to `lsn` before `deadline`.
    async fn replayed_on(
        &self,
        client: &Client,
        node: usize,
        lsn: &str,
        deadline: Instant,
    ) -> Result<bool> {
        loop {
            // A frozen replica does not answer: its wait ends at the deadline, not never.
            let left = deadline.saturating_duration_since(Instant::now());
            let asked = tokio::time::timeout(
                left.max(Duration::from_millis(100)),
                client.query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&lsn],
                ),
            )
            .await;
            let Ok(answer) = asked else {
                return Ok(false);
            };
            let caught_up: bool = answer
                .map_err(|e| db_err(&self.state.nodes[node].name, e))?
                .get(0);
            if caught_up {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// One line per server: name, role, port, pid or "stopped".
    pub fn status_lines(&self) -> Vec<String> {
        (0..self.state.nodes.len())
            .map(|i| {
                let n = &self.state.nodes[i];
                let state = match self.pid(i) {
                    Some(pid) => format!("running (pid {pid})"),
                    None => "stopped".to_string(),
                };
                format!(
                    "{:<10} {:<8} 127.0.0.1:{:<6} {state}",
                    n.name,
                    format!("{:?}", n.role).to_lowercase(),
                    n.port
                )
            })
            .collect()
    }

    /// Stop every server by PID and remove everything this cluster created.
    pub fn down(mut self) -> Result<()> {
        self.teardown();
        self.keep = true;
        Ok(())
    }

    fn teardown(&self) {
        let mut order = self.replica_indexes();
        order.push(0);
        for node in order {
            if node < self.state.nodes.len() {
                self.server_dir(node).stop(Duration::from_secs(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.state.data_root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn server_dir(&self, node: usize) -> ServerDir {
        ServerDir {
            node_dir: self.state.data_root.join(&self.state.nodes[node].name),
        }
    }

    fn node_lines(&self, node: usize) -> Result<Vec<(String, String)>> {
        let dir = self.server_dir(node);
        Ok(vec![
            ("port".into(), self.state.nodes[node].port.to_string()),
            (
                "unix_socket_directories".into(),
                conf_string(&dir.node_dir.display().to_string())?,
            ),
            ("unix_socket_permissions".into(), "0700".into()),
            (
                "cluster_name".into(),
                conf_string(&self.state.nodes[node].name)?,
            ),
        ])
    }

    /// Write the node's settings and start it, moving to a fresh port if another process took
    /// the one we picked in the meantime.
    fn start_new_node(&mut self, node: usize, fixed_port: Option<u16>) -> Result<()> {
        let dir = self.server_dir(node);
        if !socket_dir_ok(&dir.node_dir) {
            return Err(StackError::Other(format!(
                "{} is too long a path for a Unix socket; use a shorter --dir",
                dir.node_dir.display()
            )));
        }
        let mut last_err = None;
        for _ in 0..5 {
            let port = match fixed_port {
                Some(p) if !port_is_free(p) => return Err(StackError::PortInUse(p)),
                Some(p) => p,
                None => free_port()?,
            };
            self.state.nodes[node].port = port;
            let mut lines = self.state.settings.lines();
            lines.extend(self.node_lines(node)?);
            dir.append_conf(&lines)?;
            match dir.start(&self.bins, &self.user) {
                Ok(_) => return Ok(()),
                Err(e) if dir.log_mentions_port_in_use() && fixed_port.is_none() => {
                    last_err = Some(e);
                    dir.stop(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| StackError::Other("could not start server".into())))
    }

    async fn create_primary(&mut self, fixed_port: Option<u16>) -> Result<()> {
        let node = ServerDir {
            node_dir: self.state.data_root.join("primary"),
        };
        node.initdb(&self.bins, &self.user, &self.state.superuser_password)?;
        self.state.nodes.push(NodeState {
            name: "primary".into(),
            role: NodeRole::Primary,
            port: 0,
        });
        self.start_new_node(0, fixed_port)?;
        self.save()?;
        let url = format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.state.superuser_password, self.state.nodes[0].port
        );
        let admin = connect(&url, "primary").await?;
        // DDL takes no bind parameters; the password is our own alphanumeric secret.
        bounded(
            "primary",
            "CREATE DATABASE",
            DATABASE_WAIT,
            admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")),
        )
        .await?;
        let setup = format!(
            "CREATE ROLE {API_ROLE} LOGIN PASSWORD '{}' CONNECTION LIMIT 1000;
             ALTER ROLE {API_ROLE} SET default_transaction_read_only = on;
             ALTER ROLE {API_ROLE} SET statement_timeout = '5s';
             REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {DATABASE} TO {API_ROLE};",
            self.state.api_password
        );
        bounded(
            "primary",
            "creating the API's role",
            DATABASE_WAIT,
            admin.batch_execute(&setup),
        )
        .await?;
        let db = self.connect(0).await?;
        bounded(
            "primary",
            "granting the schema",
            DATABASE_WAIT,
            db.batch_execute(&format!(
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC;
                 GRANT USAGE ON SCHEMA public TO {API_ROLE};"
            )),
        )
        .await?;
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(&self.state).expect("state serialises");
        // The file holds passwords: its owner's alone from the moment it exists.
        write_private(&path, &text).map_err(io_err(format!("write {}", path.display())))
    }

    /// Writes the topology's connection details into its folder, each file for its owner only
    /// (0600), and returns where: what `loadgen status` points to instead of printing passwords.
    pub fn write_connection_files(&self) -> Result<ConnectionFiles> {
        let files = ConnectionFiles {
            superuser_url: self.dir.join(SUPERUSER_URL_FILE),
            api_replicas: self.dir.join(API_REPLICAS_FILE),
            pgpass: self.dir.join(PGPASS_FILE),
        };
        let write = |path: &Path, text: String| {
            write_private(path, &text).map_err(io_err(format!("write {}", path.display())))
        };
        write(&files.superuser_url, format!("{}\n", self.primary_url()))?;
        let mut list = String::from(
            "# The API role's URL of every replica, one a line: api --replica-file <this file>\n",
        );
        for url in self.replica_api_urls() {
            list.push_str(&url);
            list.push('\n');
        }
        write(&files.api_replicas, list)?;
        // libpq's password file (PGPASSFILE): host:port:database:user:password.
        let mut pgpass = String::new();
        for node in &self.state.nodes {
            for (role, password) in [
                ("postgres", &self.state.superuser_password),
                (API_ROLE, &self.state.api_password),
            ] {
                pgpass.push_str(&format!("127.0.0.1:{}:*:{role}:{password}\n", node.port));
            }
        }
        write(&files.pgpass, pgpass)?;
        Ok(files)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.keep {
            self.teardown();
        }
    }
}

/// How long connecting, or one statement, may take. A frozen server (SIGSTOP: its kernel still
/// accepts the connection and the bytes) would otherwise hold the caller for good, and
/// tokio-postgres's own connect timeout covers only the TCP handshake.
const DATABASE_WAIT: Duration = Duration::from_secs(30);

/// `work` on `node`, for at most `limit`; `what` names it in the timeout's error.
async fn bounded<T>(
    node: &str,
    what: &str,
    limit: Duration,
    work: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| StackError::Timeout {
            what: format!("{what} on {node}"),
            secs: limit.as_secs(),
        })?
        .map_err(|e| db_err(node, e))
}

async fn connect(url: &str, node: &str) -> Result<Client> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| db_err(node, e))?;
    config.connect_timeout(Duration::from_secs(10));
    let (client, connection) =
        bounded(node, "connecting", DATABASE_WAIT, config.connect(NoTls)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn db_err(node: &str, source: tokio_postgres::Error) -> StackError {
    StackError::Database {
        node: node.to_string(),
        source,
    }
}

/// A directory left by a crashed run: stop whatever of it still runs, then remove it. A
/// directory whose servers are all alive belongs to a running topology and is refused.
fn clear_stale(dir: &Path) -> Result<()> {
    if !dir.join(STATE_FILE).exists() {
        return Ok(());
    }
    let old = Cluster::open(dir)?;
    let running: Vec<i32> = (0..old.state.nodes.len())
        .filter_map(|i| old.pid(i))
        .collect();
    if running.len() == old.state.nodes.len() && !running.is_empty() {
        return Err(StackError::AlreadyRunning(
            dir.display().to_string(),
            running[0],
        ));
    }
    tracing::info!("cleaning up a stale topology in {}", dir.display());
    old.down()
}

/// Where server data can live: `dir` itself when the server user can reach it, otherwise a
/// folder under the system temp dir (root's home is closed to the postgres user).
fn pick_data_root(dir: &Path, user: &ServerUser) -> Result<PathBuf> {
    if user.switch_to.is_none() || reachable_by_others(dir) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", dir.display())))?;
        return Ok(dir.to_path_buf());
    }
    // A fresh folder with a random part (created at once, as mkdtemp does), not a fixed name:
    // another local user could create a fixed name first, or swap in a link between its
    // removal and its creation, and then own the folder root puts the servers' data in. The
    // state file records where it is.
    let prefix = format!(
        "related-stack-{:x}-",
        fnv1a(dir.as_os_str().as_encoded_bytes())
    );
    let root = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir()
        .map_err(io_err(format!(
            "create a folder in {}",
            std::env::temp_dir().display()
        )))?
        .keep();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", root.display())))?;
    Ok(root)
}

fn reachable_by_others(dir: &Path) -> bool {
    dir.ancestors().skip(1).all(|p| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable name per directory, nothing more.
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}
