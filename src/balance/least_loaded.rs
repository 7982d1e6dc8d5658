//! Least connections and least outstanding requests: the eligible target with the least load.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, TargetView};

/// Which load a [`LeastLoaded`] balancer compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Open connections to the target.
    Connections,
    /// Requests in flight to the target.
    Outstanding,
}

/// Picks the eligible target with the smallest load; ties go round robin.
#[derive(Debug)]
pub struct LeastLoaded {
    load: Load,
    next: AtomicUsize,
}

impl LeastLoaded {
    /// A balancer comparing `load`.
    pub fn new(load: Load) -> Self {
        LeastLoaded { load, next: AtomicUsize::new(0) }
    }
}

impl Balancer for LeastLoaded {
    fn pick(&self, view: &dyn TargetView) -> Option<usize> {
        let n = view.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).filter(|&i| view.eligible(i)).min_by_key(|&i| match self.load {
            Load::Connections => view.connections(i),
            Load::Outstanding => view.outstanding(i),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_view::Fixed;

    #[test]
    fn least_connections_picks_the_emptiest_eligible_target() {
        let lc = LeastLoaded::new(Load::Connections);
        let mut view = Fixed::all(3);
        view.connections = vec![3, 1, 2];
        view.outstanding = vec![0, 9, 9];
        assert!((0..10).all(|_| lc.pick(&view) == Some(1)));
        view.eligible[1] = false;
        assert!((0..10).all(|_| lc.pick(&view) == Some(2)));
    }

    #[test]
    fn least_outstanding_requests_reads_requests_not_connections() {
        let lor = LeastLoaded::new(Load::Outstanding);
        let mut view = Fixed::all(3);
        view.connections = vec![0, 9, 9];
        view.outstanding = vec![5, 4, 6];
        assert!((0..10).all(|_| lor.pick(&view) == Some(1)));
    }

    #[test]
    fn ties_rotate_evenly() {
        let lc = LeastLoaded::new(Load::Connections);
        let view = Fixed::all(4);
        let mut counts = [0; 4];
        for _ in 0..400 {
            counts[lc.pick(&view).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100, 100]);
    }

    #[test]
    fn a_simulated_fleet_stays_level() {
        // Each pick adds one connection; the spread never exceeds one.
        let lc = LeastLoaded::new(Load::Connections);
        let mut view = Fixed::all(5);
        for _ in 0..1000 {
            let i = lc.pick(&view).unwrap();
            view.connections[i] += 1;
            let max = *view.connections.iter().max().unwrap();
            let min = *view.connections.iter().min().unwrap();
            assert!(max - min <= 1);
        }
    }
}
