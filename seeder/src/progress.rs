//! What the user sees while a phase runs: an indicatif bar with rows/s and ETA on a terminal, or
//! one plain line per finished phase when stdout is not a terminal (logs, CI) or with --quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How progress is shown for one run.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    bars: bool,
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        Reporter {
            bars: !quiet && std::io::stdout().is_terminal(),
        }
    }

    /// Start a phase that will process `total` rows, `done` of which an earlier run already did.
    pub fn phase(&self, name: &'static str, total: u64, done: u64) -> Phase {
        let bar = self.bars.then(|| {
            // A CSV import does not know its row count up front: a counter instead of a bar.
            let (length, template) = if total == 0 {
                (None, "{prefix:>7} {spinner} {human_pos} rows  {rate}  {elapsed}")
            } else {
                (
                    Some(total),
                    "{prefix:>7} [{bar:32.cyan/blue}] {human_pos}/{human_len} rows  {rate}  ETA {eta}",
                )
            };
            let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{} rows/s", state.per_sec() as u64);
                    })
                    .progress_chars("=> "),
            );
            bar.set_prefix(name);
            bar.set_position(done);
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Phase {
            name,
            bar,
            started: Instant::now(),
            rows: 0,
        }
    }

    /// A line that must be shown in either mode (the final summary).
    pub fn line(&self, text: &str) {
        println!("{text}");
    }
}

/// One running phase.
#[derive(Debug)]
pub struct Phase {
    name: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    rows: u64,
}

impl Phase {
    pub fn add(&mut self, rows: u64) {
        self.rows += rows;
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
    }

    /// For phases whose progress is polled from the server rather than counted here.
    pub fn set_position(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// Close the phase without a line: for a caller that prints its own summary.
    pub fn clear(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Close the phase, print its line, and return its duration in seconds. `rows` is what the
    /// phase processed in this run (for a polled phase, what it covered).
    pub fn finish(self, rows: u64) -> f64 {
        let seconds = self.started.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let rows = rows.max(self.rows);
        println!(
            "{:<7} {:>12} rows {:>9.1} s {:>12} rows/s",
            self.name,
            rows,
            seconds,
            per_second(rows, seconds)
        );
        seconds
    }
}

pub fn per_second(rows: u64, seconds: f64) -> u64 {
    if seconds > 0.0 {
        (rows as f64 / seconds) as u64
    } else {
        0
    }
}
