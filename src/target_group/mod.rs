//! Target groups as the running proxy sees them: targets, their live counters, and the pick.

mod connect;
mod membership;
mod registry;
pub mod stickiness;
pub mod sticky_cookie;
mod target;

use crate::balance::{self, Balancer, TargetView};
use crate::config;

pub use connect::{begin, connect, connect_sending};
pub use membership::{Membership, MembershipError};
pub use registry::TargetRegistry;
pub use target::{uptime_ms, OutstandingGuard, Reason, Target, TargetState, TargetStats};

/// A target group of the running snapshot.
#[derive(Debug)]
pub struct TargetGroup {
    pub name: String,
    pub settings: config::TargetGroup,
    pub targets: Vec<Target>,
    balancer: Box<dyn Balancer>,
}

/// What a pick must respect besides health.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickRequest<'a> {
    /// Targets (by index) already tried for this request.
    pub tried: &'a [usize],
    /// The listener's zone, for groups with `cross_zone = false`.
    pub zone: Option<&'a str>,
    /// The address a stickiness cookie names.
    pub sticky: Option<&'a str>,
    /// The hash of the flow's addresses and ports, for `flow_hash`.
    pub flow: u64,
}

/// Which targets a pick may use.
#[derive(Clone, Copy)]
struct Eligible<'a> {
    targets: &'a [Target],
    /// Whether each request holds one connection of its own (HTTP/1.1), so that connections
    /// in use equal requests in flight; idle pooled connections carry no load.
    connection_per_request: bool,
    tried: &'a [usize],
    /// Only targets in this zone.
    zone: Option<&'a str>,
    /// Skip targets in slow start in proportion to how far they still have to go.
    slow_start: Option<std::time::Duration>,
    /// No target is healthy: use any that is not draining.
    fail_open: bool,
    flow: u64,
}

impl TargetView for Eligible<'_> {
    fn len(&self) -> usize {
        self.targets.len()
    }
    fn eligible(&self, i: usize) -> bool {
        let target = &self.targets[i];
        let state = target.stats.state();
        let usable = if self.fail_open { state != TargetState::Draining } else { state.takes_traffic() };
        if !usable || self.tried.contains(&i) {
            return false;
        }
        if self.zone.is_some() && target.zone.as_deref() != self.zone {
            return false;
        }
        match self.slow_start {
            Some(period) => {
                let fraction = target.stats.slow_start_fraction(period);
                fraction >= 1.0 || (balance::random_u64() as f64 / u64::MAX as f64) < fraction
            }
            None => true,
        }
    }
    fn connections(&self, i: usize) -> u64 {
        if self.connection_per_request {
            self.targets[i].stats.outstanding()
        } else {
            self.targets[i].connections()
        }
    }
    fn outstanding(&self, i: usize) -> u64 {
        self.targets[i].stats.outstanding()
    }
    fn flow_hash(&self) -> u64 {
        self.flow
    }
}

impl TargetGroup {
    /// Builds the running group from its config; live counters come from `registry` by name.
    pub fn new(settings: &config::TargetGroup, registry: &TargetRegistry) -> Self {
        let targets: Vec<Target> =
            settings.targets.iter().filter_map(|t| Target::new(&settings.name, t, settings.port, registry)).collect();
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let names: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
        TargetGroup {
            name: settings.name.clone(),
            balancer: balance::build(settings.algorithm, &names, &weights),
            settings: settings.clone(),
            targets,
        }
    }

    /// The place in `targets` of a target this group picked, for [`PickRequest::tried`].
    pub fn index_of(&self, target: &Target) -> Option<usize> {
        self.targets.iter().position(|t| std::ptr::eq(t, target))
    }

    /// The target for the next request. A valid stickiness cookie wins while its target takes
    /// traffic; `cross_zone = false` keeps to the listener's zone while it has a healthy
    /// target; targets in slow start get a growing share; and when no target is healthy the
    /// pick fails open to every target that is not draining, as ELB does.
    pub fn pick(&self, request: PickRequest<'_>) -> Option<&Target> {
        let any_healthy = self.targets.iter().any(|t| t.stats.state().takes_traffic());
        if let Some(address) = request.sticky {
            let stuck = self.targets.iter().enumerate().find(|(i, t)| {
                let state = t.stats.state();
                let usable = if any_healthy { state.takes_traffic() } else { state != TargetState::Draining };
                t.address == address && usable && !request.tried.contains(i)
            });
            if let Some((_, target)) = stuck {
                return Some(target);
            }
        }
        let base = Eligible {
            targets: &self.targets,
            connection_per_request: self.settings.protocol_version == config::ProtocolVersion::Http1,
            tried: request.tried,
            zone: None,
            slow_start: None,
            fail_open: !any_healthy,
            flow: request.flow,
        };
        let slow_start = (!self.settings.slow_start.is_zero()).then(|| self.settings.slow_start.get());
        let zoned = if self.settings.cross_zone { None } else { request.zone };
        let attempt = |zone, slow_start| self.balancer.pick(&Eligible { zone, slow_start, ..base });
        // Most specific first; each step gives up a preference only when it finds nobody.
        let index = zoned
            .and_then(|zone| attempt(Some(zone), slow_start).or_else(|| attempt(Some(zone), None)))
            .or_else(|| slow_start.and_then(|period| attempt(None, Some(period))))
            .or_else(|| attempt(None, None))?;
        self.targets.get(index)
    }

    /// The target registered as `address`.
    pub fn target(&self, address: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.address == address)
    }
}
