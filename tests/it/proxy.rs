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
    // The client's host goes on as `:authority`, with no Host field that could differ from it
    // (RFC 9113, section 8.3.1); the connection still goes to the target.
    let resp =
        http_client().get(format!("{}/named", ballast.url("lb"))).header("host", "app.example").send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "b");
    let seen = backend.last();
    let authority = seen.uri.parse::<http::Uri>().ok().and_then(|u| u.authority().map(|a| a.to_string()));
    assert_eq!(authority.as_deref(), Some("app.example"), "{seen:?}");
    assert_eq!(seen.header("host"), None, "{seen:?}");
}

/// An HTTP/2 (h2c) target that answers `once` and then closes each connection (GOAWAY) after
/// its first request. Returns its address and how many of its connections carried a request.
async fn start_h2_closing_after_each_answer() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>)
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let (answered, mut done) = tokio::sync::mpsc::channel::<()>(1);
                let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
                let service = hyper::service::service_fn(move |_request: hyper::Request<hyper::body::Incoming>| {
                    let answered = answered.clone();
                    if first.swap(false, Ordering::Relaxed) {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    async move {
                        let _ = answered.try_send(());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new("once".to_string()))
                    }
                });
                let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    _ = done.recv() => connection.as_mut().graceful_shutdown(),
                }
                let _ = connection.await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_target_closing_its_connections_still_gets_every_request() {
    let (target, accepted) = start_h2_closing_after_each_answer().await;
    let extra = "protocol_version = \"http2\"\nhealth_check = { protocol = \"tcp\" }";
    let ballast = Ballast::start(&one_group(&format!("{{ address = \"{target}\" }}"), extra));
    for round in 0..5 {
        let resp = http_client().get(format!("{}/r{round}", ballast.url("lb"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {round}");
        assert_eq!(resp.text().await.unwrap(), "once");
        // Time for the target's GOAWAY and close to reach ballast (a request that crosses
        // them in flight is refused by the target: that race is not this test's).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each request after the first found its connection closed, and went on another.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 5);
}

/// An HTTP/2 (h2c) target that refuses the first stream of each connection (`REFUSED_STREAM`)
/// and answers `second try` on the others. Returns its address and the streams it refused.
async fn start_h2_refusing_first_streams() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&refused);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                // The TCP health check connects and leaves: no handshake.
                let Ok(mut connection) = h2::server::handshake(tcp).await else { return };
                let mut first = true;
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    if std::mem::take(&mut first) {
                        counted.fetch_add(1, Ordering::Relaxed);
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let Ok(mut body) = respond.send_response(hyper::Response::new(()), false) else { continue };
                    let _ = body.send_data(bytes::Bytes::from_static(b"second try"), true);
                }
            });
        }
    });
    (addr, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_an_http2_target_refuses_unprocessed_goes_again_when_it_has_no_body() {
    let extra = "protocol_version = \"http2\"\nhealth_check = { protocol = \"tcp\" }";
    let (target, refused) = start_h2_refusing_first_streams().await;
    let ballast = Ballast::start(&one_group(&format!("{{ address = \"{target}\" }}"), extra));
    let resp = http_client().get(format!("{}/again", ballast.url("lb"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "second try");
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1, "refused once, then served");

    // A body is not sent twice: the client hears of the refusal, and the target stays in use.
    let (target, refused) = start_h2_refusing_first_streams().await;
    let admin = "[admin]\nbind = \"127.0.0.1:0\"\n";
    let ballast = Ballast::start(&format!("{admin}{}", one_group(&format!("{{ address = \"{target}\" }}"), extra)));
    let resp = http_client().post(format!("{}/pay", ballast.url("lb"))).body("once only").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("refused the request unprocessed"));
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    let listed = crate::common::targets_of(&ballast, "g").await;
    assert_eq!(listed[0]["state"], "healthy", "a refusal is no failure of the target: {listed}");
}

/// An HTTP/2 (h2c) target answering `slow` after 100 ms; counts its connections that carried
/// a request.
async fn start_h2_slow_counting() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let carrying = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&carrying);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            let first = Arc::new(AtomicBool::new(true));
            let service = hyper::service::service_fn(move |_request: hyper::Request<hyper::body::Incoming>| {
                if first.swap(false, Ordering::Relaxed) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new("slow".to_string()))
                }
            });
            let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            tokio::spawn(builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service));
        }
    });
    (addr, carrying)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_together_share_one_http2_connection_to_their_target() {
    let (target, carrying) = start_h2_slow_counting().await;
    let extra = "protocol_version = \"http2\"\nhealth_check = { protocol = \"tcp\" }";
    let runtime = "[runtime]\nworker_threads = 1\n";
    let ballast = Ballast::start(&format!("{runtime}{}", one_group(&format!("{{ address = \"{target}\" }}"), extra)));
    let client = crate::common::h2c_client();
    let asks = (0..20).map(|i| {
        let request = client.get(format!("{}/together/{i}", ballast.url("lb")));
        async move { request.send().await.unwrap().text().await.unwrap() }
    });
    let answers = futures_util::future::join_all(asks).await;
    assert!(answers.iter().all(|a| a == "slow"), "{answers:?}");
    assert_eq!(carrying.load(std::sync::atomic::Ordering::Relaxed), 1, "one multiplexed connection");
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
async fn a_kept_alive_connection_times_each_answer_from_its_own_request() {
    // The connection's one timer is moved by every request and every idle wait (60 s here): a
    // slow answer after quick ones still ends at target_timeout, and the connection goes on.
    let backend = Backend::start("slow").await;
    let ballast = Ballast::start(&one_group(&backend.target(), "target_timeout = \"500ms\""));
    let client = http_client();
    let quick = format!("{}/sleep/10", ballast.url("lb"));
    for _ in 0..3 {
        assert_eq!(client.get(&quick).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = std::time::Instant::now();
    let resp = client.get(format!("{}/sleep/3000", ballast.url("lb"))).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert_eq!(client.get(&quick).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_upload_to_a_slow_target_also_ends_at_target_timeout() {
    // While the body comes, the guard times it on the connection's timer: the answer is timed
    // on one of its own.
    let backend = Backend::start("slow").await;
    let ballast = Ballast::start(&one_group(&backend.target(), "target_timeout = \"500ms\""));
    let mut tcp = TcpStream::connect(ballast.addr("lb")).await.unwrap();
    let started = std::time::Instant::now();
    tcp.write_all(b"POST /sleep/3000 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(b"67890").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    let elapsed = started.elapsed();
    assert!(got.starts_with(b"HTTP/1.1 504"), "{}", String::from_utf8_lossy(&got));
    assert!(elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(2500), "{elapsed:?}");
}

#[tokio::test]
async fn idle_keep_alive_connections_hold_no_memory_for_the_heads_they_carried() {
    // Browsers send heads of a kilobyte or more (cookies); a connection waiting for its next
    // request keeps nothing of the last one.
    const CONNECTIONS: usize = 300;
    const HEAD_FILL: usize = 16 * 1024;
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&one_group(&backend.target(), ""));
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n", "c".repeat(HEAD_FILL));
    // One connection first, so that what every process allocates once is in the baseline.
    let mut held = vec![keep_alive_after_one_request(&ballast, &request).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ballast.rss_kib();
    for _ in 1..CONNECTIONS {
        held.push(keep_alive_after_one_request(&ballast, &request).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_connection = (ballast.rss_kib().saturating_sub(before) * 1024) as usize / (CONNECTIONS - 1);
    // A head kept by the guard, once read and once passed on, would be twice HEAD_FILL each.
    assert!(before > 0 && per_connection < 4 * 1024, "{per_connection} bytes held per idle connection");
    // They are still open and served.
    let mut tcp = held.pop().expect("connections");
    tcp.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
}

/// A client connection to `lb` that has sent `request` and read its answer.
async fn keep_alive_after_one_request(ballast: &Ballast, request: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(ballast.addr("lb")).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    tcp
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
