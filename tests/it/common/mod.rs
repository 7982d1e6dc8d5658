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
