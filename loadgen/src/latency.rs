//! Latency with microsecond precision, shared by every simulated user of a run.
//!
//! goose's own reports round to whole milliseconds, which hides everything interesting about an
//! API that answers in a few hundred microseconds, so each request's time is also recorded here
//! in an HdrHistogram (3 significant digits, 1 µs to 60 s).
//!
//! Coordinated omission: the load is a closed model (each user sends its next request when the
//! previous one returns, no think time), so a server stall also stops the clock of the users
//! waiting on it. Each user therefore records with [`hdrhistogram::Histogram::record_correct`],
//! using its own running mean latency as the expected interval: the histogram gets the requests
//! that a steady client would have sent during the stall (the same idea as goose's
//! `--co-mitigation average`). Raw and corrected percentiles are both reported.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const MAX_MICROS: u64 = 60_000_000;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// The recorder for one measured run: requests before the window opens are warm-up and ignored,
/// and so are those that complete after it closed. One lock per request covers both the window
/// check and the two histograms.
pub struct LatencyRecorder {
    inner: Mutex<Window>,
}

struct Window {
    raw: Histogram<u64>,
    corrected: Histogram<u64>,
    from: Instant,
    until: Option<Instant>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Window {
                raw: new_histogram(),
                corrected: new_histogram(),
                from: Instant::now(),
                until: None,
            }),
        }
    }
}

impl LatencyRecorder {
    /// Forget everything and measure from `warmup` after now.
    pub fn reset(&self, warmup: Duration) {
        let mut w = self.inner.lock().unwrap();
        w.raw.reset();
        w.corrected.reset();
        w.from = Instant::now() + warmup;
        w.until = None;
    }

    /// Stop counting (requests still in flight at the end are not part of the window).
    pub fn close(&self) {
        self.inner.lock().unwrap().until = Some(Instant::now());
    }

    /// Record a request that completed at `now`, if that falls in the measured window; returns
    /// whether it did, so the caller counts exactly the requests the percentiles describe.
    pub fn record(&self, now: Instant, latency: Duration, expected_interval_us: u64) -> bool {
        let mut w = self.inner.lock().unwrap();
        if now < w.from || w.until.is_some_and(|u| now >= u) {
            return false;
        }
        let us = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        w.raw.saturating_record(us);
        let _ = w.corrected.record_correct(us, expected_interval_us.max(1));
        true
    }

    pub fn raw(&self) -> Percentiles {
        Percentiles::from_histogram(&self.inner.lock().unwrap().raw)
    }

    pub fn corrected(&self) -> Percentiles {
        Percentiles::from_histogram(&self.inner.lock().unwrap().corrected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_keep_microseconds() {
        let rec = LatencyRecorder::default();
        rec.reset(Duration::ZERO);
        for us in 1..=1000u64 {
            assert!(rec.record(Instant::now(), Duration::from_micros(us), 1_000_000));
        }
        let p = rec.raw();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_us, 500);
        assert_eq!(p.p99_us, 990);
        assert_eq!(p.max_us, 1000);
    }

    #[test]
    fn requests_outside_the_window_are_not_recorded() {
        let rec = LatencyRecorder::default();
        rec.reset(Duration::from_secs(3600));
        assert!(
            !rec.record(Instant::now(), Duration::from_micros(5), 5),
            "warm-up"
        );
        rec.reset(Duration::ZERO);
        rec.close();
        assert!(
            !rec.record(Instant::now(), Duration::from_micros(5), 5),
            "after close"
        );
        assert_eq!(rec.raw().count, 0);
    }

    #[test]
    fn a_stall_is_back_filled_in_the_corrected_histogram() {
        let rec = LatencyRecorder::default();
        rec.reset(Duration::ZERO);
        for _ in 0..99 {
            rec.record(Instant::now(), Duration::from_micros(100), 100);
        }
        rec.record(Instant::now(), Duration::from_millis(10), 100);
        assert_eq!(rec.raw().count, 100);
        assert!(
            rec.corrected().count > 150,
            "the stall adds the requests it held back"
        );
        assert!(rec.corrected().p90_us > rec.raw().p90_us);
    }
}
