//! What the whole process shares: the current snapshot, target membership, and what outlives
//! snapshots (live counters, connection pools).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, ConfigErrors};
use crate::guard::reject_log::RejectLog;
use crate::guard::state::GuardState;
use crate::metrics::{Metrics, RejectLabels};
use crate::proxy::Upstream;
use crate::snapshot::Snapshot;
use crate::target_group::sticky_cookie::CookieSealer;
use crate::target_group::{Membership, MembershipError, Reason, TargetRegistry, TargetState};

/// The running balancer: the current snapshot, the live target counters and the pools.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    pub registry: Arc<TargetRegistry>,
    pub upstream: Upstream,
    membership: Mutex<Membership>,
    /// The file `reload` re-reads; `None` for the demo.
    config_path: Option<PathBuf>,
    /// Every metric; snapshots hold handles into it.
    pub metrics: Arc<Metrics>,
    /// Connection counts and rate-limit buckets, kept across reloads.
    pub guard: GuardState,
    /// Where rejections are logged, without flooding.
    pub reject_log: RejectLog,
    /// Seals stickiness cookies; a fresh key per process.
    pub sealer: CookieSealer,
    /// Bumped on every new snapshot, for the tasks that follow it (listeners, health checks).
    generation: watch::Sender<u64>,
}

/// Why a reload was refused; the running config is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("{0}")]
    Unusable(String),
}

impl State {
    /// State serving `config`, read from `config_path` when there is one.
    pub fn new(config: config::Config, config_path: Option<PathBuf>) -> Result<Arc<Self>, String> {
        let registry = Arc::new(TargetRegistry::default());
        let membership = Membership::new(config);
        let metrics = Arc::new(Metrics::default());
        let guard = GuardState::default();
        let snapshot = Snapshot::build(membership.effective(), &registry, &metrics, &guard)?;
        Ok(Arc::new(State {
            metrics,
            guard,
            reject_log: RejectLog::default(),
            snapshot: ArcSwap::from_pointee(snapshot),
            upstream: Upstream::new(Arc::clone(&registry)),
            registry,
            membership: Mutex::new(membership),
            config_path,
            sealer: CookieSealer::new(),
            generation: watch::channel(0).0,
        }))
    }

    /// The snapshot to serve one request with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Counts and logs (without flooding) a request or connection the guard refused.
    pub fn reject(&self, listener: &str, reason: &'static str, client: std::net::IpAddr) {
        self.metrics.rejected_requests.get_or_create(&RejectLabels { listener: listener.to_string(), reason }).inc();
        self.reject_log.record(listener, reason, client);
    }

    /// A receiver told of every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn membership(&self) -> MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds and publishes the snapshot for `membership`.
    fn publish(&self, membership: &Membership) -> Result<(), String> {
        let snapshot = Snapshot::build(membership.effective(), &self.registry, &self.metrics, &self.guard)?;
        self.snapshot.store(Arc::new(snapshot));
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Re-reads the config file. New requests see the new file at once; requests in flight
    /// finish on the old one; targets the file dropped start draining.
    pub fn reload(self: &Arc<Self>) -> Result<(), ReloadError> {
        let path = self
            .config_path
            .as_ref()
            .ok_or_else(|| ReloadError::Unusable("this balancer runs the demo, which has no file to reload".into()))?;
        let file = config::load(path).map_err(ReloadError::Invalid)?;
        let mut membership = self.membership();
        let mut next = membership.clone();
        let leaving = next.reload(file);
        self.publish(&next).map_err(ReloadError::Unusable)?;
        *membership = next;
        drop(membership);
        for (group, address) in leaving {
            self.start_draining(&group, &address);
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Registers `target` in `group`; it is `initial` until it passes its health checks.
    pub fn register(self: &Arc<Self>, group: &str, target: config::Target) -> Result<(), MembershipError> {
        let mut membership = self.membership();
        let mut next = membership.clone();
        let address = target.address.clone();
        next.register(group, target)?;
        // A target registered again after leaving starts its life cycle anew.
        self.registry.forget(group, &address);
        self.publish(&next).map_err(MembershipError::Invalid)?;
        *membership = next;
        Ok(())
    }

    /// Deregisters a target: it gets no new requests, and leaves once its requests finish or
    /// its group's `deregistration_delay` passes.
    pub fn deregister(self: &Arc<Self>, group: &str, address: &str) -> Result<(), MembershipError> {
        let mut membership = self.membership();
        let mut next = membership.clone();
        next.deregister(group, address)?;
        self.publish(&next).map_err(MembershipError::Invalid)?;
        *membership = next;
        drop(membership);
        self.start_draining(group, address);
        Ok(())
    }

    /// Changes the weight of a target.
    pub fn set_weight(self: &Arc<Self>, group: &str, address: &str, weight: u32) -> Result<(), MembershipError> {
        let mut membership = self.membership();
        let mut next = membership.clone();
        next.set_weight(group, address, weight)?;
        self.publish(&next).map_err(MembershipError::Invalid)?;
        *membership = next;
        Ok(())
    }

    fn start_draining(self: &Arc<Self>, group: &str, address: &str) {
        let stats = self.registry.stats(group, address);
        stats.set(TargetState::Draining, Reason::DeregistrationInProgress);
        let delay = self
            .snapshot()
            .target_groups
            .iter()
            .find(|g| g.name == group)
            .map_or(Duration::ZERO, |g| g.settings.deregistration_delay.get());
        let state = Arc::clone(self);
        let (group, address) = (group.to_string(), address.to_string());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + delay;
            // ELB ends a drain early once nothing is in flight to the target.
            while stats.outstanding() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50).min(delay)).await;
            }
            stats.closing().cancel();
            let mut membership = state.membership();
            if membership.finish_draining(&group, &address) {
                state.registry.forget(&group, &address);
                if let Err(e) = state.publish(&membership) {
                    tracing::error!(error = %e, "cannot rebuild after draining");
                }
            }
            tracing::info!(target_group = %group, target = %address, "target deregistered");
        });
    }
}
