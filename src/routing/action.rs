//! Compiled actions: what the router hands back for a request.

use crate::balance::{Balancer, TargetView, WeightedRoundRobin};

use super::redirect::RedirectTemplate;

/// What to do with a request.
#[derive(Debug)]
pub enum ActionPlan {
    Forward(ForwardPlan),
    Redirect(RedirectTemplate),
    FixedResponse { status: u16, body: String, content_type: String },
}

/// A forward to one target group or several by weight; groups are indices into the snapshot.
#[derive(Debug)]
pub struct ForwardPlan {
    groups: Vec<usize>,
    weights: WeightedRoundRobin,
}

struct AllEligible(usize);

impl TargetView for AllEligible {
    fn len(&self) -> usize {
        self.0
    }
    fn eligible(&self, _: usize) -> bool {
        true
    }
    fn connections(&self, _: usize) -> u64 {
        0
    }
    fn outstanding(&self, _: usize) -> u64 {
        0
    }
}

impl ForwardPlan {
    /// A forward over `(group index, weight)` pairs.
    pub fn new(groups: &[(usize, u32)]) -> Self {
        let weights: Vec<u32> = groups.iter().map(|g| g.1).collect();
        ForwardPlan { groups: groups.iter().map(|g| g.0).collect(), weights: WeightedRoundRobin::new(&weights) }
    }

    /// The target group for the next request, spread by weight.
    pub fn pick_group(&self) -> Option<usize> {
        if self.groups.len() == 1 {
            return self.groups.first().copied();
        }
        self.weights.pick(&AllEligible(self.groups.len())).map(|i| self.groups[i])
    }
}
