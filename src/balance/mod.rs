//! Load-balancing algorithms behind one trait.
//!
//! An algorithm is built once from the targets' weights, then only answers: given a view of
//! which targets may take traffic and how loaded they are, it names one. Health, draining and
//! live counters stay outside, in the target group; nothing here does I/O or reads a clock.

mod least_loaded;
mod maglev;
mod random;
mod round_robin;
mod weighted_round_robin;

use std::fmt::Debug;

use crate::config::Algorithm;

pub use least_loaded::{LeastLoaded, Load};
pub use maglev::{flow_hash, stable_hash, Maglev};
pub use random::{random_u64, PowerOfTwoChoices};
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

/// What an algorithm may know of the targets at the moment of one pick.
pub trait TargetView {
    /// How many targets the group has; indices run from 0 to `len() - 1`.
    fn len(&self) -> usize;
    /// Whether the group has no target at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether target `i` may take this request (healthy, not draining, not already tried).
    fn eligible(&self, i: usize) -> bool;
    /// Open connections to target `i`.
    fn connections(&self, i: usize) -> u64;
    /// Requests sent to target `i` and not yet answered.
    fn outstanding(&self, i: usize) -> u64;
    /// The hash of the flow being placed (its addresses and ports), for `flow_hash`.
    fn flow_hash(&self) -> u64 {
        0
    }
}

/// A load-balancing algorithm, built for one set of targets.
pub trait Balancer: Send + Sync + Debug {
    /// The target for one request, or `None` when no target is eligible.
    fn pick(&self, view: &dyn TargetView) -> Option<usize>;
}

/// Builds the algorithm a target group names for targets with these names and weights.
pub fn build(algorithm: Algorithm, names: &[&str], weights: &[u32]) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(weights)),
        Algorithm::LeastConnections => Box::new(LeastLoaded::new(Load::Connections)),
        Algorithm::LeastOutstandingRequests => Box::new(LeastLoaded::new(Load::Outstanding)),
        Algorithm::Random => Box::new(PowerOfTwoChoices),
        Algorithm::FlowHash => Box::new(Maglev::new(names)),
    }
}

#[cfg(test)]
pub(crate) mod test_view {
    use super::TargetView;

    /// A fixed view for unit tests: eligibility and loads per target.
    pub struct Fixed {
        pub eligible: Vec<bool>,
        pub connections: Vec<u64>,
        pub outstanding: Vec<u64>,
    }

    impl Fixed {
        pub fn all(n: usize) -> Self {
            Fixed { eligible: vec![true; n], connections: vec![0; n], outstanding: vec![0; n] }
        }
    }

    impl TargetView for Fixed {
        fn len(&self) -> usize {
            self.eligible.len()
        }
        fn eligible(&self, i: usize) -> bool {
            self.eligible[i]
        }
        fn connections(&self, i: usize) -> u64 {
            self.connections[i]
        }
        fn outstanding(&self, i: usize) -> u64 {
            self.outstanding[i]
        }
    }
}
