//! Round robin: each eligible target in turn, weights ignored.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, TargetView};

/// Hands requests to targets in turn, skipping those not eligible.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, view: &dyn TargetView) -> Option<usize> {
        let n = view.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).find(|&i| view.eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_view::Fixed;

    #[test]
    fn rotates_over_every_target_in_order() {
        let rr = RoundRobin::default();
        let view = Fixed::all(3);
        let picks: Vec<usize> = (0..9).map(|_| rr.pick(&view).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_targets_that_are_not_eligible() {
        let rr = RoundRobin::default();
        let mut view = Fixed::all(3);
        view.eligible[1] = false;
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[rr.pick(&view).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert_eq!(counts[0] + counts[2], 300);
        view.eligible = vec![false; 3];
        assert_eq!(rr.pick(&view), None);
    }
}
