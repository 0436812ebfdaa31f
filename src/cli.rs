//! The command line (SPEC §6).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use crate::emulator::EmulatorArgs;

#[derive(Parser, Debug)]
#[command(name = "rolesync", version, about = "Keeps Genesys Cloud user roles in step with an HR system")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and run the sync pipeline.
    Serve(ServeArgs),
    /// Serve an in-memory Genesys Cloud org.
    Emulator(EmulatorArgs),
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Configuration file layered over config/default.toml.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(_args) => anyhow::bail!("not built yet"),
            Command::Emulator(args) => {
                let handle = crate::emulator::spawn(args).await?;
                eprintln!("emulator listening on {}", handle.base_url());
                let _ = tokio::signal::ctrl_c().await;
                handle.shutdown().await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
