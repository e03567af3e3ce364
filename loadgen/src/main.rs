//! The `loadgen` binary: parses the command line ([`loadgen::cli`]) and runs it on a
//! multi-threaded tokio runtime; errors print with their causes and exit 1.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = loadgen::cli::Cli::parse();
    if matches!(cli.command, loadgen::cli::Command::Api(_)) {
        // Before the runtime's threads exist; the load generator keeps glibc's default.
        api::alloc::one_malloc_arena();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(loadgen::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
