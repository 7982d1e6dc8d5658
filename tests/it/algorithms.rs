//! Each algorithm over real targets: the order and the spread a user can observe.

use std::time::Duration;

use crate::common::{http_client, wait_until, Backend, Ballast};

async fn group_of(n: usize, algorithm: &str, weights: &[u32]) -> (Ballast, Vec<Backend>) {
    let mut backends = Vec::new();
    for i in 0..n {
        backends.push(Backend::start(&((b'a' + i as u8) as char).to_string()).await);
    }
    let targets: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{{ address = \"{}\", weight = {} }}", b.addr, weights.get(i).copied().unwrap_or(1)))
        .collect();
    let config = format!(
        r#"
[[listeners]]
name = "lb"
protocol = "http"
bind = "127.0.0.1:0"
default_action = {{ type = "forward", target_group = "g" }}

[[target_groups]]
name = "g"
algorithm = "{algorithm}"
targets = [{}]
"#,
        targets.join(", ")
    );
    (Ballast::start(&config), backends)
}

async fn sequence(ballast: &Ballast, n: usize) -> String {
    let c = http_client();
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(&c.get(ballast.url("lb")).send().await.unwrap().text().await.unwrap());
    }
    out
}

#[tokio::test]
async fn round_robin_takes_targets_in_turn() {
    let (ballast, _b) = group_of(3, "round_robin", &[5, 1, 1]).await;
    assert_eq!(sequence(&ballast, 9).await, "abcabcabc");
}

#[tokio::test]
async fn weighted_round_robin_is_smooth() {
    let (ballast, _b) = group_of(3, "weighted_round_robin", &[5, 1, 1]).await;
    assert_eq!(sequence(&ballast, 14).await, "aabacaaaabacaa");
}

#[tokio::test]
async fn random_reaches_every_target() {
    let (ballast, backends) = group_of(3, "random", &[]).await;
    let got = sequence(&ballast, 120).await;
    for b in &backends {
        let n = got.matches(b.name.as_str()).count();
        assert!(n >= 15, "{} got {n} of 120: {got}", b.name);
    }
}

/// A slow request pins target `a`; the next requests must avoid it.
async fn busy_target_is_avoided(algorithm: &str) {
    let (ballast, backends) = group_of(2, algorithm, &[]).await;
    let c = http_client();
    let url = ballast.url("lb");
    // Find which target takes the first request and keep it busy for a while.
    let slow = tokio::spawn({
        let c = c.clone();
        let url = url.clone();
        async move { c.get(format!("{url}/sleep/1500")).send().await.unwrap().text().await.unwrap() }
    });
    assert!(wait_until(Duration::from_secs(5), || backends.iter().any(|b| b.in_flight() == 1)).await);
    let busy = backends.iter().find(|b| b.in_flight() == 1).unwrap().name.clone();
    let got = sequence(&ballast, 6).await;
    assert!(!got.contains(busy.as_str()), "{algorithm}: busy target {busy} got requests: {got}");
    assert_eq!(slow.await.unwrap(), busy);
}

#[tokio::test]
async fn least_outstanding_requests_avoids_a_busy_target() {
    busy_target_is_avoided("least_outstanding_requests").await;
}

#[tokio::test]
async fn least_connections_avoids_a_busy_target() {
    busy_target_is_avoided("least_connections").await;
}
