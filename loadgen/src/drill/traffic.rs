//! The drill's steady traffic: paced workers send `GET /products/{id}/related` through nginx
//! and keep every answer as a timestamped [`Event`]. goose's tallies count outcomes over a
//! window; a drill needs each answer's time, status and `Retry-After` header to find the
//! longest stretch without a success and the moment throughput came back, so this driver keeps
//! them all (a few hundred thousand small records for a whole drill).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with the asked product's items.
    Ok,
    /// Any other status; `retry_after` says whether the answer carried `Retry-After`.
    Status {
        code: u16,
        retry_after: bool,
    },
    /// A 200 whose body is not the asked product's list.
    BadBody,
    Timeout,
    Connect,
    Transport,
}

impl Outcome {
    /// The failure's name in reports (`http_503`, `timeout`, ...); `None` for a success.
    pub fn failure_kind(&self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::Status { code, .. } => Some(format!("http_{code}")),
            Outcome::BadBody => Some("body_mismatch".into()),
            Outcome::Timeout => Some("timeout".into()),
            Outcome::Connect => Some("connect".into()),
            Outcome::Transport => Some("transport".into()),
        }
    }
}

/// One answered (or failed) request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// When the answer arrived, in microseconds since the traffic started.
    pub at_us: u64,
    pub latency_us: u64,
    pub outcome: Outcome,
}

#[derive(Deserialize)]
struct Body {
    product_id: u64,
    items: Vec<serde_json::Value>,
}

/// Running traffic; [`Traffic::stop`] ends it.
pub struct Traffic {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Start `workers` workers that together send about `rate` requests per second to `url`
    /// for ids drawn uniformly from 1..=`products`. Each worker waits for its answer before
    /// its next request (at most `workers` in flight), so a stall shows as a gap, not a pile.
    pub fn start(url: &str, products: u64, rate: f64, workers: usize) -> Traffic {
        let started = Instant::now();
        let events = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(workers)
            .build()
            .expect("an HTTP client");
        let workers = workers.max(1);
        let period = Duration::from_secs_f64(workers as f64 / rate.max(0.1));
        let handles = (0..workers)
            .map(|w| {
                let (events, stop, client) = (events.clone(), stop.clone(), client.clone());
                let url = url.trim_end_matches('/').to_string();
                tokio::spawn(async move {
                    let mut rng = StdRng::from_entropy();
                    // Spread the workers' first ticks over one period.
                    tokio::time::sleep(period.mul_f64(w as f64 / workers as f64)).await;
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let id = rng.gen_range(1..=products.max(1));
                        let sent = Instant::now();
                        let outcome = request(&client, &url, id).await;
                        let done = Instant::now();
                        let event = Event {
                            at_us: (done - started).as_micros() as u64,
                            latency_us: (done - sent).as_micros() as u64,
                            outcome,
                        };
                        events.lock().unwrap().push(event);
                    }
                })
            })
            .collect();
        Traffic {
            started,
            events,
            stop,
            workers: handles,
        }
    }

    /// Microseconds since the traffic started: the clock every [`Event`] is on.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Stop every worker (after its request in flight) and return all events.
    pub async fn stop(self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

async fn request(client: &reqwest::Client, url: &str, id: u64) -> Outcome {
    let response = match client
        .get(format!("{url}/products/{id}/related"))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(e) if e.is_connect() => return Outcome::Connect,
        Err(_) => return Outcome::Transport,
    };
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .contains_key(reqwest::header::RETRY_AFTER);
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(_) => return Outcome::Transport,
    };
    if code != 200 {
        return Outcome::Status { code, retry_after };
    }
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) if b.product_id == id && !b.items.is_empty() => Outcome::Ok,
        _ => Outcome::BadBody,
    }
}
