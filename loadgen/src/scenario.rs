//! The "storefront widget" scenario on goose: each simulated user asks for one product's related
//! items, checks the body, and records its latency in microseconds (see [`crate::latency`]).
//!
//! goose transactions are plain functions, so the state of the run in progress (id sampler,
//! counters, recorder) lives in one process-wide slot; runs happen one at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use goose::config::GooseConfiguration;
use goose::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::ids::{Draw, IdDistribution, IdSampler};
use crate::latency::{LatencyRecorder, Percentiles};

/// The name every request is reported under, so metrics aggregate by route, not by id.
pub const ROUTE_NAME: &str = "GET /products/{id}/related";

/// goose options that loadgen sets from its own flags (its measured window depends on them).
const OWN_GOOSE_FLAGS: &[&str] = &[
    "--host",
    "-H",
    "--users",
    "-u",
    "--increase-rate",
    "-r",
    "--increase-time",
    "-s",
    "--run-time",
    "-t",
    "--timeout",
];

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Base URL of the API or of nginx in front of it.
    pub host: String,
    pub users: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Seeded products (ids 1..=products).
    pub products: u64,
    /// Items every known product must return (`None`: do not check the count).
    pub expected_items: Option<usize>,
    pub ids: IdDistribution,
    /// Share of requests for ids that do not exist; their 404 counts as expected.
    pub unknown_share: f64,
    /// goose report files (.html, .json, .md) to write at the end.
    pub report_files: Vec<PathBuf>,
    /// Further goose options, passed through verbatim.
    pub goose_args: Vec<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Related lists are being rewritten while the load runs (a journey stage's write peak):
    /// an id's list may differ from one answer to the next, so it is not held to its first.
    pub lists_change: bool,
}

/// What came back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadResult {
    pub users: usize,
    pub measured_secs: f64,
    /// Requests answered as expected (200 with a valid body, or 404 for an unknown id).
    pub ok: u64,
    pub expected_not_found: u64,
    /// Everything else, by kind (`http_503`, `timeout`, `connect`, `body_mismatch`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Every answered request, failed ones included.
    pub requests_per_sec: f64,
    /// Requests answered as expected: the throughput that counts.
    pub successful_per_sec: f64,
    pub error_rate: f64,
    /// Latency as measured (closed model).
    pub latency: Percentiles,
    /// Latency corrected for coordinated omission.
    pub latency_corrected: Percentiles,
    pub coordinated_omission: String,
}

impl LoadResult {
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Outcomes of the requests in the measured window.
#[derive(Default)]
struct Tally {
    ok: u64,
    not_found: u64,
    errors: BTreeMap<String, u64>,
}

struct RunState {
    sampler: IdSampler,
    expected_items: Option<usize>,
    lists_change: bool,
    recorder: LatencyRecorder,
    tally: Mutex<Tally>,
    /// First answer seen for a sample of ids: later answers must list the same ids in the same order.
    first_seen: Mutex<HashMap<u64, Vec<i64>>>,
}

static CURRENT: RwLock<Option<Arc<RunState>>> = RwLock::new(None);

fn current() -> Arc<RunState> {
    CURRENT
        .read()
        .unwrap()
        .clone()
        .expect("a load run is in progress")
}

#[derive(Clone)]
struct UserState {
    rng: StdRng,
    requests: u64,
    total_us: u64,
}

#[derive(Deserialize)]
struct RelatedBody {
    product_id: i64,
    items: Vec<RelatedItem>,
}

#[derive(Deserialize)]
struct RelatedItem {
    id: i64,
}

enum Outcome {
    Ok,
    ExpectedNotFound,
    Failed(String),
}

async fn related_items(user: &mut GooseUser) -> TransactionResult {
    let state = current();
    if user.get_session_data::<UserState>().is_none() {
        user.set_session_data(UserState {
            rng: StdRng::from_entropy(),
            requests: 0,
            total_us: 0,
        });
    }
    let draw = state
        .sampler
        .draw(&mut user.get_session_data_unchecked_mut::<UserState>().rng);
    let id = match draw {
        Draw::Known(id) | Draw::Unknown(id) => id,
    };
    let started = Instant::now();
    let mut goose = user
        .get_named(&format!("/products/{id}/related"), ROUTE_NAME)
        .await?;
    let (outcome, body_text) = match goose.response {
        Err(ref e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "transport"
            };
            (Outcome::Failed(kind.into()), None)
        }
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Err(_) => (Outcome::Failed("body_read".into()), None),
                Ok(body) => (check(&state, draw, status, &body), Some(body)),
            }
        }
    };
    let elapsed = started.elapsed();

    let user_state = user.get_session_data_unchecked_mut::<UserState>();
    user_state.requests += 1;
    user_state.total_us += elapsed.as_micros() as u64;
    let mean_us = user_state.total_us / user_state.requests;
    if state.recorder.record(Instant::now(), elapsed, mean_us) {
        let mut tally = state.tally.lock().unwrap();
        match &outcome {
            Outcome::Ok => tally.ok += 1,
            Outcome::ExpectedNotFound => tally.not_found += 1,
            Outcome::Failed(kind) => *tally.errors.entry(kind.clone()).or_default() += 1,
        }
    }
    match outcome {
        Outcome::Ok => {}
        Outcome::ExpectedNotFound => {
            // goose counts every non-2xx as a failure; this one was asked for.
            user.set_success(&mut goose.request)?;
        }
        Outcome::Failed(kind) => {
            let body = body_text.map(|b| String::from_utf8_lossy(&b).into_owned());
            user.set_failure(&kind, &mut goose.request, None, body.as_deref())?;
        }
    }
    Ok(())
}

fn check(state: &RunState, draw: Draw, status: u16, body: &[u8]) -> Outcome {
    match (draw, status) {
        (Draw::Unknown(_), 404) => Outcome::ExpectedNotFound,
        (Draw::Known(id), 200) => {
            let Ok(parsed) = serde_json::from_slice::<RelatedBody>(body) else {
                return Outcome::Failed("body_not_json".into());
            };
            let ids: Vec<i64> = parsed.items.iter().map(|i| i.id).collect();
            let mut distinct = ids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let valid = parsed.product_id == id as i64
                && state.expected_items.is_none_or(|n| ids.len() == n)
                && distinct.len() == ids.len()
                && !ids.contains(&(id as i64));
            if !valid {
                return Outcome::Failed("body_mismatch".into());
            }
            if id % 101 == 0 && !state.lists_change {
                let mut seen = state.first_seen.lock().unwrap();
                let first = seen.entry(id).or_insert_with(|| ids.clone());
                if *first != ids {
                    return Outcome::Failed("order_changed".into());
                }
            }
            Outcome::Ok
        }
        (_, status) => Outcome::Failed(format!("http_{status}")),
    }
}

/// Errors of a load run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("goose: {0}")]
    Goose(String),
    #[error("stopped by Ctrl-C")]
    Interrupted,
}

/// Run one measured load. `sample` is called at the start and at the end of the measured
/// window (after warm-up), so the caller can take CPU readings that cover exactly that window.
/// When `cancel` fires, goose's killswitch stops the load and this returns
/// [`LoadError::Interrupted`].
pub async fn run_load<T, F>(
    spec: &LoadSpec,
    cancel: &Cancel,
    sample: F,
) -> Result<(LoadResult, T, T), LoadError>
where
    T: Send + 'static,
    F: Fn() -> T + Send + Sync + 'static,
{
    if cancel.is_cancelled() || goose::is_killswitch_triggered() {
        return Err(LoadError::Interrupted);
    }
    let state = Arc::new(RunState {
        sampler: IdSampler::new(spec.products, spec.ids, spec.unknown_share),
        expected_items: spec.expected_items,
        lists_change: spec.lists_change,
        recorder: LatencyRecorder::default(),
        tally: Mutex::new(Tally::default()),
        first_seen: Mutex::new(HashMap::new()),
    });
    // goose starts users over about a second; the warm-up covers that ramp too.
    let warmup = spec.warmup.max(Duration::from_secs(1));
    state.recorder.reset(warmup);
    *CURRENT.write().unwrap() = Some(state.clone());

    let run_secs = (warmup + spec.duration).as_secs().max(1) + 1;
    let mut args: Vec<String> = vec![
        "--host".into(),
        spec.host.clone(),
        "--users".into(),
        spec.users.to_string(),
        "--increase-rate".into(),
        spec.users.max(1).to_string(),
        "--run-time".into(),
        format!("{run_secs}s"),
        "--timeout".into(),
        format!("{}", spec.request_timeout.as_secs_f64()),
        "--quiet".into(),
        "--no-print-metrics".into(),
        // The telnet controller listens on a fixed port: two runs at once would collide.
        "--no-telnet".into(),
    ];
    for file in &spec.report_files {
        args.push("--report-file".into());
        args.push(file.display().to_string());
    }
    if let Some(taken) = spec.goose_args.iter().find(|a| {
        let flag = a.split('=').next().unwrap_or(a);
        OWN_GOOSE_FLAGS.contains(&flag)
    }) {
        return Err(LoadError::Goose(format!(
            "{taken} is set by loadgen itself: use loadgen's --host, --users, --duration-secs and --warmup-secs instead"
        )));
    }
    args.extend(spec.goose_args.iter().cloned());
    let config = GooseConfiguration::parse_args_default(&args)
        .map_err(|e| LoadError::Goose(e.to_string()))?;

    let sample = Arc::new(sample);
    let window_state = state.clone();
    let (duration, sampler) = (spec.duration, sample.clone());
    let window = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let start = (sampler)();
        let opened = Instant::now();
        tokio::time::sleep(duration).await;
        window_state.recorder.close();
        let end = (sampler)();
        (start, end, opened.elapsed())
    });

    let attack = GooseAttack::initialize_with_config(config)
        .map_err(|e| LoadError::Goose(e.to_string()))?
        .register_scenario(
            scenario!("StorefrontWidget")
                .register_transaction(transaction!(related_items).set_name("related items")),
        );
    // goose stops a running load through its killswitch.
    let stopper = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            goose::trigger_killswitch("interrupted");
        })
    };
    let outcome = attack.execute().await;
    stopper.abort();
    *CURRENT.write().unwrap() = None;
    if cancel.is_cancelled() || goose::is_killswitch_triggered() {
        window.abort();
        return Err(LoadError::Interrupted);
    }
    outcome.map_err(|e| LoadError::Goose(e.to_string()))?;
    let (start, end, measured) = window
        .await
        .map_err(|e| LoadError::Goose(format!("measurement window: {e}")))?;

    let secs = measured.as_secs_f64();
    let Tally {
        ok,
        not_found,
        errors,
    } = std::mem::take(&mut *state.tally.lock().unwrap());
    let failed: u64 = errors.values().sum();
    let total = ok + not_found + failed;
    let result = LoadResult {
        users: spec.users,
        measured_secs: (secs * 1000.0).round() / 1000.0,
        ok,
        expected_not_found: not_found,
        errors,
        requests_per_sec: (total as f64 / secs * 10.0).round() / 10.0,
        successful_per_sec: ((ok + not_found) as f64 / secs * 10.0).round() / 10.0,
        error_rate: if total == 0 {
            0.0
        } else {
            failed as f64 / total as f64
        },
        latency: state.recorder.raw(),
        latency_corrected: state.recorder.corrected(),
        coordinated_omission: format!(
            "closed model, {} users, no think time; corrected percentiles back-fill stalls \
             with each user's mean latency as the expected interval (HdrHistogram record_correct)",
            spec.users
        ),
    };
    Ok((result, start, end))
}
