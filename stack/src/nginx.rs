//! nginx in front of N API instances: renders `nginx/nginx.conf.template` (tuned, or the story's
//! untuned form), runs the machine's nginx on its own port and directory, and reads its error
//! log for the two errors of the story.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::process::{free_port, stop_pid};
use crate::{io_err, Result, StackError};

const TEMPLATE: &str = include_str!("../../nginx/nginx.conf.template");

/// How nginx is configured: the story's defaults or sized for the load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NginxSettings {
    /// `false` reproduces the story: one worker, few connections, a low open-files limit and
    /// no upstream keep-alive.
    pub tuned: bool,
    /// Worker processes; `None` means `auto` (one per core).
    pub worker_processes: Option<usize>,
    pub worker_connections: usize,
    pub worker_rlimit_nofile: usize,
    pub upstream_keepalive: usize,
    /// Per-client limits; `None` for none (the story's nginx had none).
    #[serde(default)]
    pub client_limits: Option<ClientLimits>,
}

/// What one client address may use of the edge: requests per second with a burst on top, and
/// open connections (a slow client holds one each). Addresses in `exempt` are not limited: the
/// load generator's own runs come from loopback and must measure the servers, not the limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientLimits {
    pub requests_per_second: u32,
    pub burst: u32,
    pub connections: u32,
    /// CIDR blocks (nginx `geo` syntax) left unlimited.
    pub exempt: Vec<String>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            requests_per_second: 100,
            burst: 200,
            connections: 64,
            exempt: vec!["127.0.0.0/8".into()],
        }
    }
}

impl ClientLimits {
    fn zones(&self) -> String {
        let exempt: String = self
            .exempt
            .iter()
            .map(|net| format!("        {net} 1;\n"))
            .collect();
        format!(
            "    geo $client_limit_exempt {{\n        default 0;\n{exempt}    }}\n\
             \x20   map $client_limit_exempt $client_limit_key {{\n        1 \"\";\n        default $binary_remote_addr;\n    }}\n\
             \x20   limit_req_zone $client_limit_key zone=per_client:10m rate={}r/s;\n\
             \x20   limit_conn_zone $client_limit_key zone=client_conns:10m;\n\
             \x20   limit_req_status 429;\n\
             \x20   limit_conn_status 429;",
            self.requests_per_second
        )
    }

    fn location(&self) -> String {
        format!(
            "            limit_req zone=per_client burst={} nodelay;\n            limit_conn client_conns {};",
            self.burst, self.connections
        )
    }
}

impl NginxSettings {
    pub fn tuned() -> Self {
        Self {
            tuned: true,
            worker_processes: None,
            worker_connections: 16384,
            worker_rlimit_nofile: 65536,
            upstream_keepalive: 256,
            client_limits: Some(ClientLimits::default()),
        }
    }

    /// The story's nginx: defaults that break under a couple of hundred users.
    pub fn untuned() -> Self {
        Self {
            tuned: false,
            worker_processes: Some(1),
            worker_connections: 128,
            worker_rlimit_nofile: 128,
            upstream_keepalive: 0,
            client_limits: None,
        }
    }
}

/// Render the configuration for these upstream instances.
pub fn render(settings: &NginxSettings, port: u16, dir: &Path, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=3 fail_timeout=2s;\n"))
        .collect();
    let (keepalive, http_version, connection) = if settings.upstream_keepalive > 0 {
        (
            format!("keepalive {};", settings.upstream_keepalive),
            "1.1",
            "\"\"",
        )
    } else {
        (String::new(), "1.0", "close")
    };
    let workers = settings
        .worker_processes
        .map(|n| n.to_string())
        .unwrap_or_else(|| "auto".into());
    let access_log = if settings.tuned {
        "off".to_string()
    } else {
        format!("{}/access.log combined buffer=64k flush=1s", dir.display())
    };
    TEMPLATE
        .replace("{{worker_processes}}", &workers)
        .replace(
            "{{worker_rlimit_nofile}}",
            &settings.worker_rlimit_nofile.to_string(),
        )
        .replace(
            "{{worker_connections}}",
            &settings.worker_connections.to_string(),
        )
        .replace("{{access_log}}", &access_log)
        .replace("{{upstream_servers}}", servers.trim_end_matches('\n'))
        .replace("keepalive {{upstream_keepalive}};", &keepalive)
        .replace(
            "proxy_http_version 1.1;",
            &format!("proxy_http_version {http_version};"),
        )
        .replace(
            "proxy_set_header Connection \"\";",
            &format!("proxy_set_header Connection {connection};"),
        )
        .replace(
            "{{next_upstream_tries}}",
            &upstreams.len().clamp(1, 3).to_string(),
        )
        .replace(
            "{{rate_limit_zones}}",
            &settings
                .client_limits
                .as_ref()
                .map(ClientLimits::zones)
                .unwrap_or_default(),
        )
        .replace(
            "{{rate_limit}}",
            &settings
                .client_limits
                .as_ref()
                .map(ClientLimits::location)
                .unwrap_or_default(),
        )
        .replace("{{port}}", &port.to_string())
        .replace("{{dir}}", &dir.display().to_string())
}

/// The machine's nginx binary: `NGINX_BIN`, or `nginx` on PATH or in /usr/sbin.
pub fn find_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("NGINX_BIN") {
        return Ok(path.into());
    }
    let path_dirs = std::env::var("PATH").unwrap_or_default();
    let found = path_dirs
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/bin"])
        .map(|d| Path::new(d).join("nginx"))
        .find(|p| p.is_file());
    found.ok_or(StackError::NoNginx)
}

/// Counts of the story's two nginx errors found in the error log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NginxErrors {
    pub too_many_open_files: usize,
    pub worker_connections_not_enough: usize,
}

/// A running nginx; dropping it stops it.
pub struct Nginx {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Nginx {
    /// Render the config into `dir`, start nginx on a free port (or `port`), and wait until it
    /// accepts connections.
    pub fn start(
        settings: &NginxSettings,
        dir: &Path,
        upstreams: &[SocketAddr],
        port: Option<u16>,
    ) -> Result<Nginx> {
        let binary = find_binary()?;
        std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("resolve {}", dir.display())))?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, render(settings, port, &dir, upstreams))
            .map_err(io_err("write nginx.conf"))?;
        let child = Command::new(&binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(format!("start {}", binary.display())))?;
        let mut nginx = Nginx { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                return Err(StackError::Other(format!(
                    "nginx exited ({status}): {}",
                    log.trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(StackError::Timeout {
                    what: format!("nginx to listen on port {port}"),
                    secs: 10,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The master process (its workers are its children).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn errors(&self) -> NginxErrors {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        NginxErrors {
            too_many_open_files: log.matches("Too many open files").count(),
            worker_connections_not_enough: log.matches("worker_connections are not enough").count(),
        }
    }

    /// Graceful stop (SIGQUIT lets workers finish their requests).
    pub fn stop(&mut self) {
        stop_pid(self.pid(), Signal::SIGQUIT, Duration::from_secs(5));
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
