//! Arbitrary bytes sent as they are to the real server (`api::run`: hyper-util's auto builder
//! with the shipped header limits, then the API's handler) over loopback TCP, the write side
//! then closed; every response that comes back is read and checked. The one replica is
//! 127.0.0.1:1, where nothing listens, so a request that passes validation ends in a quick 503.
//!
//! Invariants besides not panicking: the server answers or closes within 10 s of the client's
//! end of input; no response is a 500, the only 5xx being 503; every non-empty error body is
//! `{"error": "...", "code": "..."}` JSON (hyper's own 400/414/431 for heads it cannot parse
//! come with no body).

#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use api::Config;
use libfuzzer_sys::fuzz_target;

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("a loopback port");
                tx.send(listener.local_addr().expect("an address"))
                    .expect("the fuzzer waits");
                let config =
                    Config::with_replicas(vec!["postgres://api:fuzz@127.0.0.1:1/related".into()]);
                api::run(listener, config, std::future::pending())
                    .await
                    .expect("the server runs");
            });
        });
        rx.recv().expect("the server's address")
    })
}

/// Checks each HTTP/1 response in `bytes` (pipelined requests get several).
fn check(mut bytes: &[u8], sent: &[u8]) {
    while bytes.starts_with(b"HTTP/1.") {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("unparsable response {other:?}: {bytes:?}\nsent {sent:?}"),
        };
        let status = response.code.expect("a complete head has a status");
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let length = header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
        let json = header("content-type") == Some(b"application/json".as_slice());
        let rest = &bytes[head..];
        // No body: 1xx, 204, 304, and the answer to a HEAD (the next response follows at once).
        let body_len = if (100..200).contains(&status)
            || status == 204
            || status == 304
            || rest.starts_with(b"HTTP/1.")
        {
            0
        } else {
            length.unwrap_or(rest.len()).min(rest.len())
        };
        let body = &rest[..body_len];
        assert!(
            status < 500 || status == 503,
            "status {status}: {:?}\nsent {sent:?}",
            String::from_utf8_lossy(body)
        );
        if status >= 400 && !body.is_empty() {
            assert!(
                json,
                "status {status} without a JSON content type\nsent {sent:?}"
            );
            let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!("status {status}: body is not JSON ({e}): {body:?}\nsent {sent:?}")
            });
            assert!(
                value["error"].is_string() && value["code"].is_string(),
                "status {status}: {value}\nsent {sent:?}"
            );
        }
        bytes = &rest[body_len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let mut stream = TcpStream::connect(server()).expect("the server accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    // The server may answer (431, 400) and close before reading everything: not a failure.
    let _ = stream.write_all(data);
    let _ = stream.shutdown(Shutdown::Write);
    let mut received = Vec::new();
    if let Err(e) = stream.read_to_end(&mut received) {
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "no answer and no close within 10 s of the end of input\nsent {data:?}"
        );
    }
    // Reset rather than close: a closed socket would sit in TIME_WAIT, and thousands of
    // connections a second would run out of ephemeral ports.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    check(&received, data);
});
