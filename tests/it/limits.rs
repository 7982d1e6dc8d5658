//! What one client may cost: `[listeners.limits]` sizes (431, 414, 413, a chunked body cut off)
//! and timeouts (slowloris, slow POST, idle keep-alive), over raw sockets and h2c.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::raw_target::{connect_from, exchange, Exchange, RawRequest, RawTarget, Waits};
use crate::common::{wait_until, Backend, Ballast};

/// The limits every test here runs with: all of them low.
const LOW: &str = r#"header_timeout = "1s"
  body_timeout = "1s"
  idle_timeout = "1s"
  max_header_bytes = 1024
  max_uri_bytes = 256
  max_body_bytes = 1000"#;

/// A listener with every limit set low, in front of `target`.
fn config(target: &str) -> String {
    config_with(target, LOW)
}

/// A listener with `limits` (the lines of its `[listeners.limits]`), in front of `target`.
fn config_with(target: &str, limits: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "web"
protocol = "http"
bind = "127.0.0.1:0"
default_action = {{ type = "forward", target_group = "g" }}

  [listeners.limits]
  {limits}

[[target_groups]]
name = "g"
health_check = {{ protocol = "tcp" }}
targets = [{target}]
"#
    )
}

fn start() -> (Ballast, RawTarget) {
    let target = RawTarget::start();
    (Ballast::start(&config(&target.target())), target)
}

/// Each request from its own loopback address, so the target's records tell them apart.
fn source(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 40, 0, i))
}

async fn send(ballast: &Ballast, from: u8, wire: &[u8]) -> Exchange {
    let mut tcp = connect_from(source(from), ballast.addr("web")).await;
    exchange(&mut tcp, wire, Waits::default()).await
}

/// What reached `target` from client `from`, once nothing is in flight there.
async fn reached(target: &RawTarget, from: u8) -> Vec<RawRequest> {
    wait_until(Duration::from_secs(5), || target.in_progress() == 0).await;
    target.requests().into_iter().filter(|r| r.client_ip() == Some(source(from))).collect()
}

async fn rejected(ballast: &Ballast, reason: &str) -> f64 {
    let text = crate::common::metrics_text(ballast).await;
    let series = format!(r#"ballast_rejected_requests_total{{listener="web",reason="{reason}"}} "#);
    text.lines().find_map(|l| l.strip_prefix(&series)?.trim().parse().ok()).unwrap_or(0.0)
}

/// Asserts a refusal: one answer with `status` and `Connection: close`, the connection closed.
fn assert_refused(got: &Exchange, status: u16) {
    assert_eq!(got.status(), Some(status), "{got:?}");
    assert_eq!(got.answers.len(), 1, "{got:?}");
    assert!(got.answers[0].closes(), "no Connection: close on the refusal: {got:?}");
    assert!(got.closed, "the connection stays open after a refusal");
}

#[tokio::test]
async fn a_head_over_max_header_bytes_gets_431() {
    let (ballast, target) = start();
    let fits = format!("GET /fits HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n", "p".repeat(700));
    let got = send(&ballast, 1, fits.as_bytes()).await;
    assert_eq!(got.status(), Some(200), "a 750-byte head is under the limit");
    let over = format!("GET /over HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n", "p".repeat(1100));
    let got = send(&ballast, 2, over.as_bytes()).await;
    assert_refused(&got, 431);
    assert!(reached(&target, 2).await.is_empty(), "the oversized head reached the target");
    // A head that never ends is cut at the limit too, without waiting for its end.
    let endless = format!("GET /endless HTTP/1.1\r\nHost: a\r\nX-Pad: {}", "p".repeat(1100));
    let got = send(&ballast, 3, endless.as_bytes()).await;
    assert_refused(&got, 431);
    assert!(rejected(&ballast, "header_too_large").await >= 2.0);
}

#[tokio::test]
async fn a_target_over_max_uri_bytes_gets_414() {
    let (ballast, target) = start();
    let fits = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(200));
    assert_eq!(send(&ballast, 1, fits.as_bytes()).await.status(), Some(200));
    let over = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(300));
    let got = send(&ballast, 2, over.as_bytes()).await;
    assert_refused(&got, 414);
    assert!(reached(&target, 2).await.is_empty(), "the long target reached the target");
    assert!(rejected(&ballast, "uri_too_long").await >= 1.0);
}

#[tokio::test]
async fn a_declared_body_over_max_body_bytes_gets_413() {
    let (ballast, target) = start();
    let body = "b".repeat(1000);
    let fits = format!("POST /fits HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{body}");
    assert_eq!(send(&ballast, 1, fits.as_bytes()).await.status(), Some(200));
    assert_eq!(reached(&target, 1).await[0].body, body.as_bytes());
    let over = format!("POST /over HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n{body}b");
    let got = send(&ballast, 2, over.as_bytes()).await;
    assert_refused(&got, 413);
    assert!(reached(&target, 2).await.is_empty(), "the refused body reached the target");
    assert!(rejected(&ballast, "body_too_large").await >= 1.0);
}

#[tokio::test]
async fn a_chunked_body_growing_past_max_body_bytes_is_cut() {
    let (ballast, target) = start();
    let chunk = format!("c8\r\n{}\r\n", "c".repeat(200));
    let small = format!("POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    assert_eq!(send(&ballast, 1, small.as_bytes()).await.status(), Some(200));
    assert_eq!(reached(&target, 1).await[0].decoded_body().len(), 400);
    let big =
        format!("POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunk.repeat(8));
    let got = send(&ballast, 2, big.as_bytes()).await;
    assert!(got.closed, "the connection stays open: {got:?}");
    assert!(got.answers.iter().all(|a| a.status >= 400), "{got:?}");
    let reached = reached(&target, 2).await;
    assert!(reached.iter().all(|r| !r.complete), "a complete oversized request reached the target: {reached:?}");
}

/// Writes `wire` one byte every `every` until ballast ends the connection; returns how long it
/// took from the first byte, and what came back.
async fn trickle(tcp: &mut TcpStream, wire: &[u8], every: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut back = Vec::new();
    let mut buf = [0u8; 4096];
    let mut next = 0;
    let mut tick = tokio::time::interval(every);
    // Bounded by the wire's length, and by 10 s in all.
    while started.elapsed() < Duration::from_secs(10) {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if next >= wire.len() {
                    continue;
                }
                if tcp.write_all(&wire[next..next + 1]).await.is_err() {
                    break;
                }
                next += 1;
            }
        }
    }
    (started.elapsed(), back)
}

#[tokio::test]
async fn slowloris_is_cut_off_after_header_timeout() {
    let (ballast, target) = start();
    let mut tcp = connect_from(source(1), ballast.addr("web")).await;
    let wire = format!("GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: {}\r\n\r\n", "s".repeat(100));
    let (took, back) = trickle(&mut tcp, wire.as_bytes(), Duration::from_millis(200)).await;
    assert!(took >= Duration::from_millis(800) && took <= Duration::from_secs(3), "cut after {took:?}");
    assert!(back.is_empty(), "a half-sent head got an answer: {:?}", String::from_utf8_lossy(&back));
    assert!(reached(&target, 1).await.is_empty(), "a half-sent head reached the target");
}

#[tokio::test]
async fn a_slow_post_is_cut_off_after_body_timeout() {
    let (ballast, target) = start();
    let mut tcp = connect_from(source(1), ballast.addr("web")).await;
    tcp.write_all(
        format!("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{}", "h".repeat(50)).as_bytes(),
    )
    .await
    .unwrap();
    let stalled = Instant::now();
    let got = crate::common::raw_target::read_answers(
        &mut tcp,
        Waits { first: Duration::from_secs(6), quiet: Duration::from_secs(6), close: Duration::from_secs(6) },
        false,
    )
    .await;
    let took = stalled.elapsed();
    assert!(got.closed, "the stalled connection stays open: {got:?}");
    assert!(took >= Duration::from_millis(800) && took <= Duration::from_secs(3), "cut after {took:?}");
    assert!(got.answers.iter().all(|a| a.status >= 400), "{got:?}");
    let reached = reached(&target, 1).await;
    assert!(reached.iter().all(|r| !r.complete), "the half body passed as a complete request: {reached:?}");
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_idle_timeout() {
    let (ballast, _target) = start();
    let request = b"GET /keep HTTP/1.1\r\nHost: a\r\n\r\n";
    let idle = async {
        let mut tcp = connect_from(source(1), ballast.addr("web")).await;
        let got = exchange(&mut tcp, request, Waits { quiet: Duration::from_millis(1), ..Waits::default() }).await;
        assert_eq!(got.status(), Some(200));
        let since = Instant::now();
        let mut buf = [0u8; 64];
        let end = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "the idle connection was not closed: {end:?}");
        since.elapsed()
    };
    let busy = async {
        let mut tcp = connect_from(source(2), ballast.addr("web")).await;
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let got =
                exchange(&mut tcp, request, Waits { quiet: Duration::from_millis(300), ..Waits::default() }).await;
            assert!(!got.closed, "a busy connection was closed");
            statuses.push(got.status());
        }
        statuses
    };
    let (idle_for, statuses) = tokio::join!(idle, busy);
    assert!(
        idle_for >= Duration::from_millis(800) && idle_for <= Duration::from_secs(3),
        "idle connection closed after {idle_for:?}"
    );
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_header_timeout() {
    // Waiting for the next request is idleness, not a slow head: idle_timeout decides.
    let target = RawTarget::start();
    let ballast = Ballast::start(&config_with(&target.target(), "header_timeout = \"1s\"\n  idle_timeout = \"3s\""));
    let mut tcp = connect_from(source(1), ballast.addr("web")).await;
    let request = b"GET /keep HTTP/1.1\r\nHost: a\r\n\r\n";
    let got = exchange(&mut tcp, request, Waits { quiet: Duration::from_millis(1), ..Waits::default() }).await;
    assert_eq!(got.status(), Some(200));
    let since = Instant::now();
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(6), tcp.read(&mut buf)).await;
    let idle_for = since.elapsed();
    assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "the idle connection was not closed: {end:?}");
    assert!(
        idle_for >= Duration::from_millis(2500) && idle_for <= Duration::from_secs(5),
        "idle connection closed after {idle_for:?}, with header_timeout 1s and idle_timeout 3s"
    );
}

#[tokio::test]
async fn a_slow_answer_is_not_idleness() {
    let backend = Backend::start("slow").await;
    let ballast = Ballast::start(&config(&backend.target()));
    let mut tcp = TcpStream::connect(ballast.addr("web")).await.unwrap();
    let got = exchange(
        &mut tcp,
        b"GET /sleep/1500 HTTP/1.1\r\nHost: a\r\n\r\n",
        Waits { first: Duration::from_secs(5), ..Waits::default() },
    )
    .await;
    assert_eq!(got.status(), Some(200), "a request in flight longer than idle_timeout: {got:?}");
}

#[tokio::test]
async fn h2c_target_over_max_uri_bytes_gets_414() {
    let (ballast, target) = start();
    let client = crate::common::h2c_client();
    let ok = client.get(format!("{}/{}", ballast.url("web"), "u".repeat(200))).send().await.unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);
    let long = client.get(format!("{}/{}", ballast.url("web"), "u".repeat(300))).send().await.unwrap();
    assert_eq!(long.version(), reqwest::Version::HTTP_2);
    assert_eq!(long.status(), 414);
    assert!(target.requests().iter().all(|r| r.target().len() < 256), "the long target reached the target");
}
