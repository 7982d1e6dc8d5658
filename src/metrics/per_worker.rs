//! Counters and a histogram kept per worker thread and summed when read. Each request
//! touches them; a counter shared by the workers moves its cache line between cores with
//! every request (and the histogram took a lock), while a worker's own slot stays in its
//! core's cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per metric: workers beyond this many share slots (still correct, only slower).
const SLOTS: usize = 8;

/// The calling worker's slot (threads that are not workers share worker 0's).
fn slot() -> usize {
    crate::shards::current() % SLOTS
}

/// A value on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line(AtomicU64);

/// A counter's value, one slot per worker; `get` sums them.
#[derive(Debug, Default)]
pub struct PerWorker([Line; SLOTS]);

impl Atomic<u64> for PerWorker {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    fn inc_by(&self, v: u64) -> u64 {
        self.0[slot()].0.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|line| line.0.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

/// A Prometheus counter kept per worker.
pub type WorkerCounter = Counter<u64, PerWorker>;

/// Upper bounds of the response-time buckets, in seconds: 0.5 ms doubling to 16.4 s, then
/// everything (+Inf).
const BOUNDS: usize = 16;
const FIRST_BOUND: f64 = 0.0005;
const BUCKETS: usize = BOUNDS + 1;

fn bound(i: usize) -> f64 {
    if i < BOUNDS {
        FIRST_BOUND * f64::from(1u32 << i)
    } else {
        f64::MAX
    }
}

/// One worker's share of a histogram.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Share {
    count: AtomicU64,
    /// Nanoseconds.
    sum: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// A Prometheus histogram of durations (the response-time buckets), kept per worker.
#[derive(Debug, Clone, Default)]
pub struct WorkerHistogram(Arc<[Share; SLOTS]>);

impl WorkerHistogram {
    /// Counts one duration of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let share = &self.0[slot()];
        let bucket = (0..BOUNDS).find(|&i| seconds <= bound(i)).unwrap_or(BOUNDS);
        share.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        share.count.fetch_add(1, Ordering::Relaxed);
        share.sum.fetch_add((seconds * 1e9).round() as u64, Ordering::Relaxed);
    }

    /// The sum (seconds), the count, and each bucket's own count with its upper bound.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = (0..BUCKETS).map(|i| (bound(i), 0)).collect();
        let (mut sum, mut count) = (0u64, 0u64);
        for share in self.0.iter() {
            sum = sum.wrapping_add(share.sum.load(Ordering::Relaxed));
            count = count.wrapping_add(share.count.load(Ordering::Relaxed));
            for (total, bucket) in buckets.iter_mut().zip(&share.buckets) {
                total.1 += bucket.load(Ordering::Relaxed);
            }
        }
        (sum as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for WorkerHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for WorkerHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<()>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn counts_from_every_thread_add_up() {
        let counter = WorkerCounter::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                });
            }
        });
        counter.inc_by(5);
        assert_eq!(counter.get(), 4005);
    }

    #[test]
    fn the_histogram_reads_as_prometheus_client_s_own() {
        let ours = WorkerHistogram::default();
        let theirs = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16));
        for seconds in [0.0001, 0.0005, 0.0006, 0.003, 0.25, 2.0, 40.0] {
            ours.observe(seconds);
            theirs.observe(seconds);
        }
        let (mut a, mut b) = (Registry::default(), Registry::default());
        a.register("t", "times", ours);
        b.register("t", "times", theirs);
        assert_eq!(text(&a), text(&b));
    }
}
