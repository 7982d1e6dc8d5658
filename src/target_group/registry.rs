//! Live per-target counters, found by name so they survive config reloads.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::target::TargetStats;
use crate::proxy::IdlePool;

/// Owns the live counters of every target ballast has known; snapshots borrow them.
#[derive(Debug, Default)]
pub struct TargetRegistry {
    stats: Mutex<HashMap<(String, String), Arc<TargetStats>>>,
    connections: Mutex<HashMap<String, Arc<AtomicU64>>>,
    idle: Mutex<HashMap<String, Arc<IdlePool>>>,
}

impl TargetRegistry {
    /// The counters of target `address` in group `group`, created on first use.
    pub fn stats(&self, group: &str, address: &str) -> Arc<TargetStats> {
        let mut map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry((group.to_string(), address.to_string())).or_default())
    }

    /// The open-connection counter of `authority` (`host:port`), shared by every group.
    pub fn connections(&self, authority: &str) -> Arc<AtomicU64> {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(authority.to_string()).or_default())
    }

    /// The idle HTTP/1.1 connections to `authority`, shared by every group.
    pub fn idle_pool(&self, authority: &str) -> Arc<IdlePool> {
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(authority.to_string()).or_default())
    }

    /// Closes target connections left idle too long.
    pub fn expire_idle(&self) {
        let pools: Vec<Arc<IdlePool>> = self.idle.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for pool in pools {
            pool.expire();
        }
    }
}

impl TargetRegistry {
    /// Forgets target `address` of `group`, once it has left: registered again, it starts anew.
    pub fn forget(&self, group: &str, address: &str) {
        let mut map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(group.to_string(), address.to_string()));
    }
}
