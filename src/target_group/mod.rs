//! Target groups as the running proxy sees them: targets, their live counters, and the pick.

mod registry;
mod target;

use crate::balance::{self, Balancer, TargetView};
use crate::config;

pub use registry::TargetRegistry;
pub use target::{OutstandingGuard, Target, TargetState, TargetStats};

/// A target group of the running snapshot.
#[derive(Debug)]
pub struct TargetGroup {
    pub name: String,
    pub settings: config::TargetGroup,
    pub targets: Vec<Target>,
    balancer: Box<dyn Balancer>,
}

/// Which targets a pick may use.
struct Eligible<'a> {
    targets: &'a [Target],
    /// Whether each request holds one connection of its own (HTTP/1.1), so that connections
    /// in use equal requests in flight; idle pooled connections carry no load.
    connection_per_request: bool,
    tried: &'a [usize],
    fail_open: bool,
}

impl TargetView for Eligible<'_> {
    fn len(&self) -> usize {
        self.targets.len()
    }
    fn eligible(&self, i: usize) -> bool {
        let state = self.targets[i].stats.state();
        let usable = if self.fail_open {
            state != TargetState::Draining
        } else {
            state.takes_traffic()
        };
        usable && !self.tried.contains(&i)
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
}

impl TargetGroup {
    /// Builds the running group from its config; live counters come from `registry` by name.
    pub fn new(settings: &config::TargetGroup, registry: &TargetRegistry) -> Self {
        let targets: Vec<Target> = settings
            .targets
            .iter()
            .filter_map(|t| Target::new(&settings.name, t, settings.port, registry))
            .collect();
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        TargetGroup {
            name: settings.name.clone(),
            balancer: balance::build(settings.algorithm, &weights),
            settings: settings.clone(),
            targets,
        }
    }

    /// The target for the next request, skipping those in `tried`. When no target is healthy,
    /// fails open to every target that is not draining, as ELB does.
    pub fn pick(&self, tried: &[usize]) -> Option<&Target> {
        let connection_per_request =
            self.settings.protocol_version == config::ProtocolVersion::Http1;
        let healthy = Eligible {
            targets: &self.targets,
            connection_per_request,
            tried,
            fail_open: false,
        };
        let index = self.balancer.pick(&healthy).or_else(|| {
            let any_healthy = self.targets.iter().any(|t| t.stats.state().takes_traffic());
            if any_healthy {
                return None;
            }
            self.balancer.pick(&Eligible {
                targets: &self.targets,
                connection_per_request,
                tried,
                fail_open: true,
            })
        })?;
        self.targets.get(index)
    }
}
