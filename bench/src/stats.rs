//! Latency recording and the summaries every figure is built from: p50/p99 from an HDR histogram of
//! one round, and field-wise medians across rounds (these machines are noisy: one round proves little).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Latencies of one round, in nanoseconds (1 ns to 60 s, 3 significant digits).
#[derive(Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts; a failure here is a programming error.
        let hist =
            Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
        Latencies { hist }
    }

    pub fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns);
    }

    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// The round's summary; `elapsed` is the wall time of the whole round (for calls/s).
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let calls = self.count();
        Summary {
            calls,
            p50_us: self.quantile_us(0.50),
            p99_us: self.quantile_us(0.99),
            mean_us: self.hist.mean() / 1000.0,
            calls_per_s: if elapsed.is_zero() {
                0.0
            } else {
                calls as f64 / elapsed.as_secs_f64()
            },
        }
    }
}

/// One round of one measurement.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub calls: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub calls_per_s: f64,
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Field-wise medians of several rounds (calls are summed).
pub fn median_of(rounds: &[Summary]) -> Summary {
    Summary {
        calls: rounds.iter().map(|r| r.calls).sum(),
        p50_us: median(rounds.iter().map(|r| r.p50_us)),
        p99_us: median(rounds.iter().map(|r| r.p99_us)),
        mean_us: median(rounds.iter().map(|r| r.mean_us)),
        calls_per_s: median(rounds.iter().map(|r| r.calls_per_s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median([]), 0.0);
    }

    #[test]
    fn summary_of_known_latencies() {
        let mut l = Latencies::new();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary(Duration::from_secs(1));
        assert_eq!(s.calls, 100);
        assert!((s.p50_us - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_us - 99.0).abs() < 0.1, "{s:?}");
        assert_eq!(s.calls_per_s, 100.0);
    }
}
