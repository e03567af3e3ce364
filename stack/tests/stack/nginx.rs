use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use stack::nginx::{render, ClientLimits, Nginx, NginxSettings};

use crate::test_dir;

#[test]
fn tuned_config_keeps_upstream_connections_alive() {
    let addrs: Vec<SocketAddr> = vec![
        "127.0.0.1:9001".parse().unwrap(),
        "127.0.0.1:9002".parse().unwrap(),
    ];
    let conf = render(
        &NginxSettings::tuned(),
        8080,
        std::path::Path::new("/x"),
        &addrs,
    );
    assert!(conf.contains("server 127.0.0.1:9001"));
    assert!(conf.contains("server 127.0.0.1:9002"));
    assert!(conf.contains("keepalive 256;"));
    assert!(conf.contains("proxy_http_version 1.1;"));
    assert!(conf.contains("proxy_set_header Connection \"\";"));
    assert!(conf.contains("worker_processes auto;"));
    assert!(conf.contains("proxy_next_upstream_tries 2;"));
    assert!(!conf.contains("{{"), "every placeholder is filled");

    let untuned = render(
        &NginxSettings::untuned(),
        8080,
        std::path::Path::new("/x"),
        &addrs,
    );
    assert!(untuned.contains("worker_connections 128;"));
    assert!(untuned.contains("worker_rlimit_nofile 128;"));
    assert!(!untuned.contains("keepalive 256"));
}

/// A one-shot HTTP upstream that answers every request with a fixed body.
fn tiny_upstream(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn nginx_proxies_to_its_upstreams_and_stops() {
    let dir = test_dir();
    let up = tiny_upstream("hello");
    let mut nginx = Nginx::start(&NginxSettings::tuned(), dir.path(), &[up], None).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", nginx.port())).unwrap();
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello"));
    let port = nginx.port();
    nginx.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// One request over a fresh connection; the whole reply.
fn request(port: u16, head: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn the_edge_serves_the_public_api_only() {
    let dir = test_dir();
    let up = tiny_upstream("from the api");
    for settings in [NginxSettings::tuned(), NginxSettings::untuned()] {
        let nginx = Nginx::start(&settings, dir.path(), &[up], None).unwrap();
        let port = nginx.port();
        let metrics = request(
            port,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(metrics.starts_with("HTTP/1.1 404"), "{metrics}");
        assert!(metrics.contains("\"code\":\"not_found\""), "{metrics}");
        assert!(!metrics.contains("from the api"), "{metrics}");
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let reply = request(
                port,
                &format!("{method} /products/1/related HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            );
            assert!(reply.starts_with("HTTP/1.1 405"), "{method}: {reply}");
            assert!(
                reply.contains("Allow: GET, HEAD, OPTIONS"),
                "{method}: {reply}"
            );
        }
        for method in ["GET", "OPTIONS"] {
            let reply = request(
                port,
                &format!(
                    "{method} /products/1/related HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                ),
            );
            assert!(reply.starts_with("HTTP/1.1 200"), "{method}: {reply}");
        }
        let huge = format!(
            "GET /products/1/related HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        let reply = request(port, &huge);
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "oversized header: {reply}"
        );
    }
}

#[test]
fn one_client_past_its_burst_gets_429_and_loopback_can_be_exempt() {
    let dir = test_dir();
    let up = tiny_upstream("ok");
    let get = "GET /products/1/related HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let limited = NginxSettings {
        client_limits: Some(ClientLimits {
            requests_per_second: 1,
            burst: 5,
            connections: 64,
            exempt: vec![],
        }),
        ..NginxSettings::tuned()
    };
    let nginx = Nginx::start(&limited, dir.path(), &[up], None).unwrap();
    let statuses: Vec<String> = (0..20)
        .map(|_| request(nginx.port(), get)[9..12].to_string())
        .collect();
    let ok = statuses.iter().filter(|s| *s == "200").count();
    let refused = statuses.iter().filter(|s| *s == "429").count();
    assert_eq!(ok + refused, 20, "{statuses:?}");
    assert!(
        (6..=8).contains(&ok),
        "the burst of 5 and about one more: {statuses:?}"
    );
    let refused_reply = request(nginx.port(), get);
    assert_json_error(&refused_reply, "429", "rate_limited");
    drop(nginx);

    // The default exempts loopback, where the load generator runs.
    let dir = test_dir();
    let nginx = Nginx::start(&NginxSettings::tuned(), dir.path(), &[up], None).unwrap();
    for _ in 0..300 {
        assert!(request(nginx.port(), get).starts_with("HTTP/1.1 200"));
    }
}

/// A reply is `status` with the API's JSON error `code` as its body, sent as JSON.
fn assert_json_error(reply: &str, status: &str, code: &str) {
    assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{reply}"
    );
    assert!(body.starts_with("{\"error\":\""), "{reply}");
    assert!(body.contains(&format!("\"code\":\"{code}\"")), "{reply}");
}

/// What nginx itself refuses, or cannot get from an instance, answers in the API's JSON error
/// format rather than nginx's HTML pages; its own status page is not served.
#[test]
fn nginx_answers_its_own_errors_in_json() {
    let dir = test_dir();
    let up = tiny_upstream("from the api");
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for settings in [NginxSettings::tuned(), NginxSettings::untuned()] {
        let nginx = Nginx::start(&settings, dir.path(), &[up], None).unwrap();
        let port = nginx.port();
        let close = "Host: t\r\nConnection: close\r\n\r\n";
        let huge_header = request(
            port,
            &format!(
                "GET /products/1/related HTTP/1.1\r\nX-Big: {}\r\n{close}",
                "a".repeat(16 * 1024)
            ),
        );
        assert_json_error(&huge_header, "400", "bad_request");
        let long_uri = request(
            port,
            &format!(
                "GET /products/1/related?{} HTTP/1.1\r\n{close}",
                "a".repeat(16 * 1024)
            ),
        );
        assert_json_error(&long_uri, "414", "uri_too_long");
        let body = request(
            port,
            &format!(
                "GET /products/1/related HTTP/1.1\r\nContent-Length: 4096\r\n{close}{}",
                "a".repeat(4096)
            ),
        );
        assert_json_error(&body, "413", "body_too_large");
        let internal = request(
            port,
            &format!("GET /.errors/rate_limited HTTP/1.1\r\n{close}"),
        );
        assert_json_error(&internal, "404", "not_found");
        let status_page = request(port, &format!("GET /nginx_status HTTP/1.1\r\n{close}"));
        assert!(status_page.ends_with("from the api"), "{status_page}");
        let post_health = request(
            port,
            &format!("POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n{close}"),
        );
        assert!(post_health.starts_with("HTTP/1.1 405"), "{post_health}");
        drop(nginx);

        let nginx = Nginx::start(&settings, dir.path(), &[dead], None).unwrap();
        let gone = request(
            nginx.port(),
            &format!("GET /products/1/related HTTP/1.1\r\n{close}"),
        );
        assert_json_error(&gone, "502", "no_instance");
    }
}
