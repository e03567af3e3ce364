//! Bad URLs, unreachable servers and missing tables give one clear sentence, not a panic.

use std::process::Command;

use seeder::{build_relation_index, export_csv, seed, SeedError};

use crate::helpers::{cluster, small};

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn bad_url_and_unreachable_server_are_named() {
    let err = seed("postgres://u@127.0.0.1:notaport/db", &small(100))
        .await
        .expect_err("bad URL");
    assert!(matches!(err, SeedError::InvalidUrl(_)), "{err}");

    let url = format!("postgres://u:p@127.0.0.1:{}/related", closed_port());
    let err = seed(&url, &small(100)).await.expect_err("no server");
    assert!(matches!(err, SeedError::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("cannot connect to PostgreSQL at 127.0.0.1:"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

/// A server that accepts the connection and then says nothing (frozen, or its host gone
/// mid-handshake) is named after the connect timeout, not waited for as long as the kernel
/// keeps the connection.
#[tokio::test]
async fn a_server_that_says_nothing_is_named_after_the_connect_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(silent.accept().await.unwrap().0);
        }
    });
    let url = format!("postgres://u:p@127.0.0.1:{port}/related?connect_timeout=1");
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), seed(&url, &small(100)))
        .await
        .expect("the seeder gives up by itself")
        .expect_err("no answer");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(matches!(err, SeedError::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}"))
            && message.contains("no answer within 1 s"),
        "{message}"
    );
    holder.abort();
}

#[test]
fn the_binary_exits_non_zero_with_one_line() {
    let url = format!("postgres://u:p@127.0.0.1:{}/related", closed_port());
    for args in [
        vec!["--quiet"],
        vec!["index"],
        vec!["export", "--dir", "/nonexistent"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_seeder"))
            .args(&args)
            .env("DATABASE_URL", &url)
            .output()
            .expect("run the seeder");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: cannot connect"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_seeder"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the seeder");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));

    // The URL from a file, which keeps its password off the command line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("superuser.url");
    std::fs::write(&file, format!("# the primary\n\n{url}\n")).unwrap();
    let missing = dir.path().join("missing.url");
    for (path, expected) in [
        (&file, "error: cannot connect to PostgreSQL at 127.0.0.1"),
        (&missing, "error: cannot read --database-url-file"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_seeder"))
            .arg("--database-url-file")
            .arg(path)
            .env_remove("DATABASE_URL")
            .output()
            .expect("run the seeder");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with(expected), "{stderr}");
        assert!(
            !stderr.contains(":p@"),
            "no password in the error: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tables_are_named() {
    let c = cluster(0).await;
    let err = build_relation_index(&c.primary_url(), true)
        .await
        .expect_err("no tables yet");
    assert!(
        matches!(&err, SeedError::MissingTable(t) if t == "products"),
        "{err}"
    );
    assert!(
        err.to_string().contains("`products` does not exist"),
        "{err}"
    );
    let err = export_csv(&c.primary_url(), &c.dir.path().join("out"))
        .await
        .expect_err("no tables yet");
    assert!(matches!(err, SeedError::MissingTable(_)), "{err}");
}
