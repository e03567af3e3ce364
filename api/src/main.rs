//! The `api` binary: parses the flags and runs [`api::serve`] until SIGTERM or SIGINT.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "api",
    about = "The related-items read API over PostgreSQL read replicas"
)]
struct Cli {
    #[command(flatten)]
    config: api::Config,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(api::serve(cli.config))
}
