//! A Prometheus histogram whose observations take no lock.
//!
//! prometheus-client's `Histogram` takes a write lock on every
//! observation; with every request observing the same series from every
//! worker thread, that lock was contended and its waiters slept in the
//! kernel (futex). Here each bucket, the count and the sum are atomics:
//! an observation is three relaxed additions. A scrape reads them one by
//! one, so it may see an observation in the count and not yet in its
//! bucket; Prometheus tolerates that, and the next scrape is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending, the last `f64::MAX` (rendered `+Inf`).
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative), one per bound.
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// In nanoseconds: an integer sum needs no compare-and-swap loop.
    sum_nanos: AtomicU64,
}

/// A histogram of durations in seconds (cheap to clone: shared).
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

impl AtomicHistogram {
    /// Buckets with these upper bounds (ascending), and `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram {
            inner: Arc::new(Inner {
                bounds,
                counts,
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration (negative and NaN count as 0, huge ones in
    /// the `+Inf` bucket).
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_nan() {
            0.0
        } else {
            seconds.max(0.0)
        };
        let inner = &*self.inner;
        let bucket = inner
            .bounds
            .partition_point(|bound| *bound < seconds)
            .min(inner.counts.len() - 1);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
        // `as` saturates: a duration past u64 nanoseconds (584 years) stays there.
        inner
            .sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// (sum in seconds, count, (upper bound, observations) per bucket).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let buckets = inner
            .bounds
            .iter()
            .zip(&inner.counts)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        (
            inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            inner.count.load(Ordering::Relaxed),
            buckets,
        )
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
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
    use proptest::prelude::*;

    fn render(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    proptest! {
        /// Renders exactly as prometheus-client's own histogram, for any
        /// durations (to the nanosecond the sum keeps).
        #[test]
        fn renders_as_the_locking_histogram(values in prop::collection::vec(0u64..5_000_000_000, 0..50)) {
            let bounds = [0.000_05, 0.001, 0.1, 1.0];
            let ours = AtomicHistogram::new(bounds);
            let theirs = Histogram::new(bounds);
            for nanos in &values {
                let seconds = *nanos as f64 / 1e9;
                ours.observe(seconds);
                theirs.observe(seconds);
            }
            let a = render(|r| r.register("d", "h", ours.clone()));
            let b = render(|r| r.register("d", "h", theirs.clone()));
            let strip_sum = |t: &str| t.lines().filter(|l| !l.starts_with("d_sum")).collect::<Vec<_>>().join("\n");
            prop_assert_eq!(strip_sum(&a), strip_sum(&b));
            let sum = |t: &str| t.lines().find_map(|l| l.strip_prefix("d_sum ")).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            prop_assert!((sum(&a) - sum(&b)).abs() < 1e-6, "{} vs {}", sum(&a), sum(&b));
        }
    }

    #[test]
    fn odd_values_land_somewhere_sane() {
        let h = AtomicHistogram::new([1.0]);
        h.observe(f64::NAN);
        h.observe(-3.0);
        h.observe(f64::INFINITY);
        h.observe(1.0);
        let (_, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert_eq!(buckets, [(1.0, 3), (f64::MAX, 1)]);
    }

    #[test]
    fn threads_lose_no_observation() {
        let h = AtomicHistogram::new([0.5]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..10_000).for_each(|_| h.observe(0.25)));
            }
        });
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 40_000);
        assert_eq!(buckets[0].1, 40_000);
        assert!((sum - 10_000.0).abs() < 1e-6);
    }
}
