//! Rate limits: a token bucket per client address (GCRA, by the governor crate), answered
//! 429 with Retry-After when empty.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How often (in checks) the table of client buckets forgets clients that went quiet.
const SWEEP_EVERY: u64 = 4096;

/// One rate limit: `per_ip` requests per second per client, bursts up to `burst`.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    checks: AtomicU64,
    /// The settings it was built from, to tell whether a reload changed them.
    pub settings: (u32, u32),
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("settings", &self.settings).finish()
    }
}

impl RateLimit {
    /// A limit of `per_ip` requests per second with bursts of `burst` (default: `per_ip`).
    pub fn new(per_ip: u32, burst: Option<u32>) -> Self {
        let rate = NonZeroU32::new(per_ip.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst_size = burst.unwrap_or(per_ip).max(1);
        let burst_nz = NonZeroU32::new(burst_size).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst_nz)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
            settings: (per_ip, burst_size),
        }
    }

    /// Takes a token for `ip`, or says how long until one is free.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The value of a Retry-After header for a wait: whole seconds, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_bucket_refuses_and_refills() {
        let limit = RateLimit::new(10, Some(3));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
        }
        let wait = limit.check(a).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limit.check(b).is_ok(), "each client has its own bucket");
        std::thread::sleep(Duration::from_millis(110));
        assert!(limit.check(a).is_ok(), "a token came back");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2100)), 3);
    }
}
