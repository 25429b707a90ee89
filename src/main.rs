//! `portcullis`: parse the command line, set up logging, run the command.

use clap::Parser;
use portcullis::cli::{Cli, Command, run_admin, serve};

/// mimalloc instead of the system allocator: sled copies tree nodes on every write, and glibc's
/// large-block paths (`malloc_consolidate`, `unlink_chunk`) were a quarter of the code exchange's
/// profile. Server CPU per request with it (`bench/run.sh`): exchange 252 -> 174 µs, rotation
/// 184 -> 162 µs, client_credentials 84 -> 78 µs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log = portcullis::logging::init(cli.settings.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.settings).await,
        command => run_admin(&cli.settings, command).await,
    };
    drop(log); // the log's last lines before the error below
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("portcullis: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
