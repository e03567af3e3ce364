//! What one fault did to the traffic, from the drill's [`Event`]s alone: requests, failures by
//! kind, the longest stretch with no successful answer, and when throughput came back after the
//! restore. Pure functions over the event list, so the definitions are tested on made-up
//! timelines.

use std::collections::BTreeMap;

use super::traffic::{Event, Outcome};

/// The window "throughput is back" is judged over, after the restore.
pub const RATE_WINDOW_US: u64 = 1_000_000;
/// Steps at which a candidate window may start.
const RATE_STEP_US: u64 = 100_000;
/// Share of the pre-fault success rate a window must reach to count as "back".
pub const RATE_BACK_SHARE: f64 = 0.5;

/// Counts of the answers that arrived in one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub ok: u64,
    /// Failed requests by kind (`http_503`, `timeout`, ...).
    pub failed: BTreeMap<String, u64>,
    /// Failed requests that were a 503 carrying `Retry-After`.
    pub with_retry_after: u64,
    /// Slowest failed request, in ms (a 503 should come fast).
    pub slowest_failure_ms: Option<f64>,
    /// Longest time without a successful answer, in ms, window edges included.
    pub longest_gap_ms: f64,
}

impl Counts {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Counts over the answers that arrived in `[from_us, to_us)`.
pub fn count(events: &[Event], from_us: u64, to_us: u64) -> Counts {
    let mut counts = Counts::default();
    let mut ok_times = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.at_us >= from_us && e.at_us < to_us)
    {
        counts.requests += 1;
        match e.outcome.failure_kind() {
            None => {
                counts.ok += 1;
                ok_times.push(e.at_us);
            }
            Some(kind) => {
                *counts.failed.entry(kind).or_default() += 1;
                if let Outcome::Status {
                    code: 503,
                    retry_after: true,
                } = e.outcome
                {
                    counts.with_retry_after += 1;
                }
                let ms = e.latency_us as f64 / 1000.0;
                counts.slowest_failure_ms = Some(counts.slowest_failure_ms.unwrap_or(0.0).max(ms));
            }
        }
    }
    ok_times.sort_unstable();
    counts.longest_gap_ms = longest_gap_us(&ok_times, from_us, to_us) as f64 / 1000.0;
    counts
}

/// The longest interval in `[from, to]` holding no time of `sorted`.
fn longest_gap_us(sorted: &[u64], from: u64, to: u64) -> u64 {
    let mut last = from;
    let mut longest = 0;
    for &t in sorted {
        longest = longest.max(t.saturating_sub(last));
        last = t;
    }
    longest.max(to.saturating_sub(last))
}

/// Successful answers per second in `[from_us, to_us)`.
pub fn ok_rate(events: &[Event], from_us: u64, to_us: u64) -> f64 {
    let ok = events
        .iter()
        .filter(|e| e.at_us >= from_us && e.at_us < to_us && e.outcome == Outcome::Ok)
        .count();
    ok as f64 / ((to_us.saturating_sub(from_us)).max(1) as f64 / 1e6)
}

/// How long after `restore_us` throughput was back: the start of the first one-second window
/// (starting at the restore or a multiple of 100 ms after it, and ending before `to_us`) in
/// which no request failed and successes reached [`RATE_BACK_SHARE`] of `baseline_per_sec`.
/// `None` when no such window fits before `to_us`.
pub fn rate_back_after(
    events: &[Event],
    restore_us: u64,
    to_us: u64,
    baseline_per_sec: f64,
) -> Option<u64> {
    let need = baseline_per_sec * RATE_BACK_SHARE * (RATE_WINDOW_US as f64 / 1e6);
    let mut start = restore_us;
    while start + RATE_WINDOW_US <= to_us {
        let end = start + RATE_WINDOW_US;
        let (mut ok, mut failed) = (0u64, 0u64);
        for e in events.iter().filter(|e| e.at_us >= start && e.at_us < end) {
            match e.outcome {
                Outcome::Ok => ok += 1,
                _ => failed += 1,
            }
        }
        if failed == 0 && ok as f64 >= need {
            return Some(start - restore_us);
        }
        start += RATE_STEP_US;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(at_ms: u64) -> Event {
        Event {
            at_us: at_ms * 1000,
            latency_us: 2000,
            outcome: Outcome::Ok,
        }
    }

    fn unavailable(at_ms: u64, retry_after: bool) -> Event {
        Event {
            at_us: at_ms * 1000,
            latency_us: 3000,
            outcome: Outcome::Status {
                code: 503,
                retry_after,
            },
        }
    }

    /// Successes every 10 ms from `from` to `to` (ms).
    fn steady(from: u64, to: u64) -> Vec<Event> {
        (from / 10..to / 10).map(|i| ok(i * 10)).collect()
    }

    #[test]
    fn counts_failures_by_kind_and_the_longest_gap_includes_the_edges() {
        let mut events = steady(0, 1000);
        events.retain(|e| !(300_000..700_000).contains(&e.at_us));
        events.push(unavailable(400, true));
        events.push(unavailable(500, false));
        events.push(Event {
            at_us: 600_000,
            latency_us: 10_000_000,
            outcome: Outcome::Timeout,
        });
        let c = count(&events, 0, 1_000_000);
        assert_eq!(c.requests, 60 + 3);
        assert_eq!(c.ok, 60);
        assert_eq!(c.failed_total(), 3);
        assert_eq!(c.failed.get("http_503"), Some(&2));
        assert_eq!(c.failed.get("timeout"), Some(&1));
        assert_eq!(c.with_retry_after, 1);
        assert_eq!(c.slowest_failure_ms, Some(10_000.0));
        // Last success at 290 ms, next at 700 ms.
        assert_eq!(c.longest_gap_ms, 410.0);
        // Nothing after 990 ms in a window to 3 s: the gap runs to the window's end.
        assert_eq!(count(&events, 0, 3_000_000).longest_gap_ms, 2010.0);
        assert_eq!(count(&[], 0, 500_000).longest_gap_ms, 500.0);
    }

    #[test]
    fn throughput_is_back_at_the_first_clean_window_at_half_the_baseline() {
        // 100/s until 2 s, nothing until 3 s, 503s until 3.5 s, then 100/s again.
        let mut events = steady(0, 2000);
        events.extend((300..350).map(|i| unavailable(i * 10, true)));
        events.extend(steady(3500, 8000));
        let baseline = ok_rate(&events, 0, 2_000_000);
        assert!((baseline - 100.0).abs() < 0.01);
        // Restored at 3 s: windows from 3.0 s hold 503s; from 3.5 s it is clean and full.
        assert_eq!(
            rate_back_after(&events, 3_000_000, 8_000_000, baseline),
            Some(500_000)
        );
        // Before the restore's window ends there is no full window: not back.
        assert_eq!(
            rate_back_after(&events, 3_000_000, 3_900_000, baseline),
            None
        );
        // A clean but thin trickle is not "back".
        let thin: Vec<Event> = (0..10).map(|i| ok(5000 + i * 100)).collect();
        assert_eq!(rate_back_after(&thin, 5_000_000, 7_000_000, 100.0), None);
    }
}
