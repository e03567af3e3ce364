//! The soak: minutes of steady load at a share of the measured maximum, with the cache on,
//! while the API processes' resident memory (`VmRSS` of `/proc/PID/status`) and open file
//! descriptors (entries of `/proc/PID/fd`) are sampled. The maximum comes from a short
//! closed-loop goose run ([`run_load`]); the soak itself is goose throttled
//! (`--throttle-requests`) to the share of it, so the rate stays put whatever the latency.
//! After a warm-up (the cache filling, pools opening) memory and descriptors must be flat:
//! a straight line fitted through the samples must grow by less than [`FLAT_RSS_SHARE`] of
//! the memory and [`FLAT_FDS`] descriptors over the soak.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::{scrape_sum, Rig, RigOptions};
use crate::cancel::{Cancel, INTERRUPTED};
use crate::figures::round_to;
use crate::ids::IdDistribution;
use crate::journey::report::write_file;
use crate::journey::Machine;
use crate::scenario::{run_load, LoadError, LoadResult, LoadSpec};

/// Fitted growth of resident memory over the soak, as a share of its mean, that still counts
/// as flat.
pub const FLAT_RSS_SHARE: f64 = 0.05;
/// Fitted growth of open descriptors over the soak that still counts as flat.
pub const FLAT_FDS: f64 = 5.0;

/// What the soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub rig: RigOptions,
    /// Folder for the results; each run gets a timestamped subfolder.
    pub out_dir: PathBuf,
    /// The closed-loop run that measures the maximum.
    pub probe: Duration,
    pub duration: Duration,
    /// Share of the maximum to run at (0.7).
    pub share: f64,
    pub sample_every: Duration,
    /// Samples before this are the warm-up, left out of the flatness check.
    pub warmup: Duration,
    /// Users of the closed-loop probe.
    pub users: usize,
    /// Users of the throttled soak: enough that the throttle, not the users' latency, sets
    /// the rate (64 users at 40 ms make at most 1,600 requests/s whatever the throttle says).
    pub soak_users: usize,
    pub ids: IdDistribution,
    pub command: String,
    pub quiet: bool,
}

/// One reading of every API instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Seconds since the throttled load started.
    pub t_secs: f64,
    /// Resident memory of each instance, KiB.
    pub rss_kib: Vec<u64>,
    /// Open file descriptors of each instance.
    pub fds: Vec<u64>,
    /// Requests the instances have answered on the related route since they started.
    pub answered: f64,
}

/// A straight line through the post-warm-up samples of one figure (summed over instances).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trend {
    pub first: f64,
    pub last: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Slope of the fitted line, per minute.
    pub slope_per_min: f64,
    /// The fitted line's rise from the first to the last post-warm-up sample.
    pub fitted_growth: f64,
    /// `last / first`.
    pub ratio: f64,
}

impl Trend {
    /// `None` with fewer than two points.
    pub fn fit(points: &[(f64, f64)]) -> Option<Trend> {
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean = points.iter().map(|p| p.1).sum::<f64>() / n;
        let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean)).sum();
        let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
        let slope = if var > 0.0 { cov / var } else { 0.0 };
        let span = points[points.len() - 1].0 - points[0].0;
        let (first, last) = (points[0].1, points[points.len() - 1].1);
        Some(Trend {
            first,
            last,
            min: points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
            max: points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
            mean: round_to(mean, 2),
            slope_per_min: round_to(slope * 60.0, 2),
            fitted_growth: round_to(slope * span, 2),
            ratio: if first > 0.0 {
                round_to(last / first * 100.0, 2) / 100.0
            } else {
                0.0
            },
        })
    }
}

/// One soak run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SoakReport {
    pub started: String,
    pub command: String,
    pub machine: Machine,
    pub replicas: usize,
    pub api_instances: usize,
    pub products: u64,
    pub cache_capacity: u64,
    pub users: usize,
    pub soak_users: usize,
    pub ids: String,
    pub warmup_secs: f64,
    /// Successful requests/s of the closed-loop probe.
    pub max_ok_per_sec: f64,
    /// The rate wanted: `share` of the maximum.
    pub target_per_sec: u64,
    /// goose's `--throttle-requests` setting for it (see [`THROTTLE_DELIVERY`]).
    #[serde(default)]
    pub throttle_per_sec: u64,
    pub share: f64,
    /// The soak's successful requests/s as a share of the maximum.
    pub achieved_share: f64,
    pub probe: LoadResult,
    pub load: LoadResult,
    pub samples: Vec<Sample>,
    /// Resident memory of all instances together after the warm-up, KiB.
    pub rss_kib: Option<Trend>,
    /// Open descriptors of all instances together after the warm-up.
    pub fds: Option<Trend>,
    pub passed: bool,
    pub verdict: String,
}

impl SoakReport {
    /// Fill the trends, `passed` and `verdict` from the samples and the load.
    pub fn judge(&mut self) {
        let after: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.t_secs >= self.warmup_secs)
            .collect();
        let series = |f: &dyn Fn(&Sample) -> u64| -> Vec<(f64, f64)> {
            after.iter().map(|s| (s.t_secs, f(s) as f64)).collect()
        };
        self.rss_kib = Trend::fit(&series(&|s| s.rss_kib.iter().sum()));
        self.fds = Trend::fit(&series(&|s| s.fds.iter().sum()));
        let mut problems = Vec::new();
        let failed = self.load.total_errors();
        if failed > 0 {
            problems.push(format!("{failed} failed requests"));
        }
        match &self.rss_kib {
            Some(t) if t.fitted_growth <= FLAT_RSS_SHARE * t.mean => {}
            Some(t) => problems.push(format!(
                "resident memory grew {:.1} MiB ({:.1}% of its mean)",
                t.fitted_growth / 1024.0,
                t.fitted_growth / t.mean * 100.0
            )),
            None => problems.push("too few samples after the warm-up".into()),
        }
        match &self.fds {
            Some(t) if t.fitted_growth <= FLAT_FDS => {}
            Some(t) => problems.push(format!("open descriptors grew by {:.0}", t.fitted_growth)),
            None => {}
        }
        self.passed = problems.is_empty();
        self.verdict = if self.passed {
            "0 failed requests; memory and descriptors flat after the warm-up".into()
        } else {
            format!("FAILS: {}", problems.join("; "))
        };
    }
}

/// Resident memory (KiB) and open descriptors of a process; zeros if it is gone.
fn read_process(pid: i32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (rss, fds)
}

/// Measure the maximum, then soak at `opts.share` of it; writes `soak.json`, `soak.md` and
/// `soak.svg` into a new timestamped folder of `opts.out_dir`.
pub async fn run_soak(
    opts: &SoakOptions,
    cancel: &Cancel,
) -> anyhow::Result<(SoakReport, PathBuf)> {
    let (now, run_dir, say) = super::start_run(&opts.out_dir, opts.quiet, "soak")?;
    let rig = Rig::start(&opts.rig, &run_dir.join("logs"), &say).await?;
    let machine = Machine::detect(Some(&rig.cluster));
    let spec = |users: usize, duration: Duration, goose_args: Vec<String>| LoadSpec {
        host: rig.tier.entry_url(),
        users,
        warmup: Duration::from_secs(2),
        duration,
        products: opts.rig.products,
        expected_items: Some(16),
        ids: opts.ids,
        unknown_share: 0.0,
        report_files: Vec::new(),
        goose_args,
        request_timeout: Duration::from_secs(10),
        lists_change: false,
    };
    say(&format!(
        "measuring the maximum: {} users, closed loop, {} s",
        opts.users,
        opts.probe.as_secs()
    ));
    let probe = load(&spec(opts.users, opts.probe, Vec::new()), cancel).await?;
    let max = probe.successful_per_sec;
    let target = ((max * opts.share).floor() as u64).max(1);
    let throttle = (target as f64 / THROTTLE_DELIVERY).ceil() as u64;
    say(&format!(
        "maximum {max:.0} requests/s; soaking at {target} requests/s for {} s",
        opts.duration.as_secs()
    ));

    let pids: Vec<i32> = rig.tier.instances.iter().map(|i| i.pid()).collect();
    let admins = rig.admin_addrs();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_every(
        pids,
        admins,
        opts.sample_every,
        samples.clone(),
    ));
    let soak = load(
        &spec(
            opts.soak_users,
            opts.duration,
            vec!["--throttle-requests".into(), throttle.to_string()],
        ),
        cancel,
    )
    .await;
    sampler.abort();
    let soak = soak?;
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let mut report = SoakReport {
        started: now.format("%Y-%m-%d %H:%M:%S").to_string(),
        command: opts.command.clone(),
        machine,
        replicas: opts.rig.replicas,
        api_instances: opts.rig.api_instances,
        products: opts.rig.products,
        cache_capacity: opts.rig.cache_capacity,
        users: opts.users,
        soak_users: opts.soak_users,
        ids: opts.ids.to_string(),
        warmup_secs: opts.warmup.as_secs_f64(),
        max_ok_per_sec: max,
        target_per_sec: target,
        throttle_per_sec: throttle,
        share: opts.share,
        achieved_share: round_to(soak.successful_per_sec / max.max(1.0), 2),
        probe,
        load: soak,
        samples,
        rss_kib: None,
        fds: None,
        passed: false,
        verdict: String::new(),
    };
    report.judge();
    write_file(&run_dir.join("soak.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &report)?;
        w.write_all(b"\n")
    })?;
    write_file(&run_dir.join("soak.md"), |w| write_markdown(&report, w))?;
    std::fs::write(run_dir.join("soak.svg"), svg(&report)?)?;
    drop(rig);
    Ok((report, run_dir))
}

async fn load(spec: &LoadSpec, cancel: &Cancel) -> anyhow::Result<LoadResult> {
    match run_load(spec, cancel, || ()).await {
        Ok((result, _, _)) => Ok(result),
        Err(LoadError::Interrupted) => anyhow::bail!(INTERRUPTED),
        Err(e) => Err(e.into()),
    }
}

/// Read every instance each `every`, from now until aborted.
async fn sample_every(
    pids: Vec<i32>,
    admins: Vec<SocketAddr>,
    every: Duration,
    out: Arc<Mutex<Vec<Sample>>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let started = Instant::now();
    // A late reading (a slow scrape) pushes the next ones back instead of bunching them.
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t_secs = round_to(started.elapsed().as_secs_f64(), 2);
        let (rss_kib, fds) = pids.iter().map(|&p| read_process(p)).unzip();
        let mut answered = 0.0;
        for &addr in &admins {
            answered += scrape_sum(
                &client,
                addr,
                "api_requests_total",
                "route=\"/products/{id}/related\"",
            )
            .await;
        }
        out.lock().unwrap().push(Sample {
            t_secs,
            rss_kib,
            fds,
            answered,
        });
    }
}

/// Share of its `--throttle-requests` setting that goose delivered in this project's soaks:
/// 87 to 89% in all three 10-minute soaks on the development machine (1,475 of 1,697, 3,477 of
/// 3,947, 1,089 of 1,220 requests/s, `results/reliability.md`), with its users waiting on the
/// throttle, not on the API. The throttle is set to the rate wanted over this, so that the soak
/// runs at its share of the maximum; the report says the share it reached.
pub const THROTTLE_DELIVERY: f64 = 0.88;

/// The soak's figures and its curve as a table, one row per sample.
pub fn write_markdown(report: &SoakReport, w: &mut impl Write) -> io::Result<()> {
    let n = report.api_instances;
    writeln!(
        w,
        "Soak, {} UTC: {} replicas, {} API instances behind nginx, cache {} entries per instance, \
         {} products, ids {}. Maximum measured by a closed-loop run of {} users: {:.0} successful \
         requests/s; soak at {} requests/s ({:.0}% of it; goose throttled to {}, as it delivers about {:.0}% of its setting) with {} users for {:.0} s.",
        report.started,
        report.replicas,
        n,
        report.cache_capacity,
        report.products,
        report.ids,
        report.users,
        report.max_ok_per_sec,
        report.target_per_sec,
        report.share * 100.0,
        report.throttle_per_sec,
        THROTTLE_DELIVERY * 100.0,
        report.soak_users,
        report.load.measured_secs
    )?;
    writeln!(w)?;
    let l = &report.load;
    writeln!(
        w,
        "Soak: {} requests answered as expected ({:.1}/s, {:.0}% of the maximum), {} failed{}; \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.",
        l.ok + l.expected_not_found,
        l.successful_per_sec,
        report.achieved_share * 100.0,
        l.total_errors(),
        if l.errors.is_empty() {
            String::new()
        } else {
            format!(" ({:?})", l.errors)
        },
        l.latency.p50_us as f64 / 1000.0,
        l.latency.p99_us as f64 / 1000.0,
        l.latency.max_us as f64 / 1000.0
    )?;
    if let (Some(r), Some(f)) = (&report.rss_kib, &report.fds) {
        writeln!(
            w,
            "\nAfter the {:.0} s warm-up, all instances together: resident memory {:.1} to {:.1} MiB \
             (first {:.1}, last {:.1}, last/first {:.2}), fitted slope {:+.3} MiB per minute, fitted \
             growth over the soak {:+.2} MiB ({:+.2}% of the mean); open descriptors {} to {} \
             (first {}, last {}), fitted growth {:+.1}.",
            report.warmup_secs,
            r.min / 1024.0,
            r.max / 1024.0,
            r.first / 1024.0,
            r.last / 1024.0,
            r.ratio,
            r.slope_per_min / 1024.0,
            r.fitted_growth / 1024.0,
            r.fitted_growth / r.mean * 100.0,
            f.min,
            f.max,
            f.first,
            f.last,
            f.fitted_growth
        )?;
    }
    writeln!(w, "\nVerdict: {}.", report.verdict)?;
    writeln!(w)?;
    let mut head = "| t s | answered |".to_string();
    let mut rule = "|---:|---:|".to_string();
    for i in 1..=n {
        head.push_str(&format!(" API {i} RSS MiB | API {i} fds |"));
        rule.push_str("---:|---:|");
    }
    writeln!(w, "{head}\n{rule}")?;
    for s in &report.samples {
        let mut row = format!("| {:.0} | {:.0} |", s.t_secs, s.answered);
        for i in 0..n {
            row.push_str(&format!(
                " {:.1} | {} |",
                s.rss_kib.get(i).copied().unwrap_or(0) as f64 / 1024.0,
                s.fds.get(i).copied().unwrap_or(0)
            ));
        }
        writeln!(w, "{row}")?;
    }
    Ok(())
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(0x2e, 0x86, 0xc1),
    RGBColor(0x8e, 0x44, 0xad),
    RGBColor(0xe6, 0x7e, 0x22),
    RGBColor(0x1e, 0x84, 0x49),
];

/// Resident memory (top) and open descriptors (bottom) of each instance over the soak, the
/// warm-up shaded.
pub fn svg(report: &SoakReport) -> io::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 560)).into_drawing_area();
        draw(&root, report).map_err(io::Error::other)?;
        root.present().map_err(io::Error::other)?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
/// One figure of one instance (by position) in a sample.
type SampleValue = dyn Fn(&Sample, usize) -> f64;

fn draw(root: &Area, report: &SoakReport) -> Result<(), DrawingAreaErrorKind<io::Error>> {
    root.fill(&WHITE)?;
    let title = format!(
        "Soak: {} req/s ({:.0}% of {:.0}) for {:.0} s, cache on: {}",
        report.target_per_sec,
        report.share * 100.0,
        report.max_ok_per_sec,
        report.load.measured_secs,
        report.verdict
    );
    let (header, body) = root.split_vertically(36);
    header.draw(&Text::new(
        title,
        (12, 10),
        ("sans-serif", 15).into_font().color(&BLACK),
    ))?;
    let (top, bottom) = body.split_vertically(262);
    let t_max = report
        .samples
        .last()
        .map(|s| s.t_secs)
        .unwrap_or(1.0)
        .max(1.0);
    let panels: [(&Area, &str, Box<SampleValue>); 2] = [
        (
            &top,
            "resident memory MiB",
            Box::new(|s: &Sample, i| s.rss_kib.get(i).copied().unwrap_or(0) as f64 / 1024.0),
        ),
        (
            &bottom,
            "open file descriptors",
            Box::new(|s: &Sample, i| s.fds.get(i).copied().unwrap_or(0) as f64),
        ),
    ];
    for (area, label, value) in panels {
        let y_max = report
            .samples
            .iter()
            .flat_map(|s| (0..report.api_instances).map(|i| value(s, i)))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            // Room for the last x tick's label, centred on the right edge.
            .margin_right(28)
            .x_label_area_size(34)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the soak")
            .y_desc(label)
            // Whole seconds, MiB and descriptors: no ".0" on every tick.
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(TRANSPARENT)
            .draw()?;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (report.warmup_secs.min(t_max), y_max)],
            RGBColor(0xee, 0xee, 0xee).filled(),
        )))?;
        for i in 0..report.api_instances {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(std::iter::once(PathElement::new(
                    report
                        .samples
                        .iter()
                        .map(|s| (s.t_secs, value(s, i)))
                        .collect::<Vec<_>>(),
                    colour.stroke_width(2),
                )))?
                .label(format!("API {}", i + 1))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_line_fits_with_no_growth_and_a_rising_one_with_its_slope() {
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 10.0, 100.0)).collect();
        let t = Trend::fit(&flat).unwrap();
        assert_eq!((t.slope_per_min, t.fitted_growth, t.ratio), (0.0, 0.0, 1.0));
        // +1 per 10 s: 6 per minute, 9 over 90 s.
        let rising: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 10.0, 100.0 + i as f64))
            .collect();
        let t = Trend::fit(&rising).unwrap();
        assert_eq!((t.slope_per_min, t.fitted_growth), (6.0, 9.0));
        assert_eq!(
            (t.first, t.last, t.min, t.max),
            (100.0, 109.0, 100.0, 109.0)
        );
        assert!(Trend::fit(&flat[..1]).is_none());
    }

    #[test]
    fn this_process_has_resident_memory_and_open_descriptors() {
        let (rss, fds) = read_process(std::process::id() as i32);
        assert!(rss > 0 && fds > 0);
        assert_eq!(read_process(-1), (0, 0));
    }
}
