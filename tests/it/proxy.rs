//! What passes through: headers, keep-alive and pipelining, HTTP/2 both sides, re-encryption,
//! and the balancer's own 502, 503 and 504.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::backend::{closed_port, start_hang_up};
use crate::common::{http_client, one_group, Backend, BackendOptions, Ballast, TestCa};

#[tokio::test]
async fn forwarded_headers_are_added_and_hop_by_hop_ones_removed() {
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&one_group(&backend.target(), ""));
    let port = ballast.addr("lb").port();
    assert_ne!(port, backend.addr.port(), "listener and target ports differ: port translation");
    let resp = http_client()
        .get(format!("{}/path?q=1", ballast.url("lb")))
        .header("host", "app.example:1234")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = backend.last();
    assert_eq!(seen.uri, "/path?q=1");
    assert_eq!(seen.header("host").as_deref(), Some("app.example:1234"));
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.header("x-forwarded-port"), Some(port.to_string()));
    assert_eq!(seen.header("x-end-to-end").as_deref(), Some("kept"));
    for hop in ["x-hop", "keep-alive", "te"] {
        assert_eq!(seen.header(hop), None, "{hop} reached the target");
    }
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&one_group(&backend.target(), ""));
    let mut tcp = TcpStream::connect(ballast.addr("lb")).await.unwrap();
    let three =
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp.write_all(three.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        while got.windows(b"\r\n\r\nb".len()).filter(|w| w == b"\r\n\r\nb").count() < 3 {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all).await.expect("three answers");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    let uris: Vec<String> = backend.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, vec!["/1", "/2", "/3"]);
    // The same client connection still works afterwards.
    tcp.write_all(b"GET /4 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
}

#[tokio::test]
async fn h2c_clients_reach_http1_targets() {
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&one_group(&backend.target(), ""));
    let client = crate::common::h2c_client();
    let resp = client.get(format!("{}/h2", ballast.url("lb"))).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.unwrap(), "b");
    let seen = backend.last();
    assert_eq!(seen.version, hyper::Version::HTTP_11);
    assert_eq!(seen.header("host"), Some(ballast.addr("lb").to_string()));
}

#[tokio::test]
async fn http2_target_groups_get_http2() {
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&one_group(&backend.target(), "protocol_version = \"http2\""));
    let resp = http_client().get(format!("{}/x", ballast.url("lb"))).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "b");
    assert_eq!(backend.last().version, hyper::Version::HTTP_2);
}

#[tokio::test]
async fn https_target_groups_re_encrypt() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    for version in ["http1", "http2"] {
        let backend =
            Backend::start_with("secure", BackendOptions { tls: Some((leaf.cert_pem.clone(), leaf.key_pem.clone())) })
                .await;
        let extra = format!("protocol = \"https\"\nprotocol_version = \"{version}\"");
        let ballast = Ballast::start(&one_group(&backend.target(), &extra));
        let resp = http_client().get(format!("{}/x", ballast.url("lb"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "secure");
        let seen = backend.last();
        assert!(seen.tls, "the target saw plain text");
        let expected = if version == "http2" { hyper::Version::HTTP_2 } else { hyper::Version::HTTP_11 };
        assert_eq!(seen.version, expected);
    }
}

#[tokio::test]
async fn a_group_without_targets_answers_503() {
    let ballast = Ballast::start(&one_group("", ""));
    let resp = http_client().get(ballast.url("lb")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("date"), "the balancer's own answer is dated: {:?}", resp.headers());
    assert!(resp.text().await.unwrap().contains("no target"));
}

#[tokio::test]
async fn a_refusing_or_breaking_target_answers_502() {
    let refused = closed_port().await;
    let ballast = Ballast::start(&one_group(&format!("{{ address = \"{refused}\" }}"), ""));
    let resp = http_client().get(ballast.url("lb")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("cannot connect"));

    let hang_up = start_hang_up().await;
    let ballast = Ballast::start(&one_group(&format!("{{ address = \"{hang_up}\" }}"), ""));
    let resp = http_client().get(ballast.url("lb")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("closed the connection"));
}

#[tokio::test]
async fn a_slow_target_answers_504_after_target_timeout() {
    let backend = Backend::start("slow").await;
    let ballast = Ballast::start(&one_group(&backend.target(), "target_timeout = \"300ms\""));
    let started = std::time::Instant::now();
    let resp = http_client().get(format!("{}/sleep/3000", ballast.url("lb"))).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(2500), "{elapsed:?}");
    // A quick request on the same group is fine.
    let resp = http_client().get(format!("{}/sleep/10", ballast.url("lb"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_keep_alive_connection_that_idled_serves_its_next_request() {
    // After a pause long enough for ballast to park the idle connection (out of hyper, no
    // buffers held), the same connection still carries the next request.
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&one_group(&backend.target(), ""));
    let mut tcp = TcpStream::connect(ballast.addr("lb")).await.unwrap();
    let mut buf = [0u8; 4096];
    for path in ["/first", "/after-a-pause"] {
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"), "{path}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let uris: Vec<String> = backend.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, vec!["/first", "/after-a-pause"]);
}
