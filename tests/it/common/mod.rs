//! Helpers shared by the black-box tests: the ballast process, backends, certificates, clients.

#![allow(dead_code)]

pub mod backend;
pub mod certs;
pub mod process;
pub mod raw_target;

pub use backend::{Backend, BackendOptions};
pub use certs::TestCa;
pub use process::Ballast;

use std::time::Duration;

/// A plain HTTP client that neither pools forever nor follows redirects.
pub fn http_client() -> reqwest::Client {
    certs::install_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain reqwest client builds")
}

/// An HTTP/2 client with prior knowledge (h2c), for plain `http` listeners.
pub fn h2c_client() -> reqwest::Client {
    certs::install_provider();
    reqwest::Client::builder().http2_prior_knowledge().build().expect("an h2c reqwest client builds")
}

/// Polls `check` every 20 ms until it holds or `deadline` passes.
pub async fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// A config with one `http` listener named `lb` forwarding to one group `g` with these
/// targets (`{ address = ... }` entries) and extra group keys.
pub fn one_group(target_lines: &str, group_extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "lb"
protocol = "http"
bind = "127.0.0.1:0"
default_action = {{ type = "forward", target_group = "g" }}

[[target_groups]]
name = "g"
{group_extra}
targets = [{target_lines}]
"#
    )
}

/// ballast's admin API answer to `GET path`.
async fn admin_get(ballast: &Ballast, path: &str) -> reqwest::Response {
    http_client().get(format!("http://{}{path}", ballast.addr("admin"))).send().await.expect("the admin API answers")
}

/// The targets of `group` as the admin API lists them (address, state, reason…).
pub async fn targets_of(ballast: &Ballast, group: &str) -> serde_json::Value {
    let path = format!("/api/v1/target-groups/{group}/targets");
    admin_get(ballast, &path).await.json().await.expect("a JSON list")
}

/// ballast's /metrics, as text.
pub async fn metrics_text(ballast: &Ballast) -> String {
    admin_get(ballast, "/metrics").await.text().await.expect("a /metrics body")
}

/// The value of the series `series` (name and labels) on ballast's /metrics, 0 when absent.
pub async fn metric(ballast: &Ballast, series: &str) -> f64 {
    let text = metrics_text(ballast).await;
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// The sum of the samples of `metric` whose labels include every `label="value"` in `labels`.
pub async fn metric_sum(ballast: &Ballast, metric: &str, labels: &[&str]) -> f64 {
    let text = metrics_text(ballast).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}
