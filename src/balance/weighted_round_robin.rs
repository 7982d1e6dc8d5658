//! Smooth weighted round robin: shares follow the weights without bursts.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, TargetView};

/// Interleaves targets by weight (5, 1, 1 gives a a b a c a a), as nginx's smooth algorithm.
///
/// The whole cycle is computed once when the group is built, so a pick is one atomic
/// increment and an index, with no lock.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    cycle: Vec<usize>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    /// The cycle for these weights; a weight of 0 takes no traffic.
    pub fn new(weights: &[u32]) -> Self {
        let divisor = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd).max(1);
        let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best = (0..current.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .expect("total > 0 means there is a target");
            current[best] -= total;
            cycle.push(best);
        }
        WeightedRoundRobin { cycle, next: AtomicUsize::new(0) }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self, view: &dyn TargetView) -> Option<usize> {
        let n = self.cycle.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| self.cycle[(start + i) % n]).find(|&t| view.eligible(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_view::Fixed;

    fn letters(wrr: &WeightedRoundRobin, view: &Fixed, n: usize) -> String {
        (0..n).map(|_| (b'a' + wrr.pick(view).unwrap() as u8) as char).collect()
    }

    #[test]
    fn five_one_one_interleaves_without_a_burst() {
        let wrr = WeightedRoundRobin::new(&[5, 1, 1]);
        assert_eq!(letters(&wrr, &Fixed::all(3), 14), "aabacaaaabacaa");
    }

    #[test]
    fn shares_are_exact_over_each_cycle() {
        let wrr = WeightedRoundRobin::new(&[3, 2, 1]);
        let view = Fixed::all(3);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[wrr.pick(&view).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 200, 100]);
        assert_eq!(letters(&WeightedRoundRobin::new(&[2, 1]), &view, 6), "abaaba");
    }

    #[test]
    fn common_factors_shrink_the_cycle_and_zero_weights_get_nothing() {
        let wrr = WeightedRoundRobin::new(&[200, 100, 0]);
        assert_eq!(wrr.cycle, vec![0, 1, 0]);
        let mut view = Fixed::all(3);
        view.eligible[0] = false;
        assert!((0..10).all(|_| wrr.pick(&view) == Some(1)));
        assert_eq!(WeightedRoundRobin::new(&[0, 0]).pick(&view), None);
    }
}
