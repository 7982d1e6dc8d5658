//! What the guard keeps across config reloads, by listener name: connection counts and rate
//! limiter buckets (rebuilt only when their settings change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::connection_limits::ConnectionLimits;
use super::rate_limit::RateLimit;

/// The guard's long-lived state.
#[derive(Debug, Default)]
pub struct GuardState {
    connections: Mutex<HashMap<String, Arc<ConnectionLimits>>>,
    rate_limits: Mutex<HashMap<String, Arc<RateLimit>>>,
}

impl GuardState {
    /// The connection counters of listener `name`.
    pub fn connections(&self, name: &str) -> Arc<ConnectionLimits> {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(name.to_string()).or_default())
    }

    /// The rate limiter under `key` (a listener, or a listener's rule) for these settings;
    /// the same one as before unless the settings changed.
    pub fn rate_limit(&self, key: &str, per_ip: u32, burst: Option<u32>) -> Arc<RateLimit> {
        let mut map = self.rate_limits.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = (per_ip, burst.unwrap_or(per_ip).max(1));
        match map.get(key) {
            Some(limit) if limit.settings == wanted => Arc::clone(limit),
            _ => {
                let limit = Arc::new(RateLimit::new(per_ip, burst));
                map.insert(key.to_string(), Arc::clone(&limit));
                limit
            }
        }
    }
}
