//! The gate's report model and its verdict: per round the reference's and the candidate's
//! figures, per metric the paired ratio with its interval and whether it is within tolerance.
//! [`judge`] is a pure function of the rounds, so the rules are tested without a server;
//! [`write_table`] renders the model for a person to any `impl Write`.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::interval::{paired_ratio, Interval};
use super::recorded::Comparison;
use super::reference::{Candidate, Reference};
use crate::figures::{median, round_to};
use crate::journey::Machine;

/// One API's figures in one round.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct SideFigures {
    /// Closed loop: successful requests/s with the gate's users and no think time.
    pub rps: f64,
    /// p99 of the closed-loop requests, µs.
    pub p99_us: u64,
    /// The API process's CPU time per successful request in the closed-loop window, µs: what
    /// the code costs, which another process's burst on the same cores moves far less than it
    /// moves requests/s.
    pub cpu_us_per_request: f64,
    /// Paced at the gate's fixed offered rate: p99 µs and the rate goose delivered.
    pub paced_p99_us: u64,
    pub paced_rps: f64,
    /// Requests that failed (any kind), closed and paced together.
    pub errors: u64,
}

/// One round: both APIs measured back to back (which went first alternates).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Round {
    pub round: usize,
    pub reference_first: bool,
    pub reference: Option<SideFigures>,
    pub candidate: SideFigures,
}

/// What is compared.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Closed-loop successful requests/s: fails when the candidate's is lower.
    Throughput,
    /// p99 at the fixed offered rate: fails when the candidate's is higher.
    PacedP99,
    /// The API's CPU time per request: fails when the candidate's is higher.
    CpuPerRequest,
}

/// One metric's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricVerdict {
    pub metric: Metric,
    pub reference_median: f64,
    pub candidate_median: f64,
    /// candidate / reference, paired by round.
    pub ratio: Interval,
    /// The ratio's interval must not lie wholly past this (below it for throughput, above it for
    /// latency).
    pub limit: f64,
    pub passed: bool,
}

/// The tolerances the verdict uses.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Tolerances {
    /// Fail when the throughput ratio's whole interval is below `1 - throughput`.
    pub throughput: f64,
    /// Fail when the paced p99 ratio's whole interval is above `1 + latency`.
    pub latency: f64,
    /// Fail when the CPU-per-request ratio's whole interval is above `1 + cpu`.
    pub cpu: f64,
}

/// Everything one gate run measured and decided: written as JSON, rendered as a table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GateReport {
    pub recorded_at: String,
    pub machine: Machine,
    pub candidate: Candidate,
    pub candidate_pool_size: u32,
    /// Further flags the candidate API ran with.
    pub candidate_api_args: Vec<String>,
    /// The reference run side by side; `None` when there was none (see `reference_missing`).
    pub reference: Option<Reference>,
    pub reference_missing: Option<String>,
    pub products: u64,
    pub users: usize,
    pub round_secs: u64,
    /// The paced rounds' goose throttle setting (requests/s), the same for both APIs.
    pub paced_rate: u64,
    pub tolerances: Tolerances,
    pub rounds: Vec<Round>,
    pub metrics: Vec<MetricVerdict>,
    pub candidate_errors: u64,
    /// pgbench on the same replica before and after the rounds, for the trend across days.
    pub pgbench_tps: Vec<f64>,
    /// The candidate's median requests/s per pgbench transaction/s.
    pub normalized: f64,
    /// The same figure against `results/baseline.json`: the verdict only when there is no
    /// reference to run.
    pub recorded: Option<Comparison>,
    /// goose's own reports of round 1, the candidate's with deltas against the reference's.
    pub goose_reports: Vec<String>,
    pub passed: bool,
}

/// The verdict per metric from paired rounds; empty when no round has a reference.
pub fn judge(rounds: &[Round], tol: Tolerances) -> Vec<MetricVerdict> {
    let paired: Vec<(SideFigures, SideFigures)> = rounds
        .iter()
        .filter_map(|r| r.reference.map(|reference| (reference, r.candidate)))
        .collect();
    if paired.is_empty() {
        return Vec::new();
    }
    let verdict = |metric: Metric, get: &dyn Fn(&SideFigures) -> f64| {
        let ratios: Vec<f64> = paired.iter().map(|(r, c)| get(c) / get(r)).collect();
        // A zero on either side (nothing answered) is a failure, not a missing figure.
        let ratio = paired_ratio(&ratios).unwrap_or(Interval {
            estimate: 0.0,
            low: 0.0,
            high: 0.0,
        });
        let (limit, passed) = match metric {
            Metric::Throughput => (1.0 - tol.throughput, ratio.high >= 1.0 - tol.throughput),
            Metric::PacedP99 => (
                1.0 + tol.latency,
                ratio.estimate > 0.0 && ratio.low <= 1.0 + tol.latency,
            ),
            Metric::CpuPerRequest => (
                1.0 + tol.cpu,
                ratio.estimate > 0.0 && ratio.low <= 1.0 + tol.cpu,
            ),
        };
        let med = |xs: Vec<f64>| median(&xs).unwrap_or(0.0);
        MetricVerdict {
            metric,
            reference_median: med(paired.iter().map(|(r, _)| get(r)).collect()),
            candidate_median: med(paired.iter().map(|(_, c)| get(c)).collect()),
            ratio: Interval {
                estimate: round_to(ratio.estimate, 4),
                low: round_to(ratio.low, 4),
                high: round_to(ratio.high, 4),
            },
            limit: round_to(limit, 4),
            passed,
        }
    };
    vec![
        verdict(Metric::Throughput, &|s| s.rps),
        verdict(Metric::PacedP99, &|s| s.paced_p99_us as f64),
        verdict(Metric::CpuPerRequest, &|s| s.cpu_us_per_request),
    ]
}

/// The whole verdict: every metric within tolerance (or, without a reference, the recorded
/// figure's comparison), and no failed request on the candidate.
pub fn passed(
    metrics: &[MetricVerdict],
    recorded: Option<&Comparison>,
    candidate_errors: u64,
) -> bool {
    let within = if metrics.is_empty() {
        recorded.is_some_and(|c| c.passed)
    } else {
        metrics.iter().all(|m| m.passed)
    };
    within && candidate_errors == 0
}

/// The report as a table: one line per metric with reference, candidate, ratio and interval.
pub fn write_table(out: &mut impl Write, r: &GateReport) -> io::Result<()> {
    match (&r.reference, &r.reference_missing) {
        (Some(reference), _) => writeln!(
            out,
            "reference: {} ({}); candidate: {}{} with pool {}{}; {} rounds of {} s closed loop ({} users) and {} s paced at {} req/s",
            reference.commit.as_deref().map(short).unwrap_or("given program"),
            reference
                .build_secs
                .map(|s| format!("built in {s:.0} s"))
                .unwrap_or_else(|| reference.program.display().to_string()),
            r.candidate.commit.as_deref().map(short).unwrap_or("?"),
            if r.candidate.modified { " + modified files" } else { "" },
            r.candidate_pool_size,
            if r.candidate_api_args.is_empty() {
                String::new()
            } else {
                format!(" and {}", r.candidate_api_args.join(" "))
            },
            r.rounds.len(),
            r.round_secs,
            r.users,
            r.round_secs,
            r.paced_rate,
        )?,
        (None, Some(why)) => writeln!(
            out,
            "no reference run: {why}; the verdict is the recorded figure's"
        )?,
        (None, None) => writeln!(out, "no reference run")?,
    }
    writeln!(
        out,
        "{:<26} {:>12} {:>12} {:>8} {:>17} {:>8}  verdict",
        "metric (median of rounds)", "reference", "candidate", "ratio", "95% interval", "limit"
    )?;
    for m in &r.metrics {
        let (name, limit) = match m.metric {
            Metric::Throughput => ("requests/s, closed loop", format!(">= {:.2}", m.limit)),
            Metric::PacedP99 => ("p99 µs at the paced rate", format!("<= {:.2}", m.limit)),
            Metric::CpuPerRequest => ("API CPU µs per request", format!("<= {:.2}", m.limit)),
        };
        writeln!(
            out,
            "{name:<26} {:>12.1} {:>12.1} {:>8.3} {:>17} {limit:>8}  {}",
            m.reference_median,
            m.candidate_median,
            m.ratio.estimate,
            format!("[{:.3}, {:.3}]", m.ratio.low, m.ratio.high),
            if m.passed { "pass" } else { "FAIL" },
        )?;
    }
    if let Some(c) = &r.recorded {
        writeln!(
            out,
            "{:<26} {:>12.4} {:>12.4} {:>8.3} {:>17} {:>8}  {}",
            "recorded: req/s per pgbench",
            c.baseline,
            c.now,
            c.ratio,
            "",
            format!(">= {:.2}", 1.0 - c.tolerance),
            if r.metrics.is_empty() {
                if c.passed {
                    "pass"
                } else {
                    "FAIL"
                }
            } else {
                "(trend only)"
            },
        )?;
    }
    writeln!(
        out,
        "{}{}",
        if r.passed { "PASS" } else { "FAIL" },
        if r.candidate_errors > 0 {
            format!(": {} failed requests on the candidate", r.candidate_errors)
        } else {
            String::new()
        }
    )
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerances = Tolerances {
        throughput: 0.05,
        latency: 0.25,
        cpu: 0.05,
    };

    fn side(rps: f64, paced_p99_us: u64) -> SideFigures {
        SideFigures {
            rps,
            p99_us: 4_000,
            cpu_us_per_request: 1e6 / rps,
            paced_p99_us,
            paced_rps: 5_000.0,
            errors: 0,
        }
    }

    /// (requests/s, paced p99 µs) of one side in one round.
    type Side = (f64, u64);

    fn rounds(pairs: &[(Side, Side)]) -> Vec<Round> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (r, c))| Round {
                round: i + 1,
                reference_first: i % 2 == 0,
                reference: Some(side(r.0, r.1)),
                candidate: side(c.0, c.1),
            })
            .collect()
    }

    #[test]
    fn the_reference_against_itself_passes() {
        let r = rounds(&[
            ((10_000.0, 3_000), (10_150.0, 2_950)),
            ((9_800.0, 3_100), (9_700.0, 3_150)),
            ((10_200.0, 2_900), (10_100.0, 3_000)),
            ((9_900.0, 3_050), (10_000.0, 3_000)),
            ((10_050.0, 3_000), (9_950.0, 3_020)),
        ]);
        let v = judge(&r, TOL);
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|m| m.passed), "{v:?}");
        assert!(passed(&v, None, 0));
        assert!(!passed(&v, None, 1), "a failed request fails the run");
    }

    #[test]
    fn a_third_less_throughput_fails_and_says_by_how_much() {
        let r = rounds(&[
            ((15_000.0, 3_000), (9_800.0, 3_000)),
            ((14_500.0, 3_000), (9_500.0, 3_000)),
            ((15_200.0, 3_000), (10_000.0, 3_000)),
        ]);
        let v = judge(&r, TOL);
        let t = &v[0];
        assert_eq!(t.metric, Metric::Throughput);
        assert!(!t.passed);
        assert!((t.ratio.estimate - 0.655).abs() < 0.01, "{t:?}");
        assert!(t.ratio.high < 0.95);
        assert!(!passed(&v, None, 0));
    }

    #[test]
    fn a_noisy_round_that_still_overlaps_the_limit_passes() {
        // Estimate below the limit, but the interval reaches above it: not proven slower.
        let r = rounds(&[
            ((10_000.0, 3_000), (8_800.0, 3_000)),
            ((10_000.0, 3_000), (10_200.0, 3_000)),
            ((10_000.0, 3_000), (8_900.0, 3_000)),
        ]);
        let t = &judge(&r, TOL)[0];
        assert!(t.ratio.estimate < 0.95 && t.ratio.high >= 0.95, "{t:?}");
        assert!(t.passed);
    }

    #[test]
    fn a_grown_tail_at_the_paced_rate_fails_latency_alone() {
        let r = rounds(&[
            ((10_000.0, 3_000), (10_000.0, 5_000)),
            ((10_000.0, 3_100), (10_050.0, 5_200)),
            ((10_000.0, 2_900), (9_950.0, 4_800)),
        ]);
        let v = judge(&r, TOL);
        assert!(v[0].passed);
        assert_eq!(v[1].metric, Metric::PacedP99);
        assert!(!v[1].passed, "{:?}", v[1]);
        assert!(!passed(&v, None, 0));
    }

    #[test]
    fn a_candidate_that_answered_nothing_fails() {
        let r = rounds(&[((10_000.0, 3_000), (0.0, 0))]);
        let v = judge(&r, TOL);
        assert!(v.iter().all(|m| !m.passed), "{v:?}");
    }

    #[test]
    fn without_a_reference_the_recorded_figure_decides() {
        let mut r = rounds(&[((10_000.0, 3_000), (10_000.0, 3_000))]);
        r[0].reference = None;
        let v = judge(&r, TOL);
        assert!(v.is_empty());
        let cmp = |passed| Comparison {
            baseline: 0.5,
            now: 0.5,
            ratio: 1.0,
            tolerance: 0.3,
            passed,
        };
        assert!(passed(&v, Some(&cmp(true)), 0));
        assert!(!passed(&v, Some(&cmp(false)), 0));
        assert!(!passed(&v, None, 0), "nothing to decide with is not a pass");
    }
}
