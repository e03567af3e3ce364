//! The drill's result: the model ([`DrillReport`], one [`FaultResult`] per fault) and its
//! renderers, JSON and a Markdown table, each to any [`std::io::Write`] as the journey's report
//! does. The verdict of each fault against the target is decided here, from the figures.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::journey::Machine;

/// How soon after a replica's return answers must be back where no replica could answer.
pub const RECOVERY_TARGET_MS: f64 = 5000.0;
/// How fast a 503 must come where no replica can answer: well under a user's patience, and
/// under the API's 2 s request deadline (a 503 that waits for the deadline is a hang).
pub const FAST_FAILURE_MS: f64 = 1000.0;

/// One drill run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillReport {
    /// UTC start, `YYYY-MM-DD HH:MM:SS`.
    pub started: String,
    /// The command line that produced it.
    pub command: String,
    pub machine: Machine,
    pub setup: DrillSetup,
    pub faults: Vec<FaultResult>,
    /// Every fault met the target.
    pub target_met: bool,
}

/// The topology and the traffic every fault ran under.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillSetup {
    pub replicas: usize,
    pub api_instances: usize,
    pub products: u64,
    /// Requests per second asked of the workers together.
    pub rate_per_sec: f64,
    pub workers: usize,
    /// `max_connections` of every server.
    pub max_connections: u32,
    pub pool_size: u32,
    /// Seconds of steady traffic before each fault (its success rate is the baseline).
    pub settle_secs: f64,
    /// Seconds each fault holds (a down node stays down this long).
    pub hold_secs: f64,
    pub saturation_secs: f64,
    /// Seconds of traffic watched after each restore.
    pub observe_secs: f64,
}

/// What one fault did to the traffic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultResult {
    /// Short name (`replica-kill`, ...), as `--faults` takes it.
    pub name: String,
    /// What was done, in words.
    pub action: String,
    /// No replica could answer during the fault: 503s are the expected answer.
    pub no_replica_can_answer: bool,
    /// From the fault's start to the restore, in seconds.
    pub fault_secs: f64,
    /// Answers from the fault's start to the end of the observation after the restore.
    pub requests: u64,
    pub ok: u64,
    /// Failed requests by kind (`http_503`, `timeout`, ...).
    pub failed: BTreeMap<String, u64>,
    /// Failed requests that were 503s with `Retry-After`.
    pub failed_with_retry_after: u64,
    /// Slowest failed request, ms.
    pub slowest_failure_ms: Option<f64>,
    /// Longest stretch with no successful answer, ms.
    pub longest_gap_ms: f64,
    /// Successful answers per second before the fault.
    pub baseline_ok_per_sec: f64,
    /// From the restore to the first clean second at half the baseline rate or more, ms.
    pub rate_back_ms: Option<f64>,
    /// From the restore to the restored node's first answered query (its counter rising on
    /// the API instances), ms; `None` where no node was restored or it never served again.
    pub node_serves_ms: Option<f64>,
    /// Whether a restored node was watched for serving again.
    pub node_watched: bool,
    /// Time to recover: the later of `rate_back_ms` and `node_serves_ms`.
    pub recovery_ms: Option<f64>,
    /// Anything measured on the way (connections opened, budgets, ...).
    pub note: String,
    pub meets_target: bool,
    /// Why it meets the target or not, in words.
    pub verdict: String,
}

impl FaultResult {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Fill `recovery_ms`, `meets_target` and `verdict` from the figures.
    pub fn judge(&mut self) {
        self.recovery_ms = match (self.rate_back_ms, self.node_serves_ms, self.node_watched) {
            (Some(r), Some(n), _) => Some(r.max(n)),
            (Some(r), None, false) => Some(r),
            _ => None,
        };
        let failed = self.failed_total();
        let mut problems = Vec::new();
        if self.no_replica_can_answer {
            let not_503 = failed - self.failed.get("http_503").copied().unwrap_or(0);
            if not_503 > 0 {
                problems.push(format!("{not_503} failures were not 503s"));
            }
            if self.failed_with_retry_after < self.failed.get("http_503").copied().unwrap_or(0) {
                problems.push("a 503 without Retry-After".to_string());
            }
            if let Some(ms) = self.slowest_failure_ms.filter(|&ms| ms > FAST_FAILURE_MS) {
                problems.push(format!("a failure took {ms:.0} ms"));
            }
            match self.recovery_ms {
                Some(ms) if ms <= RECOVERY_TARGET_MS => {}
                Some(ms) => problems.push(format!("recovered {ms:.0} ms after the return")),
                None => problems.push("did not recover while watched".into()),
            }
        } else {
            if failed > 0 {
                problems.push(format!("{failed} failed requests"));
            }
            if self.node_watched && self.node_serves_ms.is_none() {
                problems.push("the restored node was not used again while watched".into());
            }
        }
        self.meets_target = problems.is_empty();
        self.verdict = if self.meets_target {
            if self.no_replica_can_answer {
                format!(
                    "meets: only fast 503s with Retry-After, back {:.0} ms after a replica's return",
                    self.recovery_ms.unwrap_or(0.0)
                )
            } else {
                "meets: 0 failed requests".into()
            }
        } else {
            format!("FAILS: {}", problems.join("; "))
        };
    }
}

/// Every figure, pretty-printed, with a final newline.
pub fn write_json(report: &DrillReport, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report)?;
    w.write_all(b"\n")
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn failures(f: &FaultResult) -> String {
    if f.failed.is_empty() {
        return "0".into();
    }
    let kinds: Vec<String> = f.failed.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} ({})", f.failed_total(), kinds.join(", "))
}

/// The table, with the setup above it and the definitions below.
pub fn write_markdown(report: &DrillReport, w: &mut impl Write) -> io::Result<()> {
    let s = &report.setup;
    writeln!(
        w,
        "Fault drill, {} UTC: {} replicas, {} API instances behind nginx (pool {} per replica), \
         {} products, {} requests/s from {} paced workers; {} s of traffic before each fault, \
         faults held {} s (saturation {} s), {} s watched after each restore.",
        report.started,
        s.replicas,
        s.api_instances,
        s.pool_size,
        s.products,
        s.rate_per_sec,
        s.workers,
        s.settle_secs,
        s.hold_secs,
        s.saturation_secs,
        s.observe_secs
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "| # | fault | what was done | requests | failed (by kind) | 503 with Retry-After | slowest failure ms | longest gap without a success ms | throughput back ms | node serves again ms | recovery ms | target |"
    )?;
    writeln!(
        w,
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for (i, f) in report.faults.iter().enumerate() {
        let action = if f.note.is_empty() {
            f.action.clone()
        } else {
            format!("{} ({})", f.action, f.note)
        };
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            i + 1,
            f.name,
            action.replace('|', "/"),
            f.requests,
            failures(f),
            f.failed_with_retry_after,
            ms(f.slowest_failure_ms),
            f.longest_gap_ms,
            ms(f.rate_back_ms),
            if f.node_watched {
                ms(f.node_serves_ms)
            } else {
                "n/a".into()
            },
            ms(f.recovery_ms),
            f.verdict
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "Requests are the answers that arrived from the fault's start to the end of the watch after \
         its restore. The longest gap is the longest time in that window with no successful answer \
         (its edges included). The restore is the moment the node is back (a restarted server \
         accepts connections, a frozen one is sent SIGCONT, held connections are closed, the CPU \
         budget is lifted). Throughput is back at the start of the first one-second window after \
         the restore with no failed request and at least half the successes per second of the {} s \
         before the fault; the node serves again when its query counter (api_replica_queries_total, \
         or an API instance's own request counter) rises on the API instances. Time to recover is \
         the later of the two. Target: 0 failed requests, except where no replica can answer at all: \
         there only 503s with Retry-After, each under {} ms, and recovery within {} ms of a \
         replica's return.",
        s.settle_secs, FAST_FAILURE_MS, RECOVERY_TARGET_MS
    )?;
    writeln!(
        w,
        "\n{}",
        if report.target_met {
            "Every fault meets the target."
        } else {
            "Not every fault meets the target (see the last column)."
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(no_replica: bool) -> FaultResult {
        FaultResult {
            name: "replica-kill".into(),
            action: "kill -9 of replica1".into(),
            no_replica_can_answer: no_replica,
            fault_secs: 5.0,
            requests: 1000,
            ok: 1000,
            failed: BTreeMap::new(),
            failed_with_retry_after: 0,
            slowest_failure_ms: None,
            longest_gap_ms: 12.0,
            baseline_ok_per_sec: 200.0,
            rate_back_ms: Some(0.0),
            node_serves_ms: Some(300.0),
            node_watched: true,
            recovery_ms: None,
            note: String::new(),
            meets_target: false,
            verdict: String::new(),
        }
    }

    #[test]
    fn a_failure_where_a_replica_could_answer_fails_the_target() {
        let mut f = fault(false);
        f.judge();
        assert!(f.meets_target, "{}", f.verdict);
        assert_eq!(f.recovery_ms, Some(300.0));
        f.failed.insert("http_504".into(), 2);
        f.judge();
        assert!(!f.meets_target);
        assert_eq!(f.verdict, "FAILS: 2 failed requests");
        let mut unused = fault(false);
        unused.node_serves_ms = None;
        unused.judge();
        assert!(!unused.meets_target && unused.recovery_ms.is_none());
    }

    #[test]
    fn with_no_replica_only_fast_503s_with_retry_after_and_a_quick_return_pass() {
        let mut f = fault(true);
        f.failed.insert("http_503".into(), 50);
        f.failed_with_retry_after = 50;
        f.slowest_failure_ms = Some(20.0);
        f.rate_back_ms = Some(400.0);
        f.judge();
        assert!(f.meets_target, "{}", f.verdict);
        f.slowest_failure_ms = Some(2000.0);
        f.failed_with_retry_after = 49;
        f.rate_back_ms = Some(7000.0);
        f.judge();
        assert_eq!(
            f.verdict,
            "FAILS: a 503 without Retry-After; a failure took 2000 ms; recovered 7000 ms after the return"
        );
    }
}
