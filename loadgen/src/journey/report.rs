//! A journey's result files: JSON (everything), CSV (one row per stage), a Markdown table, and an
//! SVG chart of requests/s per stage with p99 latency (drawn by the `chart` module, plotters).
//! Each renderer writes a [`JourneyReport`] to any [`std::io::Write`]; [`write_all`] opens the
//! four files of a run's folder. Depends on the [`model`](super::model) only: the runner calls
//! it after every stage.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::model::{Component, JourneyReport, ServeFrom};

/// The files [`write_all`] writes, and the renderer of each.
pub const FILES: [&str; 4] = ["journey.json", "stages.csv", "journey.md", "journey.svg"];

/// Write `journey.json`, `stages.csv`, `journey.md` and `journey.svg` into `dir`.
pub fn write_all(dir: &Path, report: &JourneyReport) -> io::Result<()> {
    let [json, csv, md, svg] = FILES;
    write_file(&dir.join(json), |w| write_json(report, w))?;
    write_file(&dir.join(csv), |w| write_csv(report, w))?;
    write_file(&dir.join(md), |w| write_markdown(report, w))?;
    write_file(&dir.join(svg), |w| write_svg(report, w))
}

/// Create `path` and let `render` write it through a buffer (the drill and the soak write
/// their files this way too).
pub(crate) fn write_file(
    path: &Path,
    render: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    render(&mut w)?;
    w.flush()
}

/// Every figure, as pretty-printed JSON with a final newline.
pub fn write_json(report: &JourneyReport, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report)?;
    w.write_all(b"\n")
}

#[derive(serde::Serialize)]
struct CsvRow<'a> {
    stage: usize,
    name: &'a str,
    replicas: Option<usize>,
    api_instances: Option<usize>,
    nginx: &'static str,
    cache: Option<bool>,
    ids: &'a str,
    users: Option<usize>,
    db_cpus: Option<f64>,
    db_memory_mb: Option<u64>,
    budgeted: Option<bool>,
    batch_max: Option<u32>,
    lookups_per_query: Option<f64>,
    requests_per_sec: Option<f64>,
    successful_per_sec: Option<f64>,
    p50_us: Option<u64>,
    p90_us: Option<u64>,
    p99_us: Option<u64>,
    p999_us: Option<u64>,
    max_us: Option<u64>,
    p99_corrected_us: Option<u64>,
    errors: Option<u64>,
    error_rate: Option<f64>,
    db_utilization: Option<f64>,
    api_utilization: Option<f64>,
    nginx_utilization: Option<f64>,
    generator_utilization: Option<f64>,
    machine_utilization: f64,
    buffer_hit_share: Option<f64>,
    disk_reads_per_request: Option<f64>,
    memory_bound: Option<bool>,
    disk_used_mb: Option<f64>,
    bottleneck: &'a str,
    verdict: &'a str,
    shape: String,
}

/// One row per stage, with a header; empty cells where a stage has no such figure.
pub fn write_csv(report: &JourneyReport, w: &mut impl Write) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(w);
    for s in &report.stages {
        let t = s.topology.as_ref();
        let l = s.load.as_ref();
        w.serialize(CsvRow {
            stage: s.number,
            name: &s.name,
            replicas: t.map(|t| t.replicas),
            api_instances: t.map(|t| t.api_instances),
            nginx: t.map(|t| t.nginx.name()).unwrap_or_default(),
            cache: t.map(|t| t.cache),
            ids: t.map(|t| t.ids.as_str()).unwrap_or_default(),
            users: t.map(|t| t.users),
            db_cpus: t.and_then(|t| t.db_budget.budget.cpus),
            db_memory_mb: t.and_then(|t| t.db_budget.budget.memory_mb),
            budgeted: t.map(|t| t.budgeted),
            batch_max: t.map(|t| t.batch_max),
            lookups_per_query: s.lookups_per_query(),
            requests_per_sec: l.map(|l| l.requests_per_sec),
            successful_per_sec: l.map(|l| l.successful_per_sec),
            p50_us: l.map(|l| l.latency.p50_us),
            p90_us: l.map(|l| l.latency.p90_us),
            p99_us: l.map(|l| l.latency.p99_us),
            p999_us: l.map(|l| l.latency.p999_us),
            max_us: l.map(|l| l.latency.max_us),
            p99_corrected_us: l.map(|l| l.latency_corrected.p99_us),
            errors: l.map(|l| l.total_errors()),
            error_rate: l.map(|l| l.error_rate),
            db_utilization: s.utilization(Component::Database),
            api_utilization: s.utilization(Component::Api),
            nginx_utilization: s.utilization(Component::Nginx),
            generator_utilization: s.utilization(Component::LoadGenerator),
            machine_utilization: s.machine_cpu_utilization,
            buffer_hit_share: s.database_memory.as_ref().and_then(|m| m.buffer_hit_share),
            disk_reads_per_request: s.database_memory.as_ref().map(|m| m.disk_reads_per_request),
            memory_bound: s.database_memory.as_ref().map(|m| m.memory_bound),
            disk_used_mb: s.disk_used_mb,
            bottleneck: &s.bottleneck,
            verdict: &s.verdict,
            shape: s.shape.as_ref().map(|c| c.summary()).unwrap_or_default(),
        })?;
    }
    w.flush()
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The stage table, then each index stage's plans, then how to read the figures.
pub fn write_markdown(report: &JourneyReport, out: &mut impl Write) -> io::Result<()> {
    let m = &report.machine;
    writeln!(out, "# Journey: {}\n", report.journey)?;
    writeln!(
        out,
        "Machine: {} cores ({}), {} GiB, kernel {}; {}; {}. Data: {} products, {} relation rows (seeded in {} s). Run {}.\n",
        m.cores, m.cpu_model, m.memory_gib, m.kernel, m.postgres, m.nginx, report.products, report.relation_rows, report.seed_secs, report.started_at
    )?;
    writeln!(out, "Command: `{}`\n", report.command)?;
    if let Some(disk) = &report.disk {
        let peak = disk
            .peak_mb
            .map(|p| format!(" The servers held at most {:.1} GB.", p / 1024.0))
            .unwrap_or_default();
        writeln!(out, "Disk: {}.{peak}\n", disk.summary())?;
    }
    writeln!(
        out,
        "| # | stage | topology | ok req/s | p50 ms | p99 ms | p99.9 ms | errors | lookups per query | DB CPU | API CPU | nginx CPU | generator CPU | bottleneck | story's shape |"
    )?;
    writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    )?;
    for s in &report.stages {
        let shape = s.shape.as_ref().map_or("-".into(), |c| c.summary());
        let pct = |c: Component| {
            s.utilization(c)
                .map(|u| format!("{:.0}%", u * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        match (&s.load, &s.topology) {
            (Some(l), Some(t)) => {
                let budget = match (t.db_budget.budget.cpus, t.budgeted) {
                    (Some(c), true) => format!(
                        ", DB {c} CPU/{} MiB",
                        t.db_budget.budget.memory_mb.unwrap_or(0)
                    ),
                    (Some(_), false) => ", **unbudgeted**".into(),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "| {} | {} | {}{} replica(s), {} API, nginx {}, cache {}, {}{}{} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.number,
                    s.name,
                    match t.serve_from {
                        ServeFrom::Replicas => "",
                        ServeFrom::Primary => "reads on the primary, ",
                        ServeFrom::All => "reads on the primary and ",
                    },
                    t.replicas,
                    t.api_instances,
                    t.nginx.name(),
                    if t.cache { "on" } else { "off" },
                    t.ids,
                    if t.batch_max > 1 {
                        format!(", batches of up to {}", t.batch_max)
                    } else {
                        ", no batching".into()
                    },
                    budget,
                    l.successful_per_sec,
                    ms(l.latency.p50_us),
                    ms(l.latency.p99_us),
                    ms(l.latency.p999_us),
                    l.total_errors(),
                    s.lookups_per_query()
                        .map_or_else(|| "-".into(), |q| format!("{q:.2}")),
                    pct(Component::Database),
                    pct(Component::Api),
                    pct(Component::Nginx),
                    pct(Component::LoadGenerator),
                    s.verdict,
                    shape
                )?;
            }
            _ => {
                writeln!(
                    out,
                    "| {} | {} | single queries on the primary | - | - | - | - | - | - | - | - | - | - | {} | {shape} |",
                    s.number, s.name, s.verdict
                )?;
            }
        }
    }
    if let Some(holds) = report.shape_holds {
        writeln!(
            out,
            "\nThe story's shape: **{}**.",
            if holds {
                "holds in every stage that states an expectation"
            } else {
                "FAILS in at least one stage"
            }
        )?;
    }
    write_memory_table(report, out)?;
    if let Some(capacity) = &report.capacity {
        writeln!(out, "\n## Capacity plan\n\n```")?;
        for line in capacity.lines() {
            writeln!(out, "{line}")?;
        }
        writeln!(out, "```")?;
    }
    for s in &report.stages {
        if let Some(p) = &s.index {
            writeln!(out, "\n## Stage {}: {}\n", s.number, s.name)?;
            writeln!(
                out,
                "Without the index: {:?} ms (median {} ms). Index build: {} s. With it: median {} ms, p99 {} ms over {} queries; {}x faster.\n",
                p.without_index_ms, p.without_index_ms_median, p.index_build_secs, p.with_index_ms_median, p.with_index_ms_p99, p.with_index_samples, p.speedup
            )?;
            writeln!(
                out,
                "Plan without the index:\n\n```\n{}\n```\n",
                p.plan_without_index.join("\n")
            )?;
            writeln!(
                out,
                "Plan with the index:\n\n```\n{}\n```",
                p.plan_with_index.join("\n")
            )?;
        }
    }
    writeln!(
        out,
        "\nPercentiles are measured per request in microseconds (closed model, no think time); \
         `journey.json` also has the coordinated-omission-corrected ones. CPU columns are each \
         component's CPU time in the measured window over its limit (its budget, or the machine's cores)."
    )
}

/// Per load stage: whether the data fitted the serving databases' memory.
fn write_memory_table(report: &JourneyReport, out: &mut impl Write) -> io::Result<()> {
    let stages: Vec<_> = report
        .stages
        .iter()
        .filter_map(|s| Some((s, s.database_memory.as_ref()?)))
        .collect();
    if stages.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n## Memory and disk\n\n| # | data per copy MB | buffer hits | disk reads per request | read from disk MB | memory held MB (limit each) | servers' disk GB | memory limits it |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    for (s, m) in stages {
        let held = match (m.memory_used_mb, m.memory_limit_mb) {
            (Some(used), Some(limit)) => format!("{used:.0} ({limit})"),
            (Some(used), None) => format!("{used:.0}"),
            _ => "-".into(),
        };
        writeln!(
            out,
            "| {} | {:.0} | {} | {:.3} | {:.1} | {held} | {} | {} |",
            s.number,
            m.data_mb,
            m.buffer_hit_share
                .map_or("-".into(), |h| format!("{:.2}%", h * 100.0)),
            m.disk_reads_per_request,
            m.disk_read_mb,
            s.disk_used_mb
                .map_or("-".into(), |d| format!("{:.1}", d / 1024.0)),
            if m.memory_bound { "yes" } else { "no" }
        )?;
    }
    Ok(())
}

/// The chart: bars for successful requests/s per load stage, a line for p99 latency on a
/// log-scale second axis, each stage's bottleneck and shape (drawn by the `chart` module).
pub fn write_svg(report: &JourneyReport, svg: &mut impl Write) -> io::Result<()> {
    svg.write_all(super::chart::svg(report)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::sample_report;
    use super::*;

    fn render(f: impl FnOnce(&JourneyReport, &mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&sample_report(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The rendered text must equal `tests/fixtures/<name>`. After a deliberate change to a
    /// renderer, `UPDATE_FIXTURES=1 cargo test -p loadgen --lib report` rewrites the fixtures;
    /// review their diff before committing it.
    fn assert_fixture(name: &str, rendered: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&path, rendered).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(rendered, expected, "{} differs", path.display());
    }

    #[test]
    fn markdown_of_a_known_report() {
        assert_fixture("journey.md", &render(write_markdown));
    }

    #[test]
    fn csv_of_a_known_report() {
        assert_fixture("stages.csv", &render(write_csv));
    }

    #[test]
    fn json_of_a_known_report_and_back() {
        let json = render(write_json);
        assert_fixture("journey.json", &json);
        let back: JourneyReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sample_report());
    }

    #[test]
    fn svg_of_a_known_report() {
        assert_fixture("journey.svg", &render(write_svg));
    }

    #[test]
    fn write_all_writes_the_four_files_as_the_renderers_do() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &sample_report()).unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("journey.md"), render(write_markdown));
        assert_eq!(read("stages.csv"), render(write_csv));
        assert_eq!(read("journey.json"), render(write_json));
        assert_eq!(read("journey.svg"), render(write_svg));
    }

    #[test]
    fn an_empty_report_still_renders() {
        let mut report = sample_report();
        report.stages.clear();
        let mut svg = Vec::new();
        write_svg(&report, &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(!svg.contains("<polyline"));
        let mut csv = Vec::new();
        write_csv(&report, &mut csv).unwrap();
        assert!(
            csv.is_empty(),
            "no stage, no row (and, as before, no header)"
        );
    }
}
