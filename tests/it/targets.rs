//! Targets that come and go: health checks, passive marks, draining, slow start, stickiness
//! and zones, over real backends that start, fail their checks and stop.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{http_client, wait_until, Backend, Ballast};

/// Fast checks, so states change within a test's patience.
const FAST_CHECKS: &str =
    r#"health_check = { interval = "200ms", timeout = "150ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

fn config(group_extra: &str, targets: &[String], listener_extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "lb"
protocol = "http"
bind = "127.0.0.1:0"
{listener_extra}
default_action = {{ type = "forward", target_group = "g" }}

[[target_groups]]
name = "g"
{FAST_CHECKS}
{group_extra}
targets = [{}]
"#,
        targets.join(", ")
    )
}

/// `address → (state, reason)` of group `g`, from the admin API.
async fn states(ballast: &Ballast) -> HashMap<String, (String, Option<String>)> {
    let url = format!("http://{}/api/v1/target-groups/g/targets", ballast.addr("admin"));
    let list: Vec<serde_json::Value> = http_client().get(url).send().await.unwrap().json().await.unwrap();
    list.into_iter()
        .map(|t| {
            let address = t["address"].as_str().unwrap_or_default().to_string();
            let state = t["state"].as_str().unwrap_or_default().to_string();
            (address, (state, t["reason"].as_str().map(str::to_string)))
        })
        .collect()
}

async fn wait_for_state(ballast: &Ballast, backend: &Backend, state: &str) -> (String, Option<String>) {
    let address = backend.addr.to_string();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = states(ballast).await.remove(&address).unwrap_or_default();
        if now.0 == state || tokio::time::Instant::now() > end {
            assert_eq!(now.0, state, "{address} never became {state}");
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn names_of(ballast: &Ballast, n: usize) -> Vec<String> {
    let c = http_client();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.get(ballast.url("lb")).send().await.unwrap().text().await.unwrap());
    }
    out
}

#[tokio::test]
async fn failing_checks_take_a_target_out_and_passing_ones_bring_it_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let ballast = Ballast::start(&config("", &[a.target(), b.target()], ""));
    wait_for_state(&ballast, &a, "healthy").await;
    wait_for_state(&ballast, &b, "healthy").await;

    b.set_health_status(500);
    let (_, reason) = wait_for_state(&ballast, &b, "unhealthy").await;
    assert_eq!(reason.as_deref(), Some("Target.ResponseCodeMismatch"));
    assert!(names_of(&ballast, 10).await.iter().all(|n| n == "a"), "an unhealthy target got traffic");

    b.set_health_status(200);
    let (_, reason) = wait_for_state(&ballast, &b, "healthy").await;
    assert_eq!(reason, None);
    assert!(names_of(&ballast, 10).await.iter().any(|n| n == "b"));
}

#[tokio::test]
async fn a_target_in_the_file_serves_after_its_first_pass() {
    let a = Backend::start("a").await;
    // Five passes at 10 s would take 50 s; the first pass is enough at start.
    let group = r#"health_check = { interval = "10s", timeout = "1s", healthy_threshold = 5 }"#;
    let ballast = Ballast::start(&config(group, &[a.target()], "").replace(FAST_CHECKS, ""));
    let (state, reason) = wait_for_state(&ballast, &a, "healthy").await;
    assert_eq!((state.as_str(), reason), ("healthy", None));
}

#[tokio::test]
async fn with_every_target_unhealthy_the_group_fails_open() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.set_health_status(503);
    b.set_health_status(503);
    let ballast = Ballast::start(&config("", &[a.target(), b.target()], ""));
    wait_for_state(&ballast, &a, "unhealthy").await;
    wait_for_state(&ballast, &b, "unhealthy").await;
    let names = names_of(&ballast, 10).await;
    assert!(names.contains(&"a".to_string()) && names.contains(&"b".to_string()), "{names:?}");
}

#[tokio::test]
async fn a_target_that_breaks_is_marked_down_before_its_next_check() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let slow_checks = r#"health_check = { interval = "60s", timeout = "1s", healthy_threshold = 2 }"#;
    let ballast = Ballast::start(&config(slow_checks, &[a.target(), b.target()], "").replace(FAST_CHECKS, ""));
    wait_for_state(&ballast, &a, "healthy").await;
    wait_for_state(&ballast, &b, "healthy").await;
    b.stop();
    let c = http_client();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(c.get(ballast.url("lb")).send().await.unwrap().status().as_u16());
    }
    // At most the first request that met the dead target fails; every later one reaches a.
    let failures = statuses.iter().filter(|s| **s == 502).count();
    assert!(failures <= 1, "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 200), "{statuses:?}");
    let (state, reason) = wait_for_state(&ballast, &b, "unhealthy").await;
    assert_eq!((state.as_str(), reason.as_deref()), ("unhealthy", Some("Target.ConnectionFailed")));
}

#[tokio::test]
async fn a_target_dropped_from_the_file_drains_its_requests_and_websockets() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let drain = "deregistration_delay = \"1500ms\"";
    let ballast = Ballast::start(&config(drain, &[b.target()], ""));
    wait_for_state(&ballast, &b, "healthy").await;

    let slow = tokio::spawn({
        let url = ballast.url("lb");
        async move { http_client().get(format!("{url}/sleep/800")).send().await.unwrap().text().await.unwrap() }
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", ballast.addr("lb"))).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || b.in_flight() >= 1).await);

    ballast.rewrite_config(&config(drain, &[a.target()], ""));
    ballast.hangup();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = states(&ballast).await;
        if s.get(&b.addr.to_string()).map(|x| x.0.as_str()) == Some("draining") {
            assert_eq!(s[&b.addr.to_string()].1.as_deref(), Some("Target.DeregistrationInProgress"));
            break;
        }
        assert!(tokio::time::Instant::now() < end, "b never drained: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New requests go to a only; the request in flight on b finishes normally.
    assert!(names_of(&ballast, 5).await.iter().all(|n| n == "a"));
    assert_eq!(slow.await.unwrap(), "b");
    // The WebSocket still works while draining...
    ws.send(Message::Text("still there".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("b: still there".into()));
    // ...and is closed when the delay ends.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the WebSocket outlived the deregistration delay");
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while states(&ballast).await.contains_key(&b.addr.to_string()) {
        assert!(tokio::time::Instant::now() < end, "b was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn slow_start_ramps_a_returning_target_up() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    b.set_health_status(500);
    let ballast = Ballast::start(&config("slow_start = \"3s\"", &[a.target(), b.target()], ""));
    wait_for_state(&ballast, &a, "healthy").await;
    wait_for_state(&ballast, &b, "unhealthy").await;
    // Let a leave its own slow start.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    b.set_health_status(200);
    wait_for_state(&ballast, &b, "healthy").await;
    let early = names_of(&ballast, 60).await.iter().filter(|n| *n == "b").count();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let late = names_of(&ballast, 60).await.iter().filter(|n| *n == "b").count();
    assert!(early < 15, "b got {early} of 60 just after turning healthy");
    assert!((22..=38).contains(&late), "b got {late} of 60 after slow start");
}

fn cookie_pair(resp: &reqwest::Response, name_prefix: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(name_prefix))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn lb_cookie_sticks_and_forged_or_stale_cookies_are_ignored() {
    let backends = [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await];
    let targets: Vec<String> = backends.iter().map(Backend::target).collect();
    let sticky = "stickiness = { type = \"lb_cookie\", duration = \"1h\" }";
    let ballast = Ballast::start(&config(sticky, &targets, ""));
    for b in &backends {
        wait_for_state(&ballast, b, "healthy").await;
    }
    let c = http_client();
    let first = c.get(ballast.url("lb")).send().await.unwrap();
    let cookie = cookie_pair(&first, "BALLAST-g=").expect("a stickiness cookie");
    let stuck_to = first.text().await.unwrap();
    for _ in 0..9 {
        let resp = c.get(ballast.url("lb")).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), stuck_to);
    }

    // A forged value (one character changed) names nothing: requests rotate again.
    let mut forged = cookie.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(c.get(ballast.url("lb")).header("cookie", &forged).send().await.unwrap().text().await.unwrap());
    }
    assert!(seen.len() > 1, "a forged cookie still picked one target: {seen:?}");

    // A cookie naming an unhealthy target is rebalanced and re-stuck elsewhere.
    let stuck = backends.iter().find(|b| b.name == stuck_to).unwrap();
    stuck.set_health_status(500);
    wait_for_state(&ballast, stuck, "unhealthy").await;
    let resp = c.get(ballast.url("lb")).header("cookie", &cookie).send().await.unwrap();
    let new_cookie = cookie_pair(&resp, "BALLAST-g=").expect("re-stuck");
    let moved_to = resp.text().await.unwrap();
    assert_ne!(moved_to, stuck_to);
    for _ in 0..5 {
        let resp = c.get(ballast.url("lb")).header("cookie", &new_cookie).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), moved_to);
    }
}

#[tokio::test]
async fn app_cookie_follows_the_applications_session() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let targets: Vec<String> = backends.iter().map(Backend::target).collect();
    let sticky = "stickiness = { type = \"app_cookie\", cookie = \"SESSIONID\", duration = \"1h\" }";
    let ballast = Ballast::start(&config(sticky, &targets, ""));
    for b in &backends {
        wait_for_state(&ballast, b, "healthy").await;
    }
    let c = http_client();
    let plain = c.get(ballast.url("lb")).send().await.unwrap();
    assert!(cookie_pair(&plain, "BALLAST-APP-g=").is_none(), "no session, no stickiness");
    let login = c.get(format!("{}/login", ballast.url("lb"))).send().await.unwrap();
    let ours = cookie_pair(&login, "BALLAST-APP-g=").expect("stuck when the app set its cookie");
    let app = cookie_pair(&login, "SESSIONID=").expect("the application's own cookie passes");
    let stuck_to = login.text().await.unwrap();
    let both = format!("{app}; {ours}");
    for _ in 0..8 {
        let resp = c.get(ballast.url("lb")).header("cookie", &both).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), stuck_to);
    }
    // Without the application's cookie the session is over: requests rotate.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(c.get(ballast.url("lb")).header("cookie", &ours).send().await.unwrap().text().await.unwrap());
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn without_cross_zone_traffic_stays_in_the_listeners_zone_until_it_has_no_healthy_target() {
    let here = Backend::start("here").await;
    let there = Backend::start("there").await;
    let targets = [
        format!("{{ address = \"{}\", zone = \"a\" }}", here.addr),
        format!("{{ address = \"{}\", zone = \"b\" }}", there.addr),
    ];
    let ballast = Ballast::start(&config("cross_zone = false", &targets, "zone = \"a\""));
    wait_for_state(&ballast, &here, "healthy").await;
    wait_for_state(&ballast, &there, "healthy").await;
    assert!(names_of(&ballast, 10).await.iter().all(|n| n == "here"));
    here.set_health_status(500);
    wait_for_state(&ballast, &here, "unhealthy").await;
    assert!(names_of(&ballast, 10).await.iter().all(|n| n == "there"));
}

#[tokio::test]
async fn with_cross_zone_every_zone_shares_the_traffic() {
    let here = Backend::start("here").await;
    let there = Backend::start("there").await;
    let targets = [
        format!("{{ address = \"{}\", zone = \"a\" }}", here.addr),
        format!("{{ address = \"{}\", zone = \"b\" }}", there.addr),
    ];
    let ballast = Ballast::start(&config("cross_zone = true", &targets, "zone = \"a\""));
    wait_for_state(&ballast, &here, "healthy").await;
    wait_for_state(&ballast, &there, "healthy").await;
    let names = names_of(&ballast, 10).await;
    assert_eq!(names.iter().filter(|n| *n == "there").count(), 5, "{names:?}");
}
