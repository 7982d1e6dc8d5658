//! One registered target, and the live counters that outlast config reloads.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use super::registry::TargetRegistry;
use crate::config;

/// Where a target is in ELB's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TargetState {
    Initial = 0,
    Healthy = 1,
    Unhealthy = 2,
    Unused = 3,
    Draining = 4,
}

impl TargetState {
    /// Whether the target gets new requests.
    pub fn takes_traffic(self) -> bool {
        self == TargetState::Healthy
    }

    /// The name the admin API and the docs use.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Unused => "unused",
            TargetState::Draining => "draining",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => TargetState::Initial,
            1 => TargetState::Healthy,
            2 => TargetState::Unhealthy,
            3 => TargetState::Unused,
            _ => TargetState::Draining,
        }
    }
}

/// Live facts about one target of one group, kept across reloads by name.
#[derive(Debug)]
pub struct TargetStats {
    state: AtomicU8,
    outstanding: AtomicU64,
}

impl Default for TargetStats {
    fn default() -> Self {
        TargetStats {
            state: AtomicU8::new(TargetState::Healthy as u8),
            outstanding: AtomicU64::new(0),
        }
    }
}

impl TargetStats {
    /// The target's state now.
    pub fn state(&self) -> TargetState {
        TargetState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Moves the target to `state`.
    pub fn set_state(&self, state: TargetState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Requests sent and not yet fully answered.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> OutstandingGuard {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        OutstandingGuard(Arc::clone(self))
    }
}

/// Holds one outstanding request on a target; dropping it ends the request.
#[derive(Debug)]
pub struct OutstandingGuard(Arc<TargetStats>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target of the running snapshot.
#[derive(Debug)]
pub struct Target {
    /// The address as registered (`ip:port`, `host:port`).
    pub address: String,
    /// `host:port` to connect to, with brackets around IPv6 hosts.
    pub authority: String,
    pub weight: u32,
    pub zone: Option<String>,
    pub stats: Arc<TargetStats>,
    connections: Arc<AtomicU64>,
}

impl Target {
    /// The running target for a config entry; `None` if its address does not parse (the
    /// config was validated, so this does not happen for loaded files).
    pub fn new(
        group: &str,
        t: &config::Target,
        group_port: Option<u16>,
        registry: &TargetRegistry,
    ) -> Option<Self> {
        let (host, port) = t.host_port(group_port).ok()?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Some(Target {
            stats: registry.stats(group, &t.address),
            connections: registry.connections(&authority),
            address: t.address.clone(),
            authority,
            weight: t.weight,
            zone: t.zone.clone(),
        })
    }

    /// Open connections from ballast to this target.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}
