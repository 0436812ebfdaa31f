//! Thin entry point: install the TLS provider, parse the command line, hand over to `cli`.

mod cli;
mod client;
mod demo;
mod exit;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    // reqwest and sqlx both use rustls on aws-lc-rs; installing it once up front avoids
    // rustls' "could not determine the process-level CryptoProvider" panic.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    cli::main()
}
