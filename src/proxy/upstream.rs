//! The pools of keep-alive connections to targets, one per HTTP version.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connector::Connector;
use crate::config::ProtocolVersion;
use crate::target_group::TargetRegistry;

/// A pool of connections to targets.
pub type Pool = Client<Connector, Incoming>;

/// Keep-alive connection pools to every target, shared by all listeners and kept across
/// reloads, so a reload does not reconnect to targets.
pub struct Upstream {
    http1: Pool,
    http2: Pool,
}

impl Upstream {
    /// Empty pools; connection counts go to `registry`.
    pub fn new(registry: Arc<TargetRegistry>) -> Self {
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(Connector::new(&[b"http/1.1"], Arc::clone(&registry)));
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(Connector::new(&[b"h2"], registry));
        Upstream { http1, http2 }
    }

    /// The pool for targets spoken to in `version`.
    pub fn pool(&self, version: ProtocolVersion) -> &Pool {
        match version {
            ProtocolVersion::Http1 => &self.http1,
            ProtocolVersion::Http2 => &self.http2,
        }
    }
}
