//! The calibration: pgbench running the API's own SQL with random ids against the replica the
//! API reads from, at the gate's concurrency. Its transactions/s say how fast the database and
//! the machine were that day, so the API's requests/s over it can be compared across days.

use std::path::Path;

use stack::Cluster;

/// The API's SQL as a pgbench script: same statement, same random ids.
pub fn pgbench_script(products: u64) -> String {
    let sql = api::RELATED_SQL
        .replace("$1", ":id")
        .replace("$2", "16")
        .replace('\n', " ");
    format!("\\set id random(1, {products})\n{sql};\n")
}

pub fn pgbench(
    cluster: &Cluster,
    node: usize,
    script: &Path,
    clients: usize,
    secs: u64,
) -> anyhow::Result<f64> {
    let port = cluster.nodes()[node].port;
    // The API role's password through the environment, not on pgbench's command line.
    let url: tokio_postgres::Config = cluster.api_url(node).parse()?;
    let password = String::from_utf8(url.get_password().unwrap_or_default().to_vec())?;
    let output = std::process::Command::new(cluster.binaries().tool("pgbench"))
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(secs.to_string())
        .arg("-f")
        .arg(script)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", stack::cluster::API_ROLE, stack::cluster::DATABASE])
        .env("PGPASSWORD", password)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_tps(&text).ok_or_else(|| anyhow::anyhow!("no tps line in pgbench output: {text}"))
}

/// `tps = 12345.678 (without initial connection time)` -> 12345.678
pub fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_parses() {
        let out = "latency average = 1.2 ms\ninitial connection time = 3.1 ms\ntps = 12345.678901 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(12345.678901));
        assert_eq!(parse_tps("nothing"), None);
    }

    #[test]
    fn the_script_uses_the_apis_sql_with_pgbench_variables() {
        let s = pgbench_script(1000);
        assert!(s.starts_with("\\set id random(1, 1000)\n"));
        assert!(s.contains(":id") && !s.contains("$1") && !s.contains("$2"));
    }
}
