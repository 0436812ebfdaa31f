//! `genesys-cloud-emulator`: the emulator on its own, for clients other than rolesync
//! (`rolesync emulator` serves the same thing). Stops on Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use genesys_cloud_emulator::EmulatorArgs;

#[derive(Parser, Debug)]
#[command(
    name = "genesys-cloud-emulator",
    version,
    about = "An in-memory Genesys Cloud org"
)]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handle = match genesys_cloud_emulator::spawn(cli.args).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("Genesys Cloud emulator listening on {}", handle.base_url());
        stopped().await;
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn stopped() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
