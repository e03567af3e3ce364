//! A confidence interval for "candidate / reference" over paired rounds.
//!
//! Each round measures the reference and the candidate back to back, so one round's ratio has
//! the machine's momentary noise mostly cancelled; what is left varies from round to round. The
//! estimate is the geometric mean of the per-round ratios (a ratio of 0.5 and one of 2.0 average
//! to 1.0, as they should), and the interval is a percentile bootstrap over the rounds: resample
//! the rounds with replacement many times, take the geometric mean of each resample, and read the
//! 2.5th and 97.5th percentiles. The resampling uses a fixed seed, so the same rounds always give
//! the same interval.
//!
//! With five or six rounds a percentile bootstrap is somewhat narrower than the true 95%
//! interval; the gate's tolerance is chosen from a measured A/A study (`results/baseline.md`), so
//! what matters is how often the reference against itself would fail, and that is measured.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How many resamples the bootstrap draws: enough that the percentiles are stable to about 0.1%.
const RESAMPLES: usize = 10_000;
const SEED: u64 = 0x6761_7465; // "gate"

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// The geometric mean of `ratios` and its bootstrap interval; `None` without a usable ratio
/// (empty, or a ratio that is not a positive finite number).
pub fn paired_ratio(ratios: &[f64]) -> Option<Interval> {
    if ratios.is_empty() || ratios.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return None;
    }
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = |xs: &mut dyn Iterator<Item = f64>, n: usize| xs.sum::<f64>() / n as f64;
    let n = logs.len();
    let estimate = mean(&mut logs.iter().copied(), n).exp();
    if n == 1 {
        return Some(Interval {
            estimate,
            low: estimate,
            high: estimate,
        });
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| mean(&mut (0..n).map(|_| logs[rng.gen_range(0..n)]), n))
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((RESAMPLES - 1) as f64 * q).round() as usize].exp();
    Some(Interval {
        estimate,
        low: at(0.025),
        high: at(0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rounds_give_a_point() {
        let i = paired_ratio(&[0.8, 0.8, 0.8, 0.8]).unwrap();
        assert!((i.estimate - 0.8).abs() < 1e-12);
        assert!((i.low - 0.8).abs() < 1e-12 && (i.high - 0.8).abs() < 1e-12);
    }

    #[test]
    fn the_estimate_is_the_geometric_mean_and_lies_inside_its_interval() {
        let i = paired_ratio(&[0.5, 2.0]).unwrap();
        assert!((i.estimate - 1.0).abs() < 1e-12);
        let i = paired_ratio(&[0.97, 1.02, 1.01, 0.99, 1.03, 0.98]).unwrap();
        assert!(i.low < i.estimate && i.estimate < i.high);
        assert!(i.low > 0.97 && i.high < 1.03, "{i:?}");
    }

    #[test]
    fn more_spread_gives_a_wider_interval() {
        let tight = paired_ratio(&[0.99, 1.01, 1.0, 0.995, 1.005]).unwrap();
        let loose = paired_ratio(&[0.9, 1.1, 1.0, 0.95, 1.05]).unwrap();
        assert!(loose.high - loose.low > 5.0 * (tight.high - tight.low));
    }

    #[test]
    fn the_same_rounds_always_give_the_same_interval() {
        let r = [0.91, 0.97, 1.04, 0.88, 1.0];
        assert_eq!(paired_ratio(&r), paired_ratio(&r));
    }

    #[test]
    fn no_usable_ratio_gives_nothing() {
        assert_eq!(paired_ratio(&[]), None);
        assert_eq!(paired_ratio(&[1.0, 0.0]), None);
        assert_eq!(paired_ratio(&[1.0, f64::NAN]), None);
        assert_eq!(paired_ratio(&[f64::INFINITY]), None);
    }
}
