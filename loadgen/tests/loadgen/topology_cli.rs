//! `loadgen up --products 0`, `status` and `down` as a user runs them: the servers only, no
//! schema, and nothing left behind.

use std::path::PathBuf;
use std::process::Command;

use stack::Cluster;

use crate::test_dir;

fn loadgen(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Takes the topology down if the test stops before `loadgen down` did.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if let Ok(cluster) = Cluster::open(&self.0) {
            let _ = cluster.down();
        }
    }
}

/// `loadgen up --products 0` starts the servers only (no schema), `status` shows them and
/// `down` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_without_products_starts_the_servers_only() {
    let scratch = test_dir();
    let dir = scratch.path().join("stack");
    let _down = Down(dir.clone());
    let (ok, text) = loadgen(&["up", "--replicas", "1", "--products", "0"], &dir);
    assert!(ok, "{text}");
    assert!(text.contains("replicas (API role): "), "{text}");

    let cluster = Cluster::open(&dir).unwrap();
    let client = cluster.connect(0).await.unwrap();
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('products', 'related_items')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "no schema without products");
    drop(client);

    let (ok, text) = loadgen(&["status"], &dir);
    assert!(ok && text.contains("running"), "{text}");
    status_shows_no_password(&cluster, &text);
    let (ok, text) = loadgen(&["down"], &dir);
    assert!(ok, "{text}");
    assert!(!dir.exists(), "down removes the topology");
}

/// `status` prints URLs with their passwords redacted and points to 0600 files that hold them:
/// the API's replica list (as `api --replica-file` reads it), the superuser URL, and a libpq
/// password file.
fn status_shows_no_password(cluster: &Cluster, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    for password in crate::secrets::topology_passwords(cluster) {
        assert!(!text.contains(&password), "a password in `status`: {text}");
    }
    assert!(
        text.contains("primary (superuser): postgres://postgres:***@127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains("replicas (API role): postgres://related_api:***@127.0.0.1:"),
        "{text}"
    );
    let dir = cluster.dir();
    for name in ["superuser.url", "api-replicas.list", "pgpass"] {
        let path = dir.join(name).canonicalize().unwrap();
        assert!(
            text.contains(&path.display().to_string()),
            "{name} named: {text}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(read("superuser.url").trim(), cluster.primary_url());
    let listed: Vec<String> = read("api-replicas.list")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(listed, cluster.replica_api_urls());
    let pgpass = read("pgpass");
    for node in cluster.nodes() {
        assert!(
            pgpass.contains(&format!("127.0.0.1:{}:*:postgres:", node.port)),
            "{pgpass}"
        );
    }
}

async fn products_on(cluster: &Cluster, node: usize) -> i64 {
    let client = cluster.connect(node).await.unwrap();
    client
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0)
}

/// The fault commands a drill uses, and `up` again on the same folder: a killed replica and a
/// stopped primary start from their data on their old ports, nothing is seeded again, and a
/// paused replica answers again once resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stop_pause_and_up_again_keep_the_data_and_the_ports() {
    let scratch = test_dir();
    let dir = scratch.path().join("stack");
    let _down = Down(dir.clone());
    let (ok, text) = loadgen(&["up", "--replicas", "1", "--products", "200"], &dir);
    assert!(ok, "{text}");
    let before = Cluster::open(&dir).unwrap();
    let ports: Vec<u16> = before.nodes().iter().map(|n| n.port).collect();
    let url = before.replica_api_urls();
    assert_eq!(products_on(&before, 1).await, 200);

    let (ok, text) = loadgen(&["kill", "replica1"], &dir);
    assert!(ok && text.contains("kill -9"), "{text}");
    let (ok, text) = loadgen(&["stop", "primary"], &dir);
    assert!(ok && text.contains("data is kept"), "{text}");
    let (ok, text) = loadgen(&["status"], &dir);
    assert!(ok && !text.contains("running"), "both down: {text}");

    let (ok, text) = loadgen(&["up", "--replicas", "1", "--products", "200"], &dir);
    assert!(ok, "{text}");
    assert!(
        text.contains("primary: stopped; starting it from its data"),
        "{text}"
    );
    assert!(
        text.contains("replica1: stopped; starting it from its data"),
        "{text}"
    );
    assert!(
        text.contains("already complete"),
        "not seeded again: {text}"
    );
    let after = Cluster::open(&dir).unwrap();
    let ports_after: Vec<u16> = after.nodes().iter().map(|n| n.port).collect();
    assert_eq!(ports_after, ports, "same ports");
    assert_eq!(after.replica_api_urls(), url, "same URLs and passwords");
    assert_eq!(products_on(&after, 0).await, 200);
    assert_eq!(products_on(&after, 1).await, 200);

    let (ok, text) = loadgen(&["pause", "replica1"], &dir);
    assert!(ok && text.contains("paused"), "{text}");
    let frozen =
        tokio::time::timeout(std::time::Duration::from_secs(2), products_on(&after, 1)).await;
    assert!(frozen.is_err(), "a paused replica does not answer");
    let (ok, text) = loadgen(&["resume", "replica1"], &dir);
    assert!(ok && text.contains("resumed"), "{text}");
    assert_eq!(products_on(&after, 1).await, 200);

    let (ok, text) = loadgen(&["start", "replica9"], &dir);
    assert!(
        !ok && text.contains("primary, replica1"),
        "names the servers: {text}"
    );
    let (ok, text) = loadgen(&["down"], &dir);
    assert!(ok, "{text}");
}
