//! A load killed with SIGKILL resumes to exactly the right rows.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::{assert_invariants, cluster};

const PRODUCTS: i64 = 100_000;
const CHUNK: i64 = 1_000;

fn seeder(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seeder"));
    cmd.args([
        "--products",
        &PRODUCTS.to_string(),
        "--chunk-products",
        &CHUNK.to_string(),
        "--workers",
        "2",
        "--maintenance-work-mem-mb",
        "128",
        "--quiet",
    ])
    .env("DATABASE_URL", url)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_then_rerun_gives_exact_rows() {
    let c = cluster(0).await;
    let url = c.primary_url();
    let client = c.connect(0).await.expect("connect");

    let mut child = seeder(&url).spawn().expect("start the seeder");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let chunks = client
            .query_one("SELECT count(*) FROM seeder_chunks", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if chunks >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the seeder never committed 3 chunks"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the seeder exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    child.wait().expect("reap");

    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM seeder_chunks),
                    (SELECT coalesce(sum(products), 0)::int8 FROM seeder_chunks),
                    (SELECT coalesce(sum(related_items), 0)::int8 FROM seeder_chunks),
                    (SELECT count(*) FROM products),
                    (SELECT count(*) FROM related_items),
                    (SELECT finished FROM seeder_load)",
            &[],
        )
        .await
        .expect("ledger after the kill");
    let chunks: i64 = row.get(0);
    assert!(
        chunks < PRODUCTS / CHUNK,
        "killed mid-load ({chunks} chunks)"
    );
    assert!(!row.get::<_, bool>(5), "not marked finished");
    // Exactly the committed chunks' rows are there: nothing of the chunks in flight.
    assert_eq!(row.get::<_, i64>(3), row.get::<_, i64>(1));
    assert_eq!(row.get::<_, i64>(4), row.get::<_, i64>(2));

    let rerun = seeder(&url).output().expect("rerun the seeder");
    assert!(
        rerun.status.success(),
        "rerun failed: {}",
        String::from_utf8_lossy(&rerun.stderr)
    );

    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM related_items),
                    (SELECT finished FROM seeder_load),
                    to_regclass('related_items_pkey') IS NOT NULL",
            &[],
        )
        .await
        .expect("counts after the rerun");
    assert_eq!(row.get::<_, i64>(0), PRODUCTS);
    assert_eq!(row.get::<_, i64>(1), PRODUCTS * 16);
    assert!(row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3), "indexes built");
    assert_invariants(&client, PRODUCTS, 16).await;
}
