//! Small statistics (pure): medians, percentiles and the A/B round order
//! that cancels linear drift.

use std::time::Duration;

/// Median of `values` (mean of the middle two for an even count); `NaN`
/// for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Nearest-rank percentile `p` (0–100) of already sorted values; `NaN` for
/// none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Which side of an A/B comparison a measurement belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The path under test (through the service).
    A,
    /// The reference path (straight to the pod).
    B,
}

/// Order of the two measurements in round `round`: A B, B A, A B, ...
/// (an ABBA sequence, so a drift that is linear in time weighs on both
/// sides equally).
pub fn ab_order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::A, Side::B]
    } else {
        [Side::B, Side::A]
    }
}

/// Latency distribution of one run, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    /// Summarises `samples` (any order).
    pub fn of(samples: &[Duration]) -> Latency {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let mean = if us.is_empty() {
            f64::NAN
        } else {
            us.iter().sum::<f64>() / us.len() as f64
        };
        Latency {
            samples: us.len(),
            p50_us: percentile(&us, 50.0),
            p90_us: percentile(&us, 90.0),
            p99_us: percentile(&us, 99.0),
            max_us: us.last().copied().unwrap_or(f64::NAN),
            mean_us: mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn abba_order_balances_both_sides() {
        let seq: Vec<Side> = (0..4).flat_map(ab_order).collect();
        use Side::*;
        assert_eq!(seq, [A, B, B, A, A, B, B, A]);
        // Mean position of each side is the same: linear drift cancels.
        let mean = |s: Side| {
            let pos: Vec<usize> = (0..seq.len()).filter(|i| seq[*i] == s).collect();
            pos.iter().sum::<usize>() as f64 / pos.len() as f64
        };
        assert_eq!(mean(A), mean(B));
    }

    #[test]
    fn latency_summary() {
        let samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let l = Latency::of(&samples);
        assert_eq!(l.samples, 1000);
        assert_eq!(l.p50_us, 500.0);
        assert_eq!(l.p99_us, 990.0);
        assert_eq!(l.max_us, 1000.0);
        assert!((l.mean_us - 500.5).abs() < 1e-9);
    }
}
