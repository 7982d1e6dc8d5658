//! The pools of keep-alive connections to targets, one per HTTP version and worker thread.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connector::Connector;
use crate::config::ProtocolVersion;
use crate::shards;
use crate::target_group::TargetRegistry;

/// A pool of connections to targets.
pub type Pool = Client<Connector, Incoming>;

/// Keep-alive connection pools to every target, shared by all listeners and kept across
/// reloads, so a reload does not reconnect to targets. Each worker thread has pools of its
/// own: a target connection's task runs on the worker that opened it, so a request sent on
/// another worker's connection would cross threads twice, there and back.
pub struct Upstream {
    registry: Arc<TargetRegistry>,
    /// Each worker's pools, made on first use (when the workers are known).
    by_worker: OnceLock<Box<[Pools]>>,
}

/// One worker's pools.
struct Pools {
    http1: Pool,
    http2: Pool,
}

impl Pools {
    fn new(registry: &Arc<TargetRegistry>) -> Self {
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(Connector::new(&[b"http/1.1"], Arc::clone(registry)));
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(Connector::new(&[b"h2"], Arc::clone(registry)));
        Pools { http1, http2 }
    }
}

impl Upstream {
    /// Empty pools; connection counts go to `registry`.
    pub fn new(registry: Arc<TargetRegistry>) -> Self {
        Upstream { registry, by_worker: OnceLock::new() }
    }

    /// The calling worker's pool for targets spoken to in `version`.
    pub fn pool(&self, version: ProtocolVersion) -> &Pool {
        let all = self.by_worker.get_or_init(|| (0..shards::count()).map(|_| Pools::new(&self.registry)).collect());
        let mine = &all[shards::current() % all.len()];
        match version {
            ProtocolVersion::Http1 => &mine.http1,
            ProtocolVersion::Http2 => &mine.http2,
        }
    }
}
