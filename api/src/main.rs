//! The `api` binary: parses the flags, validates them (a nonsense value exits non-zero with a
//! message naming the flag), and runs [`api::serve_settings`] until SIGTERM or SIGINT.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "api",
    about = "The related-items read API over PostgreSQL read replicas"
)]
struct Cli {
    #[command(flatten)]
    config: api::Config,

    /// Runtime worker threads (default: one per CPU). On a machine the database shares, fewer
    /// threads than cores leave it more CPU and cut cross-thread wake-ups. 1 runs every
    /// connection, query and timer on the main thread (tokio's current-thread scheduler): no
    /// wake-up ever crosses threads, the cheapest per request where one core's worth of API
    /// is enough (results/api.md, run AB).
    #[arg(long, env = "API_WORKER_THREADS")]
    worker_threads: Option<usize>,

    /// The kernel's scheduling policy for the API's threads: `normal` (the default) or `batch`
    /// (Linux's SCHED_BATCH: the API's wake-ups do not preempt other processes, so a machine
    /// shared with the database switches between them less often; less CPU per request at
    /// saturation, a little more latency under contention). Needs no privilege.
    #[arg(long, env = "API_SCHEDULING", value_enum, default_value_t)]
    scheduling: api::sched::Scheduling,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.config.validate()?;
    let threads = api::config::worker_threads(cli.worker_threads)?;
    api::alloc::one_malloc_arena();
    // Before the runtime: its threads inherit the policy.
    cli.scheduling
        .apply()
        .map_err(|e| anyhow::anyhow!("--scheduling batch: the kernel refused SCHED_BATCH: {e}"))?;
    // One thread: the current-thread scheduler, not a multi-thread one of one worker, which
    // would still park, steal and hand tasks between its worker and the main thread.
    let mut runtime = match threads {
        Some(threads) if threads.get() == 1 => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(threads.get());
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(api::serve_settings(settings))
}
