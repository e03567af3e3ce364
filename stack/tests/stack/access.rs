//! Another local account gets nothing: not through the Unix sockets (a private folder, a 0700
//! socket, a password even for the owner) and not through TCP (a password it does not have).
//! Switching users needs root, which CI has; as an ordinary user the test says so and stops.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::{Uid, User};
use stack::{Cluster, ClusterSpec};

use crate::test_dir;

/// Run psql as `nobody` against one server, by socket folder or by TCP address, as the
/// superuser and as the API role, with no password. Returns psql's exit status and stderr.
fn psql_as_nobody(cluster: &Cluster, host: &str, port: u16, role: &str) -> (bool, String) {
    let nobody = User::from_name("nobody").unwrap().expect("user nobody");
    let out = Command::new(cluster.binaries().tool("psql"))
        .args(["-X", "-w", "-h", host, "-p", &port.to_string(), "-U", role])
        .args(["-d", "related", "-Atc", "SELECT current_user"])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "5")
        .env("HOME", "/tmp")
        .current_dir("/")
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn another_user_is_refused_on_every_socket_and_port() {
    if !Uid::effective().is_root() {
        eprintln!("skipped: switching to another user needs root (CI runs as root)");
        return;
    }
    let dir = test_dir();
    let cluster = Cluster::create(ClusterSpec::new(dir.path().join("c"), 1))
        .await
        .unwrap();
    for (node, state) in cluster.nodes().iter().enumerate() {
        let socket_dir = cluster.server_folder(node);
        let socket_dir = socket_dir.to_str().unwrap();
        for role in ["postgres", "related_api"] {
            let (ok, err) = psql_as_nobody(&cluster, socket_dir, state.port, role);
            assert!(!ok, "{} socket let nobody in as {role}", state.name);
            assert!(
                err.contains("Permission denied"),
                "{} socket, {role}: refused for the wrong reason: {err}",
                state.name
            );
            let (ok, err) = psql_as_nobody(&cluster, "127.0.0.1", state.port, role);
            assert!(!ok, "{} TCP port let nobody in as {role}", state.name);
            assert!(
                err.contains("no password supplied")
                    || err.contains("password authentication failed"),
                "{} TCP, {role}: refused for the wrong reason: {err}",
                state.name
            );
        }
    }
    // The owner's tools still work, by password over TCP as before.
    let primary = cluster.connect(0).await.unwrap();
    let who: String = primary
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "postgres");
}
