//! The runner: seed once, then run each stage of the plan in order through its kind's entry point
//! ([`super::index_stage`], [`super::load_stage`]) over one [`StageContext`], and write the
//! result files after every stage so an interrupted journey keeps what it measured.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use stack::{Cluster, ClusterSpec, PgSettings};

use super::context::{checkpoint_all, JourneyOptions, StageContext, REPLICA_CATCH_UP};
use super::disk::{self, DiskWatch};
use super::machine::Machine;
use super::model::{JourneyReport, StageKind, StageResult};
use super::spec::{JourneyPlan, StagePlan};
use super::{capacity, index_stage, load_stage, report, shape};
use crate::cancel::Cancel;

/// Run every stage and write the results. Returns the report and the folder it went to. Every
/// server is torn down before this returns, also on an error or when `cancel` fires.
pub async fn run_journey(
    plan: &JourneyPlan,
    opts: &JourneyOptions,
    cancel: &Cancel,
) -> anyhow::Result<(JourneyReport, PathBuf)> {
    let mut plan = plan.clone();
    let capacity = plan
        .capacity
        .clone()
        .map(|spec| capacity::fit(&mut plan.stages, &spec, stack::process::cores() as f64));
    let plan = &plan;
    let started_at = chrono::Utc::now();
    let run_dir = opts
        .out_dir
        .join(format!("{}", started_at.format("%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&run_dir)?;
    let say = |msg: &str| {
        if !opts.quiet {
            eprintln!("{msg}");
        }
    };

    say(&format!(
        "journey {:?}: {} stages, {} products x {} related",
        plan.name,
        plan.stages.len(),
        plan.products,
        plan.per_product
    ));
    // The plan is printed even when quiet: a stage that cannot fit is worth knowing up front.
    if let Some(capacity) = &capacity {
        for line in capacity.lines() {
            eprintln!("{line}");
        }
    }
    let cluster = Cluster::create(ClusterSpec {
        dir: opts.stack_dir.clone(),
        replicas: 1,
        settings: PgSettings {
            shared_buffers_mb: plan.shared_buffers_mb,
            extra: vec![(
                "max_wal_size".into(),
                format!("{}MB", disk::JOURNEY_MAX_WAL_MB),
            )],
            ..PgSettings::default()
        },
        primary_port: None,
    })
    .await?;
    cancel.check()?;
    // Checked once the servers' folder is known (it may be under the temporary folder when the
    // postgres user cannot reach --stack-dir), before the seeding fills it.
    let mut disk_use = disk::estimate(
        plan,
        cluster.data_root(),
        disk::free_mb(cluster.data_root())?,
    );
    eprintln!("{}", disk_use.line());
    if let Some(why) = disk::refusal(&disk_use) {
        anyhow::bail!(why);
    }
    let disk_watch = DiskWatch::start(cluster.data_root().to_path_buf());

    let seed_opts = seeder::SeedOptions {
        products: plan.products,
        per_product: plan.per_product,
        seed: plan.seed,
        no_index: plan.seed_without_index,
        quiet: opts.quiet,
        ..seeder::SeedOptions::default()
    };
    let seed_started = Instant::now();
    let primary_url = cluster.primary_url();
    tokio::select! {
        r = seeder::seed(&primary_url, &seed_opts) => { r?; }
        _ = cancel.cancelled() => cancel.check()?,
    }
    let seed_secs = seed_started.elapsed().as_secs_f64();
    cluster.wait_for_replicas(REPLICA_CATCH_UP).await?;
    checkpoint_all(&cluster).await?;

    let mut report = JourneyReport {
        journey: plan.name.clone(),
        started_at: started_at.to_rfc3339(),
        machine: Machine::detect(Some(&cluster)),
        products: plan.products,
        relation_rows: plan.relation_rows(),
        seed_secs: (seed_secs * 10.0).round() / 10.0,
        stages: Vec::new(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        capacity,
        shape_holds: None,
        disk: None,
    };
    let mut ctx = StageContext {
        plan,
        opts,
        cancel,
        run_dir: &run_dir,
        db_budgets: Vec::new(),
        cluster,
        indexed: !plan.seed_without_index,
    };
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(plan.stages.len() as u64).with_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .expect("valid template"),
        )
    };

    for stage in &plan.stages {
        cancel.check()?;
        bar.set_message(format!("stage {}: {}", stage.number, stage.name));
        let mut result = run_stage(&mut ctx, stage).await?;
        if stage.kind == StageKind::Load {
            result.disk_used_mb = Some(disk_watch.latest_mb());
        }
        if let Some(expect) = &stage.expect {
            let check = shape::check(&result, &report.stages, expect);
            report.shape_holds = Some(report.shape_holds.unwrap_or(true) && check.holds);
            result.shape = Some(check);
        }
        bar.suspend(|| {
            say(&format!(
                "stage {} ({}): {}",
                stage.number, stage.name, result.verdict
            ));
            if let Some(check) = &result.shape {
                say(&format!("  shape: {}", check.summary()));
            }
        });
        report.stages.push(result);
        bar.inc(1);
        disk_use.peak_mb = Some(disk_watch.peak_mb());
        report.disk = Some(disk_use.clone());
        // Write after every stage, so an interrupted journey keeps what it measured.
        report::write_all(&run_dir, &report)?;
    }
    bar.finish_and_clear();
    drop(ctx);
    Ok((report, run_dir))
}

/// One stage, by its kind.
async fn run_stage(ctx: &mut StageContext<'_>, stage: &StagePlan) -> anyhow::Result<StageResult> {
    match stage.kind {
        StageKind::Index => index_stage::run(ctx, stage).await,
        StageKind::Load => load_stage::run(ctx, stage).await,
    }
}
