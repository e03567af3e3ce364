//! A known report for the renderers' fixture tests (`tests/fixtures/journey.*`, `stages.csv`):
//! an index stage with its plans, a budgeted load stage without nginx, an unbudgeted one behind
//! an untuned nginx that ran out of files, and an index stage that found the index built.

use std::collections::BTreeMap;

use stack::cgroup::Budget;
use stack::nginx::NginxErrors;

use super::disk::DiskUse;
use super::machine::Machine;
use super::model::{
    Component, ComponentCpu, DatabaseMemory, JourneyReport, NginxMode, ServeFrom, ShapeCheck,
    ShapeFinding, StageKind, StageResult, StageTopology,
};
use crate::index_probe::IndexProbe;
use crate::latency::Percentiles;
use crate::scenario::LoadResult;
use crate::topology::BudgetState;

fn cpu(
    component: Component,
    cpu_secs: f64,
    limit_cores: f64,
    budgeted: bool,
    utilization: f64,
) -> ComponentCpu {
    ComponentCpu {
        component,
        cpu_secs,
        limit_cores,
        budgeted,
        utilization,
    }
}

fn percentiles(p50_us: u64, p99_us: u64) -> Percentiles {
    Percentiles {
        count: 1000,
        mean_us: p50_us as f64 + 9_324.5,
        p50_us,
        p90_us: p50_us * 2,
        p99_us,
        p999_us: p99_us + 17,
        max_us: p99_us * 3,
    }
}

fn load(successful_per_sec: f64, errors: BTreeMap<String, u64>, error_rate: f64) -> LoadResult {
    LoadResult {
        users: 64,
        measured_secs: 20.001,
        ok: 16_000,
        expected_not_found: 160,
        errors,
        requests_per_sec: successful_per_sec + 12.5,
        successful_per_sec,
        error_rate,
        latency: percentiles(93_247, 188_799),
        latency_corrected: percentiles(93_311, 188_927),
        coordinated_omission: "closed model, 64 users".into(),
    }
}

pub(crate) fn sample_report() -> JourneyReport {
    let db = BudgetState {
        budget: Budget {
            cpus: Some(0.25),
            memory_mb: Some(256),
        },
        unbudgeted_reason: None,
    };
    let unbudgeted_db = BudgetState {
        budget: Budget {
            cpus: Some(1.0),
            memory_mb: Some(1024),
        },
        unbudgeted_reason: Some("no cgroup v2 & <delegation>".into()),
    };
    let api = BudgetState {
        budget: Budget::default(),
        unbudgeted_reason: None,
    };
    JourneyReport {
        journey: "sample <journey> & \"friends\"".into(),
        started_at: "2026-11-24T00:02:58.433606011+00:00".into(),
        machine: Machine {
            cores: 2,
            memory_gib: 23.5,
            cpu_model: "AMD EPYC".into(),
            kernel: "6.18.44".into(),
            postgres: "postgres (PostgreSQL) 15.18".into(),
            nginx: "nginx version: nginx/1.22.1".into(),
            loadgen: "0.1.0".into(),
        },
        products: 100_000,
        relation_rows: 1_600_000,
        seed_secs: 1.4,
        command: "target/release/loadgen journey --quiet".into(),
        capacity: None,
        shape_holds: Some(false),
        disk: Some(DiskUse {
            dir: "/tmp/related-stack-1".into(),
            copies: 3,
            copy_mb: 135.0,
            wal_mb_per_server: 199.0,
            need_mb: 1102.2,
            free_mb: 61_234.5,
            peak_mb: Some(612.3),
        }),
        stages: vec![
            StageResult {
                number: 1,
                name: "index".into(),
                note: "without and with the B-tree index".into(),
                kind: StageKind::Index,
                topology: None,
                load: None,
                index: Some(IndexProbe {
                    relation_rows: 1_600_000,
                    without_index_ms: vec![170.84, 164.31, 163.8],
                    without_index_ms_median: 164.31,
                    with_index_samples: 500,
                    with_index_ms_median: 0.2211,
                    with_index_ms_p99: 2.4072,
                    speedup: 743.0,
                    index_build_secs: 0.91,
                    plan_without_index: vec!["Seq Scan on related_items ri".into(), "  Filter: (product_id = p.id)".into()],
                    plan_with_index: vec!["Index Scan using related_items_pkey on related_items ri".into()],
                }),
                cpu: Vec::new(),
                machine_cpu_utilization: 0.0,
                nginx_errors: None,
                bottleneck: "database (no index)".into(),
                verdict: "without the index one lookup takes 164.3 ms (sequential scan of 1600000 rows); with it 0.221 ms: 743x faster".into(),
                goose_report: None,
                shape: None,
                cost_us: Default::default(),
                api_counters: Default::default(),
                write_peak: None,
                database_memory: None,
                disk_used_mb: None,
            },
            StageResult {
                number: 2,
                name: "1 API, small DB".into(),
                note: "one API instance".into(),
                kind: StageKind::Load,
                topology: Some(StageTopology {
                    replicas: 1,
                    api_instances: 1,
                    nginx: NginxMode::Off,
                    cache: false,
                    users: 64,
                    ids: "uniform".into(),
                    db_budget: db.clone(),
                    api_budget: api.clone(),
                    budgeted: true,
                    serve_from: ServeFrom::Replicas,
                    batch_max: 16,
                }),
                load: Some(load(846.2, BTreeMap::new(), 0.0)),
                index: None,
                cpu: vec![
                    cpu(Component::Database, 4.98, 0.25, true, 0.996),
                    cpu(Component::Api, 2.32, 2.0, false, 0.058),
                    cpu(Component::LoadGenerator, 2.36, 2.0, false, 0.059),
                ],
                machine_cpu_utilization: 0.256,
                nginx_errors: None,
                bottleneck: "database".into(),
                verdict: "database at 100% of its budget of 0.25 CPU".into(),
                goose_report: Some("stage-2-goose.html".into()),
                shape: None,
                cost_us: Default::default(),
                api_counters: BTreeMap::from([
                    ("api_batch_size_count".to_string(), 4_000.0),
                    ("api_batch_size_sum".to_string(), 17_000.0),
                ]),
                write_peak: None,
                database_memory: Some(DatabaseMemory {
                    data_mb: 131.6,
                    blocks_hit: 2_345_678,
                    blocks_read: 1_234,
                    buffer_hit_share: Some(0.9995),
                    disk_read_mb: 0.4,
                    disk_reads_per_request: 0.002,
                    memory_used_mb: Some(201.5),
                    page_cache_mb: Some(64.2),
                    memory_limit_mb: Some(256),
                    memory_bound: false,
                }),
                disk_used_mb: Some(598.7),
            },
            StageResult {
                number: 3,
                name: "6 APIs, untuned nginx".into(),
                note: "nginx with the story's limits".into(),
                kind: StageKind::Load,
                topology: Some(StageTopology {
                    replicas: 3,
                    api_instances: 6,
                    nginx: NginxMode::Untuned,
                    cache: true,
                    users: 200,
                    ids: "zipf(s=1)".into(),
                    db_budget: unbudgeted_db,
                    api_budget: api,
                    budgeted: false,
                    serve_from: ServeFrom::Replicas,
                    batch_max: 1,
                }),
                load: Some(load(
                    595.6,
                    BTreeMap::from([("http_502".to_string(), 7), ("timeout".to_string(), 280)]),
                    0.023497625675454395,
                )),
                index: None,
                cpu: vec![
                    cpu(Component::Database, 5.784, 2.0, false, 0.964),
                    cpu(Component::Api, 3.68, 2.0, false, 0.092),
                    cpu(Component::Nginx, 2.28, 2.0, false, 0.057),
                    cpu(Component::LoadGenerator, 1.96, 2.0, false, 0.049),
                ],
                machine_cpu_utilization: 0.341,
                nginx_errors: Some(NginxErrors { too_many_open_files: 294, worker_connections_not_enough: 0 }),
                bottleneck: "nginx".into(),
                verdict: "nginx: 294 x \"Too many open files\" (2.3% of requests failed)".into(),
                goose_report: Some("stage-3-goose.html".into()),
                shape: Some(ShapeCheck {
                    holds: false,
                    findings: vec![
                        ShapeFinding {
                            holds: false,
                            text: "x0.56 of stage 2 (expected 0.75 to 1.33)".into(),
                        },
                        ShapeFinding {
                            holds: true,
                            text: "bottleneck: nginx".into(),
                        },
                    ],
                }),
                cost_us: Default::default(),
                api_counters: Default::default(),
                write_peak: None,
                database_memory: None,
                disk_used_mb: None,
            },
            StageResult {
                number: 4,
                name: "index again".into(),
                note: String::new(),
                kind: StageKind::Index,
                topology: None,
                load: None,
                index: None,
                cpu: Vec::new(),
                machine_cpu_utilization: 0.0,
                nginx_errors: None,
                bottleneck: String::new(),
                verdict: "the relation index already existed; nothing to compare".into(),
                goose_report: None,
                shape: None,
                cost_us: Default::default(),
                api_counters: Default::default(),
                write_peak: None,
                database_memory: None,
                disk_used_mb: None,
            },
        ],
    }
}
