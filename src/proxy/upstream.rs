//! The keep-alive connections to targets, for each worker thread: a pool for HTTP/1.1, and
//! one multiplexed connection per target for HTTP/2 (`h2_targets`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connector::Connector;
use super::h2_targets::H2Targets;
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

/// One worker's connections.
struct Pools {
    http1: Pool,
    http2: H2Targets,
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
        let http2 = H2Targets::new(connectors.1.clone());
        Pools { http1, http2 }
    }
}

impl Upstream {
    /// Empty pools; connection counts go to `registry`.
    pub fn new(registry: Arc<TargetRegistry>) -> Self {
        let connectors = (Connector::new(&[b"http/1.1"], Arc::clone(&registry)), Connector::new(&[b"h2"], registry));
        Upstream { connectors, by_worker: OnceLock::new() }
    }

    /// The calling worker's pool for HTTP/1.1 targets.
    pub fn http1(&self) -> &Pool {
        &self.mine().http1
    }

    /// The calling worker's connections to HTTP/2 targets.
    pub fn http2(&self) -> &H2Targets {
        &self.mine().http2
    }

    fn mine(&self) -> &Pools {
        let all = self.by_worker.get_or_init(|| {
            let workers = shards::count();
            (0..workers).map(|_| Pools::new(&self.connectors, workers)).collect()
        });
        &all[shards::current() % all.len()]
    }
}
