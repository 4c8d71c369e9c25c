//! Percentiles over a sorted sample (exact, nearest rank).

use serde_json::{Value, json};
use std::time::Duration;

/// Latency figures of one sample, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank percentile `p` (0–100) of an ascending slice (the default value
/// for an empty one).
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    #[must_use]
    pub fn of(mut sample: Vec<Duration>) -> Self {
        if sample.is_empty() {
            return Self::default();
        }
        sample.sort_unstable();
        let total: Duration = sample.iter().sum();
        #[allow(clippy::cast_precision_loss)]
        let mean = ms(total) / sample.len() as f64;
        Self {
            n: sample.len(),
            min: ms(sample[0]),
            p50: ms(percentile(&sample, 50.0)),
            p90: ms(percentile(&sample, 90.0)),
            p99: ms(percentile(&sample, 99.0)),
            max: ms(sample[sample.len() - 1]),
            mean,
        }
    }

    /// `p50 1.23 ms, p90 …, p99 …, max …`
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            self.p50, self.p90, self.p99, self.max, self.n
        )
    }

    #[must_use]
    pub fn json(&self) -> Value {
        json!({
            "n": self.n,
            "min_ms": round3(self.min),
            "p50_ms": round3(self.p50),
            "p90_ms": round3(self.p90),
            "p99_ms": round3(self.p99),
            "max_ms": round3(self.max),
            "mean_ms": round3(self.mean),
        })
    }
}

/// Rounds to three decimals for compact JSON.
#[must_use]
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let sum = Summary::of(s);
        assert!((sum.p50 - 50.0).abs() < 1e-9);
        assert!((sum.p99 - 99.0).abs() < 1e-9);
        assert!((sum.max - 100.0).abs() < 1e-9);
        assert!((sum.min - 1.0).abs() < 1e-9);
        let one = Summary::of(vec![Duration::from_millis(7)]);
        assert!((one.p99 - 7.0).abs() < 1e-9);
    }
}
