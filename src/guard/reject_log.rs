//! Logging rejections without letting an attack flood the log: at most one line per second
//! per listener and reason, with a count of what was left out.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::target_group::uptime_ms;

/// When the last line for a listener and reason was written, and how many were left out since.
type LastLine = (u64, u64);

/// Rate-limited log of rejected requests and connections.
#[derive(Debug, Default)]
pub struct RejectLog {
    last: Mutex<HashMap<(String, &'static str), LastLine>>,
}

impl RejectLog {
    /// Logs one rejection, unless one with the same listener and reason was logged in the
    /// last second; those are counted and reported with the next line.
    pub fn record(&self, listener: &str, reason: &'static str, client: std::net::IpAddr) {
        let now = uptime_ms();
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry((listener.to_string(), reason)).or_insert((0, 0));
        if entry.0 != 0 && now.saturating_sub(entry.0) < 1000 {
            entry.1 += 1;
            return;
        }
        let suppressed = entry.1;
        *entry = (now.max(1), 0);
        drop(map);
        tracing::warn!(listener, reason, %client, suppressed, "rejected");
    }
}
