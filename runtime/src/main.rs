//! `switchboard-runtime`: hosts agents (`run`), sends RPCs (`send`), publishes events
//! (`publish`). The logic lives in [`switchboard_runtime::cli`].

use std::process::ExitCode;

use clap::Parser;
use switchboard_runtime::cli::{self, Cli};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let parsed = Cli::parse();
    match cli::main(parsed).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-runtime: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
