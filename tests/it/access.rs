//! Who may come in and how often: allow/deny rules, connection limits and rate limits, on L7
//! and L4 listeners, each rejection counted by reason.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::common::raw_target::connect_from;
use crate::common::{http_client, metric, Backend, Ballast};

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().expect("an address")
}

fn config(listener_extra: &str, rules: &str, backend: &Backend) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "web"
protocol = "http"
bind = "127.0.0.1:0"
{listener_extra}
default_action = {{ type = "forward", target_group = "g" }}
{rules}

[[target_groups]]
name = "g"
targets = [{}]
"#,
        backend.target()
    )
}

/// Sends one request on `stream` and returns the status line, or `None` if the connection
/// was closed without an answer.
async fn status_line(stream: &mut TcpStream) -> Option<String> {
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().filter(|l| !l.is_empty()).map(str::to_string)
}

#[tokio::test]
async fn deny_and_allow_decide_before_any_byte_is_read() {
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&config(
        r#"allow = ["127.0.0.0/8"]
deny = ["127.0.0.2/32"]"#,
        "",
        &backend,
    ));
    let mut allowed = connect_from(ip("127.0.0.1"), ballast.addr("web")).await;
    assert_eq!(status_line(&mut allowed).await.as_deref(), Some("HTTP/1.1 200 OK"));
    let mut denied = connect_from(ip("127.0.0.2"), ballast.addr("web")).await;
    assert_eq!(status_line(&mut denied).await, None, "a denied client got an answer");
    assert_eq!(metric(&ballast, r#"ballast_rejected_requests_total{listener="web",reason="ip_denied"}"#).await, 1.0);
    assert_eq!(backend.seen().len(), 1);
}

#[tokio::test]
async fn ip_rules_apply_to_tcp_and_udp_listeners_too() {
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let tcp_target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_target_addr = tcp_target.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp_target.accept().await {
            let _ = s.write_all(b"hello").await;
        }
    });
    let ballast = Ballast::start(&format!(
        r#"
[[listeners]]
name = "udp"
protocol = "udp"
bind = "127.0.0.1:0"
deny = ["127.0.0.2"]
default_action = {{ type = "forward", target_group = "u" }}

[[listeners]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:0"
deny = ["127.0.0.2"]
default_action = {{ type = "forward", target_group = "t" }}

[[target_groups]]
name = "u"
protocol = "udp"
targets = [{{ address = "{echo_addr}" }}]

[[target_groups]]
name = "t"
protocol = "tcp"
targets = [{{ address = "{tcp_target_addr}" }}]
"#
    ));
    for (source, answered) in [("127.0.0.1", true), ("127.0.0.2", false)] {
        let client = UdpSocket::bind(format!("{source}:0")).await.unwrap();
        client.send_to(b"ping", ballast.addr("udp")).await.unwrap();
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_millis(1500), client.recv_from(&mut buf)).await.is_ok();
        assert_eq!(got, answered, "udp from {source}");

        let mut tcp = connect_from(ip(source), ballast.addr("tcp")).await;
        let mut text = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut text)).await;
        assert_eq!(text == b"hello", answered, "tcp from {source}: {text:?}");
    }
}

#[tokio::test]
async fn connection_limits_per_ip_and_in_all() {
    let backend = Backend::start("b").await;
    let extra = "  [listeners.limits]\n  max_connections_per_ip = 2\n  max_connections = 3\n";
    // The limits table must come after the listener's plain keys.
    let cfg = config("", "", &backend).replace(
        "default_action = { type = \"forward\", target_group = \"g\" }\n",
        &format!("default_action = {{ type = \"forward\", target_group = \"g\" }}\n{extra}"),
    );
    let ballast = Ballast::start(&cfg);
    let addr = ballast.addr("web");
    let mut first = connect_from(ip("127.0.0.1"), addr).await;
    let mut second = connect_from(ip("127.0.0.1"), addr).await;
    assert!(status_line(&mut first).await.is_some());
    assert!(status_line(&mut second).await.is_some());
    let mut third = connect_from(ip("127.0.0.1"), addr).await;
    assert_eq!(status_line(&mut third).await, None, "a third connection from one address");
    // Another address still gets in, up to the listener's total of three.
    let mut other = connect_from(ip("127.0.0.3"), addr).await;
    assert!(status_line(&mut other).await.is_some());
    let mut fourth = connect_from(ip("127.0.0.4"), addr).await;
    assert_eq!(status_line(&mut fourth).await, None, "a fourth connection in all");
    // Closing one frees its place.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let mut c = connect_from(ip("127.0.0.1"), addr).await;
        if let Some(line) = status_line(&mut c).await {
            again = Some(line);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again.as_deref(), Some("HTTP/1.1 200 OK"));
    assert!(
        metric(&ballast, r#"ballast_rejected_requests_total{listener="web",reason="max_connections_per_ip"}"#).await
            >= 1.0
    );
    assert!(
        metric(&ballast, r#"ballast_rejected_requests_total{listener="web",reason="max_connections"}"#).await >= 1.0
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let backend = Backend::start("b").await;
    let rules = r#"
  [listeners.rate_limit]
  per_ip = 1000
  burst = 1000

  [[listeners.rules]]
  priority = 1
  conditions = { path = ["/api/*"] }
  action = { type = "forward", target_group = "g" }
  rate_limit = { per_ip = 1, burst = 3 }
"#;
    let ballast = Ballast::start(&config("", rules, &backend));
    let c = http_client();
    let url = ballast.url("web");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = c.get(format!("{url}/api/items")).send().await.unwrap();
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    // Paths outside the rule only meet the listener's generous limit.
    for _ in 0..10 {
        assert_eq!(c.get(format!("{url}/other")).send().await.unwrap().status(), 200);
    }
    assert_eq!(metric(&ballast, r#"ballast_rejected_requests_total{listener="web",reason="rate_limited"}"#).await, 2.0);
}

#[tokio::test]
async fn a_listener_rate_limit_covers_every_request() {
    let backend = Backend::start("b").await;
    let rules = "\n  [listeners.rate_limit]\n  per_ip = 2\n  burst = 2\n";
    let ballast = Ballast::start(&config("", rules, &backend));
    let c = http_client();
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(c.get(ballast.url("web")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(codes, vec![200, 200, 429, 429]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(c.get(ballast.url("web")).send().await.unwrap().status(), 200, "a token came back");
}
