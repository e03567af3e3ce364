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

/// The recorder for one measured run: requests before `measure_from` are warm-up and ignored.
pub struct LatencyRecorder {
    raw: Mutex<Histogram<u64>>,
    corrected: Mutex<Histogram<u64>>,
    measure_from: Mutex<Instant>,
    measure_until: Mutex<Option<Instant>>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            raw: Mutex::new(new_histogram()),
            corrected: Mutex::new(new_histogram()),
            measure_from: Mutex::new(Instant::now()),
            measure_until: Mutex::new(None),
        }
    }
}

impl LatencyRecorder {
    /// Forget everything and measure from `warmup` after now.
    pub fn reset(&self, warmup: Duration) {
        self.raw.lock().unwrap().reset();
        self.corrected.lock().unwrap().reset();
        *self.measure_from.lock().unwrap() = Instant::now() + warmup;
        *self.measure_until.lock().unwrap() = None;
    }

    /// Stop counting (requests still in flight at the end are not part of the window).
    pub fn close(&self) {
        *self.measure_until.lock().unwrap() = Some(Instant::now());
    }

    /// Whether a request that completed now falls in the measured window.
    pub fn in_window(&self, now: Instant) -> bool {
        now >= *self.measure_from.lock().unwrap()
            && self.measure_until.lock().unwrap().is_none_or(|u| now < u)
    }

    pub fn record(&self, latency: Duration, expected_interval_us: u64) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.raw.lock().unwrap().saturating_record(us);
        let _ = self
            .corrected
            .lock()
            .unwrap()
            .record_correct(us, expected_interval_us.max(1));
    }

    pub fn raw(&self) -> Percentiles {
        Percentiles::from_histogram(&self.raw.lock().unwrap())
    }

    pub fn corrected(&self) -> Percentiles {
        Percentiles::from_histogram(&self.corrected.lock().unwrap())
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
            rec.record(Duration::from_micros(us), 1_000_000);
        }
        let p = rec.raw();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_us, 500);
        assert_eq!(p.p99_us, 990);
        assert_eq!(p.max_us, 1000);
    }

    #[test]
    fn a_stall_is_back_filled_in_the_corrected_histogram() {
        let rec = LatencyRecorder::default();
        rec.reset(Duration::ZERO);
        for _ in 0..99 {
            rec.record(Duration::from_micros(100), 100);
        }
        rec.record(Duration::from_millis(10), 100);
        assert_eq!(rec.raw().count, 100);
        assert!(
            rec.corrected().count > 150,
            "the stall adds the requests it held back"
        );
        assert!(rec.corrected().p90_us > rec.raw().p90_us);
    }
}
