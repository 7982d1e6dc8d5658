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
    /// Connectors for HTTP/1.1 and HTTP/2 targets, shared by the workers' pools (and with
    /// them, each TLS client's session cache).
    connectors: (Connector, Connector),
    /// Each worker's pools, made on first use (when the workers are known).
    by_worker: OnceLock<Box<[Pools]>>,
}

/// One worker's pools.
struct Pools {
    http1: Pool,
    http2: Pool,
}

/// Idle connections kept per target, over all workers, as the engine's `IdlePool` keeps.
const MAX_IDLE: usize = 512;

impl Pools {
    /// One worker's pools, of `workers`, keeping its share of the idle connections.
    fn new(connectors: &(Connector, Connector), workers: usize) -> Self {
        let idle = (MAX_IDLE / workers.max(1)).max(1);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connectors.0.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connectors.1.clone());
        Pools { http1, http2 }
    }
}

impl Upstream {
    /// Empty pools; connection counts go to `registry`.
    pub fn new(registry: Arc<TargetRegistry>) -> Self {
        let connectors = (Connector::new(&[b"http/1.1"], Arc::clone(&registry)), Connector::new(&[b"h2"], registry));
        Upstream { connectors, by_worker: OnceLock::new() }
    }

    /// The calling worker's pool for targets spoken to in `version`.
    pub fn pool(&self, version: ProtocolVersion) -> &Pool {
        let all = self.by_worker.get_or_init(|| {
            let workers = shards::count();
            (0..workers).map(|_| Pools::new(&self.connectors, workers)).collect()
        });
        let mine = &all[shards::current() % all.len()];
        match version {
            ProtocolVersion::Http1 => &mine.http1,
            ProtocolVersion::Http2 => &mine.http2,
        }
    }
}
