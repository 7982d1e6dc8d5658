//! One registered target, and the live facts about it that outlast config reloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

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

/// Why a target is in its state, with ELB's reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// Healthy targets carry no reason.
    None = 0,
    InitialHealthChecking = 1,
    Timeout = 2,
    ResponseCodeMismatch = 3,
    FailedHealthChecks = 4,
    DeregistrationInProgress = 5,
    /// A request could not connect or the connection broke: marked down before the next check.
    ConnectionFailed = 6,
}

impl Reason {
    /// ELB's code, or `None` for a healthy target.
    pub fn code(self) -> Option<&'static str> {
        Some(match self {
            Reason::None => return None,
            Reason::InitialHealthChecking => "Elb.InitialHealthChecking",
            Reason::Timeout => "Target.Timeout",
            Reason::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            Reason::FailedHealthChecks => "Target.FailedHealthChecks",
            Reason::DeregistrationInProgress => "Target.DeregistrationInProgress",
            Reason::ConnectionFailed => "Target.ConnectionFailed",
        })
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Reason::InitialHealthChecking,
            2 => Reason::Timeout,
            3 => Reason::ResponseCodeMismatch,
            4 => Reason::FailedHealthChecks,
            5 => Reason::DeregistrationInProgress,
            6 => Reason::ConnectionFailed,
            _ => Reason::None,
        }
    }
}

/// Milliseconds since the process started; the clock of `healthy_since`.
pub fn uptime_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Live facts about one target of one group, kept across reloads by name.
#[derive(Debug)]
pub struct TargetStats {
    /// State and reason packed as `state << 8 | reason`, so both change together.
    status: AtomicU64,
    outstanding: AtomicU64,
    healthy_since_ms: AtomicU64,
    /// Cancelled when draining ends: open tunnels and streams to the target close.
    closing: CancellationToken,
}

impl Default for TargetStats {
    fn default() -> Self {
        TargetStats {
            status: AtomicU64::new(pack(TargetState::Initial, Reason::InitialHealthChecking)),
            outstanding: AtomicU64::new(0),
            healthy_since_ms: AtomicU64::new(0),
            closing: CancellationToken::new(),
        }
    }
}

fn pack(state: TargetState, reason: Reason) -> u64 {
    (state as u64) << 8 | reason as u64
}

impl TargetStats {
    /// The target's state now.
    pub fn state(&self) -> TargetState {
        TargetState::from_u8((self.status.load(Ordering::Relaxed) >> 8) as u8)
    }

    /// Why the target is in its state.
    pub fn reason(&self) -> Reason {
        Reason::from_u8(self.status.load(Ordering::Relaxed) as u8)
    }

    /// Moves the target to `state` for `reason`; a draining target never leaves draining.
    pub fn set(&self, state: TargetState, reason: Reason) {
        let new = pack(state, reason);
        let mut current = self.status.load(Ordering::Relaxed);
        loop {
            let was = TargetState::from_u8((current >> 8) as u8);
            if was == TargetState::Draining && state != TargetState::Draining {
                return;
            }
            if state == TargetState::Healthy && was != TargetState::Healthy {
                self.healthy_since_ms.store(uptime_ms(), Ordering::Relaxed);
            }
            match self.status.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// How far into slow start the target is: 0.0 just healthy, 1.0 at full share.
    pub fn slow_start_fraction(&self, slow_start: Duration) -> f64 {
        if slow_start.is_zero() {
            return 1.0;
        }
        let since = uptime_ms().saturating_sub(self.healthy_since_ms.load(Ordering::Relaxed));
        (since as f64 / slow_start.as_millis() as f64).min(1.0)
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

    /// Fires when draining ends and whatever is still open to the target must close.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

/// Holds one outstanding request on a target; dropping it ends the request.
#[derive(Debug)]
pub struct OutstandingGuard(Arc<TargetStats>);

impl OutstandingGuard {
    /// The target this request is on.
    pub fn stats(&self) -> &Arc<TargetStats> {
        &self.0
    }
}

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
    /// `authority`, parsed once for the request URIs sent to the target.
    pub parsed_authority: Option<http::uri::Authority>,
    /// `authority` as a socket address, when it is one (not a host name to resolve).
    pub socket_addr: Option<std::net::SocketAddr>,
    pub weight: u32,
    pub zone: Option<String>,
    pub stats: Arc<TargetStats>,
    connections: Arc<AtomicU64>,
    /// Idle keep-alive connections to this target's address.
    pub idle: Arc<crate::proxy::IdlePool>,
}

impl Target {
    /// The running target for a config entry; `None` if its address does not parse (the
    /// config was validated, so this does not happen for loaded files).
    pub fn new(group: &str, t: &config::Target, group_port: Option<u16>, registry: &TargetRegistry) -> Option<Self> {
        let (host, port) = t.host_port(group_port).ok()?;
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Some(Target {
            stats: registry.stats(group, &t.address),
            connections: registry.connections(&authority),
            idle: registry.idle_pool(&authority),
            parsed_authority: authority.parse().ok(),
            socket_addr: authority.parse().ok(),
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

    /// The counter of open connections to this target, for a new one to join.
    pub fn connection_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_target_is_initial_and_draining_is_final() {
        let stats = TargetStats::default();
        assert_eq!(stats.state(), TargetState::Initial);
        assert_eq!(stats.reason().code(), Some("Elb.InitialHealthChecking"));
        stats.set(TargetState::Healthy, Reason::None);
        assert_eq!((stats.state(), stats.reason().code()), (TargetState::Healthy, None));
        stats.set(TargetState::Draining, Reason::DeregistrationInProgress);
        stats.set(TargetState::Healthy, Reason::None);
        assert_eq!(stats.state(), TargetState::Draining);
        assert_eq!(stats.reason().code(), Some("Target.DeregistrationInProgress"));
    }

    #[test]
    fn slow_start_ramps_from_the_moment_of_health() {
        let stats = TargetStats::default();
        stats.set(TargetState::Healthy, Reason::None);
        assert!(stats.slow_start_fraction(Duration::from_secs(3600)) < 0.01);
        assert_eq!(stats.slow_start_fraction(Duration::ZERO), 1.0);
    }
}
