//! The deployment files, checked offline (this machine can neither pull nor build images, nor
//! reach a Kubernetes cluster): the Dockerfile's structure and its HEALTHCHECK script, the
//! compose file (`docker-compose config`, and that its services, addresses, secrets and mounted
//! files agree), the nginx configuration it mounts (rendered from the project's template, then
//! `nginx -t`), and the Kubernetes manifests (`deploy/k8s/check`: kubernetes-validate and the
//! CloudNativePG CRD schema). A check whose tool is not installed says so on stderr and skips;
//! `scripts/bootstrap` installs every one of them.
//!
//! `UPDATE_DEPLOY=1 cargo test -p stack --test stack deploy` rewrites the rendered nginx
//! configuration of the compose deployment after a change to the template or the addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use stack::postgres::{PgBinaries, ServerDir};
use stack::process::{free_port, ServerUser};

use serde::Deserialize;
use serde_yaml::Value;
use stack::nginx::{render, ClientLimits, NginxSettings};

/// The binaries the image holds, and so the only programs the compose and Kubernetes files may
/// run from it.
const BINARIES: [&str; 3] = ["api", "seeder", "loadgen"];
const COMPOSE_DIR: &str = "deploy/compose";
const COMPOSE_FILE: &str = "deploy/compose/compose.yaml";
const COMPOSE_NGINX: &str = "deploy/compose/nginx/nginx.conf";
/// Where the nginx container keeps its temporary files (the official image creates it).
const NGINX_CONTAINER_DIR: &str = "/var/cache/nginx";
const K8S_DIR: &str = "deploy/k8s";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Says on the real stderr (not the test's captured output) why a check did not run.
fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file());
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// One instruction: its keyword (upper case), its arguments (continuations joined) and the index
/// of its build stage.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    stage: usize,
}

fn parse_dockerfile(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut stage = 0usize;
    let mut seen_from = false;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comments (the `# syntax=` directive too) and blank lines, also inside a continued
        // instruction, are not part of any instruction.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            if seen_from {
                stage += 1;
            }
            seen_from = true;
        }
        out.push(Instruction {
            keyword,
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
            stage,
        });
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let start = manifest.find("members").expect("workspace members");
    let list = &manifest[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn dockerfile_caches_dependencies_and_runs_every_binary_as_non_root() {
    let instructions = parse_dockerfile(&read("Dockerfile"));
    let stages: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .collect();
    assert!(
        stages.len() >= 3,
        "a dependency stage, a build stage and a runtime stage: {stages:?}"
    );
    let last = stages.len() - 1;
    let in_stage = |s: usize| instructions.iter().filter(move |i| i.stage == s);

    // 1. The dependency layer: manifests and lock file only, then a cargo build, before any
    //    source is copied.
    let copy_all = instructions
        .iter()
        .position(|i| i.keyword == "COPY" && i.args == ". .")
        .expect("a COPY . . of the sources");
    let before: Vec<&Instruction> = instructions[..copy_all].iter().collect();
    assert!(
        before
            .iter()
            .any(|i| i.keyword == "COPY" && i.args.contains("Cargo.toml Cargo.lock")),
        "the root manifest and lock file are copied before the sources"
    );
    for member in workspace_members() {
        assert!(
            before
                .iter()
                .any(|i| i.keyword == "COPY" && i.args.starts_with(&format!("{member}/Cargo.toml"))),
            "{member}/Cargo.toml is copied into the dependency layer"
        );
    }
    let dep_build = before
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("a cargo build of the dependencies before the sources are copied");
    assert!(dep_build.args.contains("--locked"), "{}", dep_build.args);
    assert!(
        before
            .iter()
            .all(|i| i.keyword != "COPY" || !i.args.contains("src")),
        "no source is copied into the dependency layer"
    );
    let real_build = instructions[copy_all..]
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("a cargo build after the sources are copied");
    assert!(
        real_build.args.contains("touch"),
        "the copied sources are touched, so that cargo does not take the stubs' outputs for them"
    );

    // 2. Every binary: a workspace crate with a main, built in both steps, copied to the runtime.
    let runtime_copy = in_stage(last)
        .find(|i| i.keyword == "COPY" && i.args.starts_with("--from="))
        .expect("the runtime stage copies the binaries from the build stage");
    for bin in BINARIES {
        assert!(
            root().join(bin).join("src/main.rs").is_file(),
            "{bin} is a workspace binary"
        );
        for build in [dep_build, real_build] {
            assert!(
                build.args.contains(&format!("-p {bin}")),
                "`cargo build` builds {bin}: {}",
                build.args
            );
        }
        assert!(
            real_build.args.contains(&format!("target/release/{bin}")),
            "{bin} is taken from target/release"
        );
        assert!(
            runtime_copy.args.contains(&format!("/{bin}")),
            "{bin} is in the runtime image: {}",
            runtime_copy.args
        );
    }

    // 3. The runtime stage: slim, no toolchain, a non-root user, health check, stop signal.
    let from = &stages[last].args;
    assert!(
        from.contains("RUNTIME_IMAGE") || from.contains("slim"),
        "the runtime stage starts from a slim image: {from}"
    );
    let runtime_image = instructions
        .iter()
        .find(|i| i.keyword == "ARG" && i.args.starts_with("RUNTIME_IMAGE="))
        .map(|i| i.args.clone())
        .unwrap_or_default();
    if from.contains("RUNTIME_IMAGE") {
        assert!(runtime_image.contains("slim"), "{runtime_image}");
    }
    assert!(
        in_stage(last).all(|i| !i.args.contains("cargo ")),
        "no cargo in the runtime stage"
    );
    let user = instructions
        .iter()
        .rev()
        .find(|i| i.stage == last && i.keyword == "USER")
        .expect("a USER in the runtime stage");
    let name = user.args.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "the runtime user is not root: {}",
        user.args
    );
    let health = in_stage(last)
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("a HEALTHCHECK");
    assert!(
        health.args.contains("CMD [\"/usr/local/bin/healthcheck\"]"),
        "{}",
        health.args
    );
    assert!(
        in_stage(last).any(|i| i.keyword == "COPY"
            && i.args
                .contains("deploy/docker/healthcheck /usr/local/bin/healthcheck")),
        "the health check script is copied to where HEALTHCHECK runs it"
    );
    let script = read("deploy/docker/healthcheck");
    assert!(script.contains("GET /healthz") && script.contains("API_ADMIN_LISTEN"));
    let stop = in_stage(last)
        .find(|i| i.keyword == "STOPSIGNAL")
        .expect("a STOPSIGNAL");
    assert_eq!(stop.args, "SIGTERM", "the API drains on SIGTERM");
    let expose = in_stage(last)
        .find(|i| i.keyword == "EXPOSE")
        .expect("EXPOSE");
    assert_eq!(expose.args, "8080 9464");
    let cmd = in_stage(last)
        .find(|i| i.keyword == "CMD")
        .expect("a default command");
    assert_eq!(cmd.args, "[\"api\"]");

    // 4. The build context keeps what the build needs.
    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target", ".git"] {
        assert!(
            ignored.contains(&needed),
            ".dockerignore leaves out {needed}"
        );
    }
    for kept in [
        "api",
        "seeder",
        "stack",
        "loadgen",
        "nginx",
        "Cargo.lock",
        "deploy",
        "deploy/docker",
        "deploy/docker/healthcheck",
    ] {
        assert!(
            !ignored.contains(&kept),
            ".dockerignore must not leave out {kept}"
        );
    }
}

/// A one-shot HTTP server that answers `status_line` to one request and returns the request
/// line it got.
fn answer_once(status_line: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let response = format!("{status_line}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        conn.write_all(response.as_bytes()).unwrap();
        String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    });
    (port, handle)
}

fn healthcheck(env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("deploy/docker/healthcheck"))
        .env_remove("API_ADMIN_LISTEN")
        .env_remove("API_LISTEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

#[test]
fn healthcheck_script_is_healthy_only_on_a_200_from_healthz() {
    // 200 on the operator listener (a wildcard address is reached on loopback).
    let (port, server) = answer_once("HTTP/1.1 200 OK");
    let out = healthcheck(&[("API_ADMIN_LISTEN", format!("0.0.0.0:{port}"))]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.join().unwrap(), "GET /healthz HTTP/1.1");

    // Anything else is unhealthy.
    let (port, server) = answer_once("HTTP/1.1 503 Service Unavailable");
    let out = healthcheck(&[("API_ADMIN_LISTEN", format!("127.0.0.1:{port}"))]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
    server.join().unwrap();

    // Nothing listening.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = healthcheck(&[("API_ADMIN_LISTEN", format!("127.0.0.1:{free}"))]);
    assert!(!out.status.success(), "{}", text(&out));

    // With the operator listener off, the public one (which also serves /healthz).
    let (port, server) = answer_once("HTTP/1.1 200 OK");
    let out = healthcheck(&[
        ("API_ADMIN_LISTEN", "off".into()),
        ("API_LISTEN", format!("0.0.0.0:{port}")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.join().unwrap(), "GET /healthz HTTP/1.1");
}

#[test]
fn deploy_shell_scripts_parse() {
    let mut scripts = vec![root().join("deploy/docker/healthcheck")];
    for dir in ["deploy/compose/init", "deploy/k8s"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sh") {
                scripts.push(path);
            }
        }
    }
    assert!(scripts.len() >= 4, "{scripts:?}");
    for script in scripts {
        let out = run(Command::new("bash").arg("-n").arg(&script));
        assert!(out.status.success(), "{}: {}", script.display(), text(&out));
        let mode = std::fs::metadata(&script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert!(
            mode.permissions().mode() & 0o111 != 0,
            "{} is executable",
            script.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Compose

fn yaml(text: &str) -> Value {
    let mut value: Value = serde_yaml::from_str(text).expect("valid YAML");
    // `<<` merges nested in merged mappings need one pass per level.
    for _ in 0..4 {
        value.apply_merge().expect("YAML merge keys");
    }
    value
}

fn compose() -> Value {
    yaml(&read(COMPOSE_FILE))
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => Vec::new(),
        other => panic!("not a list of strings: {other:?}"),
    }
}

/// The program a command runs: its first word, or what a `sh -c '... exec X ...'` execs.
fn program(command: &[String]) -> Option<String> {
    let first = command.first()?;
    if (first == "sh" || first == "bash") && command.get(1).map(String::as_str) == Some("-c") {
        let script = command.get(2)?;
        let after = script.split("exec ").nth(1)?;
        return after.split_whitespace().next().map(str::to_string);
    }
    Some(first.clone())
}

/// The project's image in compose: `${APP_IMAGE:-related-items:local}`.
fn is_app_image(image: &str) -> bool {
    image.contains("related-items")
}

fn ipv4(service: &Value) -> Option<Ipv4Addr> {
    service["networks"]["related"]["ipv4_address"]
        .as_str()
        .map(|s| s.parse().expect("an IPv4 address"))
}

#[test]
fn compose_file_is_valid_for_docker_compose() {
    let Some(tool) = which("docker-compose") else {
        skip(
            "compose_file_is_valid_for_docker_compose",
            "docker-compose is not installed (scripts/bootstrap installs Debian's docker-compose)",
        );
        return;
    };
    let dir = root().join(COMPOSE_DIR);
    for profile in [None, Some("loadgen")] {
        let mut cmd = Command::new(&tool);
        cmd.current_dir(&dir).env_remove("COMPOSE_FILE");
        if let Some(p) = profile {
            cmd.args(["--profile", p]);
        }
        let out = run(cmd.args(["-f", "compose.yaml", "config"]));
        assert!(
            out.status.success(),
            "docker-compose config: {}",
            text(&out)
        );
        // What compose itself made of the file (anchors, merges and .env applied).
        let resolved = yaml(&String::from_utf8_lossy(&out.stdout));
        let svc = services(&resolved);
        for name in [
            "secrets", "primary", "replica1", "replica2", "seeder", "api1", "nginx",
        ] {
            assert!(svc.contains_key(name), "{name} in {:?}", svc.keys());
        }
        assert_eq!(
            svc["seeder"]["environment"]["SEEDER_PRODUCTS"].as_str(),
            Some("100000"),
            ".env's PRODUCTS reaches the seeder"
        );
        assert!(svc["api1"]["image"]
            .as_str()
            .unwrap()
            .contains("related-items"));
    }
    // The newer Compose v2 plugin, where the machine has it.
    let has_v2 = which("docker").is_some_and(|docker| {
        run(Command::new(docker).args(["compose", "version"]))
            .status
            .success()
    });
    if has_v2 {
        let out = run(Command::new("docker").current_dir(&dir).args([
            "compose",
            "-f",
            "compose.yaml",
            "config",
            "--quiet",
        ]));
        assert!(
            out.status.success(),
            "docker compose config: {}",
            text(&out)
        );
    } else {
        skip(
            "compose_file_is_valid_for_docker_compose (Compose v2 part)",
            "`docker compose` (the v2 plugin) is not installed; checked with docker-compose only",
        );
    }
}

#[test]
fn compose_services_agree_with_each_other() {
    let compose = compose();
    let svc = services(&compose);

    // The project's image runs only the binaries it holds.
    let mut app_programs = BTreeSet::new();
    for (name, s) in &svc {
        let image = s["image"].as_str().unwrap_or_default();
        if is_app_image(image) {
            let command = strings(&s["command"]);
            let prog = program(&command).unwrap_or_else(|| panic!("{name} has a command"));
            assert!(
                BINARIES.contains(&prog.as_str()),
                "{name} runs {prog}, which the image does not hold"
            );
            app_programs.insert(prog.clone());
            assert_eq!(
                s["build"]["dockerfile"].as_str(),
                Some("Dockerfile"),
                "{name}"
            );
            assert_eq!(s["build"]["context"].as_str(), Some("../.."), "{name}");
            // Only the API serves /healthz: the others turn the image's check off.
            let disabled = s["healthcheck"]["disable"].as_bool() == Some(true);
            assert_eq!(
                disabled,
                prog != "api",
                "{name}: the health check is for the API only"
            );
        }
    }
    assert_eq!(
        app_programs,
        BINARIES.iter().map(|b| b.to_string()).collect(),
        "every binary has a service"
    );

    // PostgreSQL: a primary and N >= 2 replicas from the official image, each replica cloned
    // under its own name, all of them in the API's replica list.
    let replicas: Vec<&String> = svc.keys().filter(|k| k.starts_with("replica")).collect();
    assert!(replicas.len() >= 2, "{replicas:?}");
    for name in std::iter::once(&"primary".to_string()).chain(replicas.iter().copied()) {
        let image = svc[name]["image"].as_str().unwrap();
        assert!(image.contains("postgres:"), "{name}: {image}");
        assert_eq!(
            strings(&svc[name]["command"]),
            strings(&svc["primary"]["command"]),
            "{name} runs with the primary's settings"
        );
    }
    for name in &replicas {
        let s = &svc[name.as_str()];
        assert_eq!(
            s["environment"]["REPLICA_NAME"].as_str(),
            Some(name.as_str())
        );
        assert_eq!(s["environment"]["PRIMARY_HOST"].as_str(), Some("primary"));
        assert_eq!(
            strings(&s["entrypoint"]),
            ["bash", "/docker-init/replica-entrypoint.sh"]
        );
        let volumes = strings(&s["volumes"]);
        assert!(
            volumes.contains(&format!("{name}-data:/var/lib/postgresql/data")),
            "{name} has its own data volume: {volumes:?}"
        );
    }
    let listed: Vec<&str> = svc["secrets"]["environment"]["REPLICAS"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        listed,
        replicas.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "the secrets service writes every replica (and only those) into the API's list"
    );
    assert_eq!(
        svc["primary"]["environment"]["POSTGRES_INITDB_ARGS"].as_str(),
        Some("--auth-local=scram-sha-256 --auth-host=scram-sha-256"),
        "no `trust` line in the primary's pg_hba.conf, which the replicas clone"
    );
    let primary_mounts = strings(&svc["primary"]["volumes"]);
    assert!(primary_mounts
        .iter()
        .any(|m| m.ends_with(":/docker-entrypoint-initdb.d/10-related.sh:ro")));
    let init = read("deploy/compose/init/primary-init.sh");
    assert!(init.contains("CREATE ROLE related_api") && init.contains("REPLICATION LOGIN"));
    assert!(
        init.contains(&format!("ROLE {}", stack::cluster::API_ROLE)),
        "the API role is the one the stack crate and seeder/sql/grants.sql use"
    );

    // Every host file a service mounts exists.
    for (name, s) in &svc {
        for volume in strings(&s["volumes"]) {
            if volume.starts_with("./") {
                let host = volume.split(':').next().unwrap();
                let path = root().join(COMPOSE_DIR).join(host);
                assert!(
                    path.exists(),
                    "{name} mounts {}, which is missing",
                    path.display()
                );
            }
        }
    }

    // No password in the file: *PASSWORD* variables point at secret files; no URL with one.
    let raw = read(COMPOSE_FILE);
    assert!(
        !raw.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("://") && l.contains('@')),
        "a URL with credentials in compose.yaml"
    );
    for (name, s) in &svc {
        if let Some(env) = s["environment"].as_mapping() {
            for (k, v) in env {
                let key = k.as_str().unwrap();
                if key.contains("PASSWORD") {
                    assert!(
                        key.ends_with("_FILE")
                            && v.as_str().unwrap_or_default().starts_with("/run/secrets/"),
                        "{name}: {key} must name a secret file"
                    );
                }
            }
        }
    }
    let env_file = read("deploy/compose/.env");
    assert!(!env_file.to_ascii_lowercase().contains("password"));

    // Dependencies: the seeder after the primary, the API after the seeder and the replicas,
    // nginx after the API; the load generator only in its profile.
    let depends = |name: &str, on: &str| -> Option<String> {
        svc[name]["depends_on"][on]["condition"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(
        depends("seeder", "primary").as_deref(),
        Some("service_healthy")
    );
    let apis: Vec<&String> = svc.keys().filter(|k| k.starts_with("api")).collect();
    assert!(apis.len() >= 2, "{apis:?}");
    for api in &apis {
        assert_eq!(
            depends(api, "seeder").as_deref(),
            Some("service_completed_successfully")
        );
        for replica in &replicas {
            assert_eq!(depends(api, replica).as_deref(), Some("service_healthy"));
        }
        assert_eq!(depends("nginx", api).as_deref(), Some("service_healthy"));
        assert_eq!(
            svc[api.as_str()]["environment"]["API_REPLICA_FILE"].as_str(),
            Some("/run/secrets/api-replicas.list")
        );
        assert_eq!(
            svc[api.as_str()]["environment"]["API_ADMIN_LISTEN"].as_str(),
            Some("0.0.0.0:9464")
        );
    }
    assert_eq!(strings(&svc["loadgen"]["profiles"]), ["loadgen"]);
    for (name, s) in &svc {
        if name != "loadgen" {
            assert!(s["profiles"].is_null(), "{name} starts with `up`");
        }
    }

    // Fixed addresses: inside the subnet, outside the range Docker hands out, all different.
    let ipam = &compose["networks"]["related"]["ipam"]["config"][0];
    let subnet = ipam["subnet"].as_str().unwrap();
    let range = ipam["ip_range"].as_str().unwrap();
    let (net, bits) = subnet.split_once('/').unwrap();
    let (range_net, range_bits) = range.split_once('/').unwrap();
    let within = |ip: Ipv4Addr, net: &str, bits: &str| {
        let mask = u32::MAX << (32 - bits.parse::<u32>().unwrap());
        u32::from(ip) & mask == u32::from(net.parse::<Ipv4Addr>().unwrap()) & mask
    };
    let mut seen = BTreeSet::new();
    for (name, s) in &svc {
        if let Some(ip) = ipv4(s) {
            assert!(within(ip, net, bits), "{name}: {ip} outside {subnet}");
            assert!(
                !within(ip, range_net, range_bits),
                "{name}: {ip} inside the dynamic range {range}"
            );
            assert!(seen.insert(ip), "{name}: {ip} used twice");
        }
    }
}

/// The compose deployment's nginx configuration: the project's template in its tuned form,
/// with the API services' fixed addresses as upstreams and the load generator's address exempt
/// from the per-client limits, listening on every address of the container, logging to stderr.
fn render_compose_nginx() -> String {
    let compose = compose();
    let svc = services(&compose);
    let upstreams: Vec<SocketAddr> = svc
        .iter()
        .filter(|(k, _)| k.starts_with("api"))
        .map(|(k, s)| {
            let ip = ipv4(s).unwrap_or_else(|| panic!("{k} has a fixed address"));
            SocketAddr::from((ip, 8080))
        })
        .collect();
    let loadgen = ipv4(&svc["loadgen"]).expect("loadgen has a fixed address");
    let mut settings = NginxSettings::tuned();
    settings.client_limits = Some(ClientLimits {
        exempt: vec!["127.0.0.0/8".into(), format!("{loadgen}/32")],
        ..ClientLimits::default()
    });
    let rendered = render(&settings, 8080, Path::new(NGINX_CONTAINER_DIR), &upstreams);
    let edits = [
        ("listen 127.0.0.1:8080 ", "listen 8080 "),
        (
            "error_log /var/cache/nginx/error.log warn;",
            "error_log stderr warn;",
        ),
    ];
    let mut conf = rendered;
    for (from, to) in edits {
        assert!(
            conf.contains(from),
            "the template no longer renders `{from}`: update render_compose_nginx"
        );
        conf = conf.replace(from, to);
    }
    format!(
        "# GENERATED from nginx/nginx.conf.template for deploy/compose/compose.yaml by\n\
         # stack/tests/stack/deploy.rs; do not edit: rerun\n\
         #   UPDATE_DEPLOY=1 cargo test -p stack --test stack deploy\n\
         # Upstreams: the api services' fixed addresses; the loadgen service's address is exempt\n\
         # from the per-client limits; it listens on every address of its container.\n\n{conf}"
    )
}

#[test]
fn compose_nginx_config_is_the_rendered_template_and_passes_nginx_t() {
    let expected = render_compose_nginx();
    let path = root().join(COMPOSE_NGINX);
    if std::env::var_os("UPDATE_DEPLOY").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{COMPOSE_NGINX} differs from the template's rendering: rerun with UPDATE_DEPLOY=1"
    );
    assert!(!committed.contains("{{"), "every placeholder is filled");

    let Ok(nginx) = stack::nginx::find_binary() else {
        skip(
            "compose_nginx_config_is_the_rendered_template_and_passes_nginx_t (nginx -t)",
            "nginx is not installed (scripts/bootstrap installs it)",
        );
        return;
    };
    // The committed file as is, but for the container's own temporary folder and port.
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = committed
        .replace(NGINX_CONTAINER_DIR, &dir.path().display().to_string())
        .replace("listen 8080 ", &format!("listen 127.0.0.1:{port} "));
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let out = run(Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .args(["-e", "stderr"]));
    assert!(out.status.success(), "nginx -t: {}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn k8s_documents() -> Vec<(PathBuf, Value)> {
    let mut docs = Vec::new();
    let mut dirs = vec![root().join(K8S_DIR)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "crd") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let value = Value::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    if !value.is_null() {
                        docs.push((path.clone(), value));
                    }
                }
            }
        }
    }
    docs
}

#[test]
fn kubernetes_containers_run_only_the_image_binaries() {
    let docs = k8s_documents();
    let mut seen = BTreeSet::new();
    for (path, doc) in &docs {
        let spec = &doc["spec"]["template"]["spec"];
        let job_spec = &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        for pod in [spec, job_spec] {
            for key in ["containers", "initContainers"] {
                let Some(containers) = pod[key].as_sequence() else {
                    continue;
                };
                for c in containers {
                    let image = c["image"].as_str().unwrap_or_default();
                    if !image.starts_with("related-items") {
                        continue;
                    }
                    let mut command = strings(&c["command"]);
                    command.extend(strings(&c["args"]));
                    let prog = program(&command).unwrap_or_else(|| "api".into());
                    assert!(
                        BINARIES.contains(&prog.as_str()),
                        "{}: runs {prog}, which the image does not hold",
                        path.display()
                    );
                    seen.insert(prog);
                }
            }
        }
    }
    assert!(
        seen.contains("api") && seen.contains("seeder"),
        "the Deployment runs the API and the Job the seeder: {seen:?}"
    );
}

#[test]
fn kubernetes_manifests_validate_against_kubernetes_and_cloudnativepg_schemas() {
    let test = "kubernetes_manifests_validate_against_kubernetes_and_cloudnativepg_schemas";
    let Some(python) = which("python3") else {
        skip(test, "python3 is not installed");
        return;
    };
    let probe =
        run(Command::new(&python).args(["-c", "import kubernetes_validate, yaml, jsonschema"]));
    if !probe.status.success() {
        skip(
            test,
            "the kubernetes-validate Python package is not installed \
             (scripts/bootstrap installs it: pip install kubernetes-validate)",
        );
        return;
    }
    let out = run(Command::new(&python).arg(root().join("deploy/k8s/check")));
    assert!(out.status.success(), "deploy/k8s/check: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Cluster related-db: valid"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// The compose deployment's init scripts, run against this machine's PostgreSQL (the same
// commands the postgres image runs them with; only the image's own entrypoint is stood in for)

/// Stops what the test started, also when it fails.
struct Servers {
    primary: Option<ServerDir>,
    replica: Option<std::process::Child>,
}

impl Servers {
    fn stop_replica(&mut self) {
        if let Some(mut child) = self.replica.take() {
            stack::process::stop_pid(child.id() as i32, Signal::SIGINT, Duration::from_secs(10));
            let _ = child.wait();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop_replica();
        if let Some(primary) = self.primary.take() {
            primary.stop(Duration::from_secs(10));
        }
    }
}

/// `bash SCRIPT` from the copied init folder, as the server user, with the PostgreSQL tools
/// (and `extra_path` first) on PATH.
fn init_script(
    user: &ServerUser,
    bins: &PgBinaries,
    init: &Path,
    script: &str,
    extra_path: &Path,
) -> Command {
    let mut cmd = user.command("bash");
    cmd.arg(init.join(script))
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                extra_path.display(),
                bins.bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .current_dir("/");
    cmd
}

async fn query_until(url: &str, sql: &str, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                match client.query(sql, &[]).await {
                    Ok(rows) => {
                        let got: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
                        if got.iter().any(|g| g == want) {
                            return;
                        }
                        last = format!("{got:?}");
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: no {want:?} within 60 s (last: {last})");
}

fn spawn_replica(
    user: &ServerUser,
    bins: &PgBinaries,
    init: &Path,
    stand_in: &Path,
    env: &[(&str, String)],
    log: &Path,
) -> std::process::Child {
    let log_file = std::fs::File::create(log).unwrap();
    let mut cmd = init_script(user, bins, init, "replica-entrypoint.sh", stand_in);
    cmd.args(["postgres", "-c", "hot_standby=on"])
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start replica-entrypoint.sh")
}

#[tokio::test]
async fn compose_init_scripts_make_streaming_replicas_and_the_read_only_role() {
    let test = "compose_init_scripts_make_streaming_replicas_and_the_read_only_role";
    let Ok(bins) = PgBinaries::find() else {
        skip(
            test,
            "PostgreSQL is not installed (scripts/bootstrap installs it)",
        );
        return;
    };
    let user = ServerUser::detect().expect("the server user");
    let dir = crate::test_dir();
    let base = dir.path();
    let init = base.join("init");
    std::fs::create_dir(&init).unwrap();
    for script in [
        "make-secrets.sh",
        "primary-init.sh",
        "replica-entrypoint.sh",
    ] {
        std::fs::copy(
            root().join("deploy/compose/init").join(script),
            init.join(script),
        )
        .unwrap();
    }

    // 1. The secrets: make-secrets.sh where it can chown (root), as in its container.
    let secrets = base.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let is_root = nix::unistd::Uid::effective().is_root();
    if is_root {
        let make = || {
            run(Command::new("bash")
                .arg(init.join("make-secrets.sh"))
                .env("SECRETS_DIR", &secrets)
                .env("REPLICAS", "replica1 replica2"))
        };
        let out = make();
        assert!(out.status.success(), "make-secrets.sh: {}", text(&out));
        let first = std::fs::read_to_string(secrets.join("api_password")).unwrap();
        let out = make();
        assert!(
            out.status.success(),
            "make-secrets.sh again: {}",
            text(&out)
        );
        assert_eq!(
            std::fs::read_to_string(secrets.join("api_password")).unwrap(),
            first,
            "a second run keeps the passwords"
        );
        use std::os::unix::fs::MetadataExt;
        for (file, uid) in [
            ("postgres_password", 999),
            ("replication_password", 999),
            ("api_password", 999),
            ("seeder.url", 10001),
            ("api-replicas.list", 10001),
        ] {
            let meta = std::fs::metadata(secrets.join(file)).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o400), "{file}");
        }
        for file in ["postgres_password", "replication_password", "api_password"] {
            let pw = std::fs::read_to_string(secrets.join(file)).unwrap();
            assert!(
                pw.len() == 32 && pw.chars().all(|c| c.is_ascii_alphanumeric()),
                "{file}"
            );
        }
        let list = std::fs::read_to_string(secrets.join("api-replicas.list")).unwrap();
        let urls: Vec<&str> = list
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(
            urls,
            [
                format!("postgres://related_api:{first}@replica1:5432/related"),
                format!("postgres://related_api:{first}@replica2:5432/related"),
            ]
        );
        // Here the PostgreSQL servers run as this machine's server user, not uid 999.
        user.own(&secrets).unwrap();
    } else {
        skip(
            &format!("{test} (make-secrets.sh)"),
            "not root: make-secrets.sh chowns the files to the images' users; passwords written by the test",
        );
        for file in ["postgres_password", "replication_password", "api_password"] {
            std::fs::write(secrets.join(file), stack::process::random_secret(32)).unwrap();
        }
        std::fs::write(
            secrets.join("api-replicas.list"),
            format!(
                "postgres://related_api:{}@replica1:5432/related\n",
                std::fs::read_to_string(secrets.join("api_password")).unwrap()
            ),
        )
        .unwrap();
    }
    let secret = |file: &str| std::fs::read_to_string(secrets.join(file)).unwrap();

    // 2. The primary, initialised as the image does (superuser password, database related),
    //    then primary-init.sh.
    let mut servers = Servers {
        primary: None,
        replica: None,
    };
    let primary = ServerDir {
        node_dir: base.join("primary"),
    };
    primary
        .initdb(&bins, &user, &secret("postgres_password"))
        .unwrap();
    let p1 = free_port().unwrap();
    primary
        .append_conf(&[
            ("port".into(), p1.to_string()),
            ("listen_addresses".into(), "'127.0.0.1'".into()),
            (
                "unix_socket_directories".into(),
                format!("'{}'", primary.node_dir.display()),
            ),
            ("max_slot_wal_keep_size".into(), "'1GB'".into()),
            ("hot_standby_feedback".into(), "on".into()),
        ])
        .unwrap();
    primary.start(&bins, &user).unwrap();
    servers.primary = Some(primary.clone());
    let superuser = secret("postgres_password");
    let out = run(user
        .command(bins.tool("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &p1.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "postgres", "-c", "CREATE DATABASE related"])
        .env("PGPASSWORD", &superuser));
    assert!(out.status.success(), "CREATE DATABASE: {}", text(&out));
    let out = run(init_script(&user, &bins, &init, "primary-init.sh", &init)
        .env("POSTGRES_USER", "postgres")
        .env("POSTGRES_DB", "related")
        .env("PGDATA", primary.data())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", p1.to_string())
        .env("PGPASSWORD", &superuser)
        .env("SECRETS_DIR", &secrets));
    assert!(out.status.success(), "primary-init.sh: {}", text(&out));
    let hba = std::fs::read_to_string(primary.data().join("pg_hba.conf")).unwrap();
    assert!(hba.contains("host replication replicator all scram-sha-256"));
    let out = run(user
        .command(bins.tool("pg_ctl"))
        .arg("-D")
        .arg(primary.data())
        .arg("reload"));
    assert!(out.status.success(), "reload: {}", text(&out));

    // 3. A replica through replica-entrypoint.sh; the stand-in for the image's entrypoint runs
    //    the server it leaves behind on its own port.
    let stand_in = base.join("bin");
    std::fs::create_dir(&stand_in).unwrap();
    let entry = stand_in.join("docker-entrypoint.sh");
    std::fs::write(
        &entry,
        "#!/bin/bash\n# The postgres image's entrypoint, as far as a replica's start goes.\n\
         shift\nexec postgres -D \"$PGDATA\" -p \"$REPLICA_PORT\" -k \"$REPLICA_SOCKETS\" \
         -c listen_addresses=127.0.0.1 \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).unwrap();
    let replica_dir = base.join("replica1");
    std::fs::create_dir(&replica_dir).unwrap();
    std::fs::set_permissions(&replica_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    user.own(base).unwrap();
    let p2 = free_port().unwrap();
    let env = [
        ("REPLICA_NAME", "replica1".to_string()),
        ("PRIMARY_HOST", "127.0.0.1".into()),
        ("PRIMARY_PORT", p1.to_string()),
        ("SECRETS_DIR", secrets.display().to_string()),
        ("PGDATA", replica_dir.join("data").display().to_string()),
        ("REPLICA_PORT", p2.to_string()),
        ("REPLICA_SOCKETS", replica_dir.display().to_string()),
    ];
    let log = base.join("replica1.log");
    servers.replica = Some(spawn_replica(&user, &bins, &init, &stand_in, &env, &log));

    let primary_url = format!("postgres://postgres:{superuser}@127.0.0.1:{p1}/related");
    let streaming = "SELECT state FROM pg_stat_replication WHERE application_name = 'replica1'";
    query_until(&primary_url, streaming, "streaming", "replica1 streams").await;
    let conf = std::fs::read_to_string(replica_dir.join("data/postgresql.auto.conf")).unwrap();
    assert!(conf.contains("primary_slot_name = 'replica1'"), "{conf}");
    assert!(
        !conf.contains(&secret("replication_password")),
        "the password stays in the password file"
    );

    // 4. The API's role on the replica, with the URL the API is given: reads what the seeder
    //    grants it, and nothing can be written.
    let (client, conn) = tokio_postgres::connect(&primary_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE products (id bigint PRIMARY KEY);
             CREATE TABLE related_items (product_id bigint);
             INSERT INTO products VALUES (42);",
        )
        .await
        .unwrap();
    client
        .batch_execute(include_str!("../../../seeder/sql/grants.sql"))
        .await
        .unwrap();
    let list = secret("api-replicas.list");
    let api_url = list
        .lines()
        .find(|l| l.contains("@replica1:5432/"))
        .expect("replica1 in the API's list")
        .replace("@replica1:5432/", &format!("@127.0.0.1:{p2}/"));
    query_until(
        &api_url,
        "SELECT id::text FROM products",
        "42",
        "related_api reads on replica1",
    )
    .await;
    let (api, conn) = tokio_postgres::connect(&api_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = api
        .query_one(
            "SELECT current_setting('default_transaction_read_only'), pg_is_in_recovery()::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("on".into(), "true".into())
    );

    // 5. The replica's volume deleted: a new start clones again, over the slot its
    //    predecessor left on the primary.
    servers.stop_replica();
    std::fs::remove_dir_all(replica_dir.join("data")).unwrap();
    servers.replica = Some(spawn_replica(&user, &bins, &init, &stand_in, &env, &log));
    query_until(
        &primary_url,
        streaming,
        "streaming",
        "replica1 streams again",
    )
    .await;
    let slots = client
        .query(
            "SELECT slot_name FROM pg_replication_slots WHERE active",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(slots.len(), 1, "one slot, in use");
}
