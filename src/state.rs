//! What the whole process shares: the current snapshot and what outlives snapshots.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::proxy::Upstream;
use crate::snapshot::Snapshot;
use crate::target_group::TargetRegistry;

/// The running balancer: the current snapshot, the live target counters and the pools.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    pub registry: Arc<TargetRegistry>,
    pub upstream: Upstream,
}

impl State {
    /// State serving `snapshot`, whose counters live in `registry`.
    pub fn new(snapshot: Snapshot, registry: Arc<TargetRegistry>) -> Self {
        State {
            snapshot: ArcSwap::from_pointee(snapshot),
            upstream: Upstream::new(Arc::clone(&registry)),
            registry,
        }
    }

    /// The snapshot to serve one request with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Makes `snapshot` the one new requests see.
    pub fn replace(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}
