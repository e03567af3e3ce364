//! One stage's serving topology: API instances (as child processes of this binary, each with an
//! optional CPU/memory budget), nginx in front of them or not, and CPU readings of every
//! component so that the stage can name its bottleneck.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
pub use stack::cgroup::machine_busy_cpu;
use stack::cgroup::{Budget, ControlGroup};
use stack::nginx::{Nginx, NginxSettings};
use stack::process::{free_port, stop_pid};

/// How API instances are started. No `Debug`: the replica URLs hold a password.
///
/// ```compile_fail
/// fn show(launch: &loadgen::topology::ApiLaunch) -> String {
///     format!("{launch:?}")
/// }
/// ```
#[derive(Clone)]
pub struct ApiLaunch {
    /// The program that serves the API: this binary, run as `loadgen api`.
    pub program: PathBuf,
    /// Passed in the instances' environment, never as arguments (they hold a password).
    pub replica_urls: Vec<String>,
    pub cache_capacity: u64,
    pub pool_size: u32,
    /// Further `api` flags; no secrets here: arguments are readable by every local user.
    pub extra_args: Vec<String>,
}

/// One API instance process.
pub struct ApiInstance {
    pub addr: SocketAddr,
    /// Its operator listener (`/metrics`, `/healthz`, `/readyz`), on loopback.
    pub admin_addr: SocketAddr,
    child: Child,
}

impl ApiInstance {
    /// Start an instance and wait until `/readyz` answers 200. The replica URLs hold the API
    /// role's password, so they go in the child's environment (`API_REPLICAS`, readable by this
    /// user and root only), never on its command line, which every local user can read.
    pub async fn start(launch: &ApiLaunch, log: &Path) -> anyhow::Result<ApiInstance> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // Several instances share the machine: each gets its own operator port.
        let admin_port = loop {
            let p = free_port()?;
            if p != port {
                break p;
            }
        };
        let admin_addr: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        ApiInstance::start_at(launch, log, addr, admin_addr).await
    }

    /// [`ApiInstance::start`] on given addresses: the fault drill restarts a killed instance
    /// where nginx expects it.
    pub async fn start_at(
        launch: &ApiLaunch,
        log: &Path,
        addr: SocketAddr,
        admin_addr: SocketAddr,
    ) -> anyhow::Result<ApiInstance> {
        let log_file = std::fs::File::create(log)?;
        let mut cmd = Command::new(&launch.program);
        cmd.arg("api")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin_addr.to_string())
            .arg("--pool-size")
            .arg(launch.pool_size.to_string())
            .arg("--cache-capacity")
            .arg(launch.cache_capacity.to_string());
        cmd.args(&launch.extra_args)
            .env("API_REPLICAS", launch.replica_urls.join(","))
            // The replicas are these and no others from this process's environment.
            .env_remove("API_REPLICA_FILE")
            .env_remove("API_PRIMARY_FALLBACK")
            .env_remove("API_PRIMARY_FALLBACK_FILE")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd.spawn()?;
        let mut instance = ApiInstance {
            addr,
            admin_addr,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .get(format!("http://{addr}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return Ok(instance);
            }
            if let Ok(Some(status)) = instance.child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                anyhow::bail!(
                    "API instance exited ({status}): {}",
                    stack::redact_url(text.trim())
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "API instance on {addr} not ready after 30s (log: {})",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM (graceful), SIGKILL if it lingers.
    pub fn stop(&mut self) {
        stop_pid(self.pid(), Signal::SIGTERM, Duration::from_secs(10));
        let _ = self.child.wait();
    }
}

impl Drop for ApiInstance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a component runs under an enforced budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetState {
    pub budget: Budget,
    /// `None` when enforced; otherwise why not ("unbudgeted").
    pub unbudgeted_reason: Option<String>,
}

impl BudgetState {
    pub fn enforced(&self) -> bool {
        self.unbudgeted_reason.is_none()
    }
}

/// A process tree in an optional control group.
pub struct Budgeted {
    pub group: Option<ControlGroup>,
    pub state: BudgetState,
}

impl Budgeted {
    /// Put `pid`'s tree under `budget`; where that is impossible, record why and go on.
    pub fn apply(name: &str, pid: i32, budget: Budget) -> Budgeted {
        if budget.cpus.is_none() && budget.memory_mb.is_none() {
            return Budgeted {
                group: None,
                state: BudgetState {
                    budget,
                    unbudgeted_reason: None,
                },
            };
        }
        let result = ControlGroup::create(name, &budget).and_then(|g| g.add_tree(pid).map(|_| g));
        match result {
            Ok(group) => Budgeted {
                group: Some(group),
                state: BudgetState {
                    budget,
                    unbudgeted_reason: None,
                },
            },
            Err(reason) => Budgeted {
                group: None,
                state: BudgetState {
                    budget,
                    unbudgeted_reason: Some(reason),
                },
            },
        }
    }

    /// Change the budget of an existing group (or try to create one).
    pub fn change(&mut self, name: &str, pid: i32, budget: Budget) {
        match &self.group {
            Some(group) => {
                if let Err(reason) = group.set_budget(&budget) {
                    self.state.unbudgeted_reason = Some(reason);
                }
                self.state.budget = budget;
            }
            None => *self = Budgeted::apply(name, pid, budget),
        }
    }
}

/// The API tier of a stage: instances, their budgets, and nginx if any.
pub struct ApiTier {
    pub instances: Vec<ApiInstance>,
    pub budgets: Vec<Budgeted>,
    pub nginx: Option<Nginx>,
}

impl ApiTier {
    pub async fn start(
        launch: &ApiLaunch,
        count: usize,
        budget: Budget,
        nginx: Option<NginxSettings>,
        dir: &Path,
    ) -> anyhow::Result<ApiTier> {
        std::fs::create_dir_all(dir)?;
        let mut instances = Vec::new();
        let mut budgets = Vec::new();
        for i in 0..count {
            let instance = ApiInstance::start(launch, &dir.join(format!("api-{i}.log"))).await?;
            budgets.push(Budgeted::apply(&format!("api{i}"), instance.pid(), budget));
            instances.push(instance);
        }
        let proxy = match &nginx {
            Some(settings) => {
                let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
                Some(Nginx::start(settings, &dir.join("nginx"), &addrs, None)?)
            }
            None => None,
        };
        Ok(ApiTier {
            instances,
            budgets,
            nginx: proxy,
        })
    }

    /// Where clients send requests.
    pub fn entry_url(&self) -> String {
        match &self.nginx {
            Some(n) => n.url(),
            None => format!("http://{}", self.instances[0].addr),
        }
    }
}

/// CPU time of this process alone (the load generator), without its child processes.
pub fn own_cpu() -> Duration {
    stack::cgroup::process_cpu(std::process::id() as i32)
}
