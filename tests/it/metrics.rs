//! /metrics: what users graph, counted from real traffic.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::backend::closed_port;
use crate::common::{http_client, Backend, Ballast, TestCa};

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn requests_connections_and_balancer_answers_are_counted() {
    let backend = Backend::start("b").await;
    let refused = closed_port().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "site", &["m.test"]);
    let config = format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[certificates]]
name = "site"
cert = "site.pem"
key = "site.key"

[[listeners]]
name = "lb"
protocol = "http"
bind = "127.0.0.1:0"
default_action = {{ type = "forward", target_group = "g" }}

  [[listeners.rules]]
  priority = 1
  conditions = {{ path = ["/missing"] }}
  action = {{ type = "fixed_response", status = 404 }}

  [[listeners.rules]]
  priority = 2
  conditions = {{ path = ["/empty"] }}
  action = {{ type = "forward", target_group = "empty" }}

  [[listeners.rules]]
  priority = 3
  conditions = {{ path = ["/down"] }}
  action = {{ type = "forward", target_group = "down" }}

[[listeners]]
name = "secure"
protocol = "https"
bind = "127.0.0.1:0"
certificates = ["site"]
default_action = {{ type = "fixed_response", status = 200 }}

[[target_groups]]
name = "g"
targets = [{}]

[[target_groups]]
name = "empty"

[[target_groups]]
name = "down"
targets = [{{ address = "{refused}" }}]
"#,
        backend.target()
    );
    let ballast = Ballast::start_in(dir, &config);
    let c = http_client();
    let url = ballast.url("lb");
    for _ in 0..3 {
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(format!("{url}/missing")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(format!("{url}/empty")).send().await.unwrap().status(), 503);
    assert_eq!(c.get(format!("{url}/down")).send().await.unwrap().status(), 502);
    // Plain text to a TLS listener: a failed handshake.
    let mut raw = tokio::net::TcpStream::connect(ballast.addr("secure")).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;

    let metrics_url = format!("http://{}/metrics", ballast.addr("admin"));
    let healthy = r#"ballast_healthy_targets{target_group="g"}"#;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = c.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        // The handshake error is counted just after its connection closes, possibly on another
        // worker thread than the one answering /metrics: wait for it too.
        let counted = sample(&text, "ballast_tls_handshake_errors_total") == Some(1.0);
        if (sample(&text, healthy) == Some(1.0) && counted) || tokio::time::Instant::now() > end {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    };
    expect(r#"ballast_requests_total{listener="lb",target_group="g",code_class="2xx"}"#, 3.0);
    expect(r#"ballast_requests_total{listener="lb",target_group="",code_class="4xx"}"#, 1.0);
    expect(r#"ballast_requests_total{listener="lb",target_group="empty",code_class="5xx"}"#, 1.0);
    expect(r#"ballast_elb_responses_total{code="404"}"#, 1.0);
    expect(r#"ballast_elb_responses_total{code="503"}"#, 1.0);
    expect(r#"ballast_elb_responses_total{code="502"}"#, 1.0);
    expect(r#"ballast_target_connection_errors_total{target_group="down"}"#, 1.0);
    expect(r#"ballast_target_response_seconds_count{target_group="g"}"#, 3.0);
    expect(r#"ballast_tls_handshake_errors_total"#, 1.0);
    expect(r#"ballast_healthy_targets{target_group="g"}"#, 1.0);
    let new = sample(&text, r#"ballast_new_connections_total{listener="lb"}"#).unwrap_or(0.0);
    assert!(new >= 1.0, "{text}");
    let bytes = sample(&text, r#"ballast_processed_bytes_total{listener="lb"}"#).unwrap_or(0.0);
    assert!(bytes > 200.0, "{text}");
    assert!(text.contains("# TYPE ballast_active_connections gauge"), "{text}");
}
