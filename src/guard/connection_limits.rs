//! `max_connections` and `max_connections_per_ip`: how many connections a listener holds at
//! once, in all and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts a listener's open connections; outlives config reloads (kept by listener name).
#[derive(Debug, Default)]
pub struct ConnectionLimits {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

impl Refusal {
    /// The `reason` label of `ballast_rejected_requests_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

impl ConnectionLimits {
    /// Admits a connection from `ip` under the limits (0 = unlimited); the permit counts it
    /// until dropped. Connections are counted by address only while a per-address limit is
    /// set (a reload that sets one counts the connections opened from then on).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Permit, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if max_total > 0 && total > max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        if max_per_ip == 0 {
            return Ok(Permit { limits: Arc::clone(self), ip: None });
        }
        {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::MaxConnectionsPerIp);
            }
            *count += 1;
        }
        Ok(Permit { limits: Arc::clone(self), ip: Some(ip) })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    /// The address it is counted against, when a per-address limit was set.
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        let Some(ip) = self.ip else { return };
        let mut per_ip = self.limits.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_permits_free_their_place() {
        let limits = Arc::new(ConnectionLimits::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = limits.admit(a, 3, 2).unwrap();
        let _p2 = limits.admit(a, 3, 2).unwrap();
        assert_eq!(limits.admit(a, 3, 2).unwrap_err(), Refusal::MaxConnectionsPerIp);
        let _p3 = limits.admit(b, 3, 2).unwrap();
        assert_eq!(limits.admit(b, 3, 2).unwrap_err(), Refusal::MaxConnections);
        drop(p1);
        let _p4 = limits.admit(a, 3, 2).unwrap();
        assert_eq!(limits.open(), 3);
        assert!(limits.admit(b, 0, 0).is_ok(), "0 means no limit");
    }

    #[test]
    fn a_per_address_limit_set_later_counts_from_then_on() {
        let limits = Arc::new(ConnectionLimits::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let before = limits.admit(a, 0, 0).unwrap();
        let counted = limits.admit(a, 0, 1).unwrap();
        assert_eq!(limits.admit(a, 0, 1).unwrap_err(), Refusal::MaxConnectionsPerIp);
        // The connection opened without a limit frees no counted place.
        drop(before);
        assert_eq!(limits.admit(a, 0, 1).unwrap_err(), Refusal::MaxConnectionsPerIp);
        drop(counted);
        assert!(limits.admit(a, 0, 1).is_ok());
        assert!(limits.per_ip.lock().unwrap().len() <= 1);
    }
}
