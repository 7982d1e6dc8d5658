//! Random with two choices: draw two eligible targets, keep the less loaded.

use std::cell::Cell;

use super::{Balancer, TargetView};

/// "The power of two random choices": nearly as level as least-loaded, without a global scan.
#[derive(Debug, Default)]
pub struct PowerOfTwoChoices;

impl PowerOfTwoChoices {
    // The first eligible index at or after `from`, wrapping.
    fn eligible_from(view: &dyn TargetView, from: usize, skip: Option<usize>) -> Option<usize> {
        let n = view.len();
        (0..n).map(|i| (from + i) % n).find(|&i| view.eligible(i) && Some(i) != skip)
    }
}

impl Balancer for PowerOfTwoChoices {
    fn pick(&self, view: &dyn TargetView) -> Option<usize> {
        let n = view.len();
        if n == 0 {
            return None;
        }
        let a = Self::eligible_from(view, (random_u64() % n as u64) as usize, None)?;
        let Some(b) = Self::eligible_from(view, (random_u64() % n as u64) as usize, Some(a)) else {
            return Some(a);
        };
        Some(if view.outstanding(b) < view.outstanding(a) { b } else { a })
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (nanos ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

/// A fast per-thread pseudo-random number (xorshift64*); not for secrets.
pub fn random_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_view::Fixed;

    #[test]
    fn the_most_loaded_of_three_is_never_picked() {
        let mut view = Fixed::all(3);
        view.outstanding = vec![1, 2, 50];
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[PowerOfTwoChoices.pick(&view).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        // Target 0 wins every pair it is in: two pairs of three.
        assert!(counts[0] > 1800 && counts[0] < 2200, "{counts:?}");
    }

    #[test]
    fn equal_loads_spread_over_all_targets() {
        let view = Fixed::all(4);
        let mut counts = [0; 4];
        for _ in 0..8000 {
            counts[PowerOfTwoChoices.pick(&view).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 1500), "{counts:?}");
    }

    #[test]
    fn one_eligible_target_is_always_the_answer() {
        let mut view = Fixed::all(3);
        view.eligible = vec![false, true, false];
        assert!((0..50).all(|_| PowerOfTwoChoices.pick(&view) == Some(1)));
        view.eligible = vec![false; 3];
        assert_eq!(PowerOfTwoChoices.pick(&view), None);
    }
}
