//! The command line: `rolesync serve | emulator | demo | submit | status | validate | policy
//! check | hash-key` (`rolesync --help`).

use crate::client::{Client, ClientArgs};
use anyhow::Context;
use clap::{Parser, Subcommand};
use genesys_cloud_emulator::EmulatorArgs;
use rolesync::configuration::Settings;
use rolesync::ingest::{self, BatchQuery, Format};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "rolesync",
    version,
    about = "Keeps Genesys Cloud user roles in step with an HR system"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and run the sync pipeline.
    Serve(ConfigArgs),
    /// Serve an in-memory Genesys Cloud org (for demos, tests and benchmarks).
    Emulator(EmulatorArgs),
    /// Run the emulator and the service in one process, sync a sample batch, print the summary.
    Demo(crate::demo::DemoArgs),
    /// Submit a batch file (CSV, NDJSON or JSON) to a running service.
    Submit(SubmitArgs),
    /// Show a job of a running service.
    Status(StatusArgs),
    /// Validate a batch file against the policy, offline: no service, no SCIM calls.
    Validate(ValidateArgs),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the SHA-256 of an API key, for `auth.keys.key_sha256`.
    HashKey { key: String },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Load and check the policy; print every problem, or a table of the roles.
    Check(ConfigArgs),
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Configuration file layered over the built-in defaults and config/default.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SubmitArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
    /// merge or replace
    #[arg(long, default_value = "merge")]
    pub mode: String,
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the job to finish, with a progress bar.
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    pub job: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ValidateArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn main() -> ExitCode {
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
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let settings = Settings::load(args.config.as_deref())?;
            let telemetry = rolesync::telemetry::init_with_traces(
                settings.log.format,
                "info",
                &settings.telemetry,
            )?;
            let app = rolesync::startup::Application::build(settings).await?;
            let served = app
                .run_until_stopped(rolesync::startup::shutdown_signal())
                .await;
            // Last: the spans of the shutdown itself are flushed too, within the export bound.
            telemetry.shutdown().await;
            served?;
        }
        Command::Emulator(args) => {
            rolesync::telemetry::init(rolesync::domain::LogFormat::Pretty, "info");
            let handle = genesys_cloud_emulator::spawn(args).await?;
            eprintln!("Genesys Cloud emulator listening on {}", handle.base_url());
            rolesync::startup::shutdown_signal().await;
            handle.shutdown().await;
        }
        Command::Demo(args) => return crate::demo::run(args).await,
        Command::Submit(args) => return submit(args).await,
        Command::Status(args) => {
            let client = Client::new(&args.client)?;
            let job = client.job(&args.job).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        Command::Validate(args) => return validate(args).await,
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => {
            let settings = Settings::load(args.config.as_deref())?;
            let (report, ok) = rolesync::policy::check_report(&settings.policy.file);
            println!("{report}");
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::HashKey { key } => println!("{}", rolesync::http::auth::key_digest_hex(&key)),
    }
    Ok(ExitCode::SUCCESS)
}

async fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.config.as_deref())?;
    let policy = rolesync::policy::Policy::load(&settings.policy.file)?;
    let format = Format::from_path(&args.file)
        .context("the file must end in .csv, .ndjson, .jsonl or .json")?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    // The same reading and judging as `POST /v1/validate`, in the same bounded memory.
    let report = rolesync::http::judge_file(
        &policy,
        format,
        file,
        BatchQuery::default(),
        ingest::Limits::from_settings(&settings),
        settings.ingest.max_rows_per_user,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let format = Format::from_path(&args.file)
        .context("the file must end in .csv, .ndjson, .jsonl or .json")?;
    // Streamed from the file: a million-row export is never held in memory here either.
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let job = client
        .submit(
            format,
            body,
            &args.mode,
            args.dry_run,
            args.idempotency_key.as_deref(),
        )
        .await?;
    let id = job
        .get("job_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    if !args.wait {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(ExitCode::SUCCESS);
    }
    let job = client.wait_with_progress(&id).await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    let ok = job.get("status").and_then(|s| s.as_str()) == Some("succeeded");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
