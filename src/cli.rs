//! The command line (SPEC §6).

use crate::configuration::Settings;
use crate::emulator::EmulatorArgs;
use crate::ingest::{self, BatchQuery, Format};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
pub struct ClientArgs {
    /// Base URL of the rolesync service.
    #[arg(long, env = "ROLESYNC_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (sent as a bearer token).
    #[arg(long, env = "ROLESYNC_API_KEY", hide_env_values = true)]
    pub api_key: String,
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
            crate::telemetry::init(&settings.log.format, "info");
            let app = crate::startup::Application::build(settings).await?;
            app.run_until_stopped(crate::startup::shutdown_signal())
                .await?;
        }
        Command::Emulator(args) => {
            crate::telemetry::init("pretty", "info");
            let handle = crate::emulator::spawn(args).await?;
            eprintln!("Genesys Cloud emulator listening on {}", handle.base_url());
            crate::startup::shutdown_signal().await;
            handle.shutdown().await;
        }
        Command::Demo(args) => return crate::demo::run(args).await,
        Command::Submit(args) => return submit(args).await,
        Command::Status(args) => {
            let client = Client::new(&args.client)?;
            let job = client.job(&args.job).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        Command::Validate(args) => return validate(args),
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => {
            let settings = Settings::load(args.config.as_deref())?;
            let (report, ok) = crate::policy::check_report(&settings.policy.file);
            println!("{report}");
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::HashKey { key } => println!("{}", crate::http::auth::key_digest_hex(&key)),
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.config.as_deref())?;
    let policy = crate::policy::Policy::load(&settings.policy.file)?;
    let format = Format::from_path(&args.file)
        .context("the file must end in .csv, .ndjson, .jsonl or .json")?;
    let body = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let batch = ingest::parse(
        format,
        &body,
        &BatchQuery::default(),
        settings.server.max_rows_per_job,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = crate::http::validation_report(&policy, &batch);
    println!("{}", serde_json::to_string_pretty(&report)?);
    let valid = report
        .get("valid")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Ok(if valid {
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

/// A small client of the rolesync API, for the CLI and the demo.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            key: args.api_key.clone(),
        })
    }

    async fn json(resp: reqwest::Response) -> anyhow::Result<serde_json::Value> {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let detail = body.get("detail").and_then(|d| d.as_str()).unwrap_or("");
            anyhow::bail!("rolesync answered {status}: {detail}");
        }
        Ok(body)
    }

    pub async fn submit(
        &self,
        format: Format,
        body: impl Into<reqwest::Body>,
        mode: &str,
        dry_run: bool,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut req = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, format.content_type())
            .body(body);
        if format != Format::Json {
            req = req.query(&[
                ("mode", mode),
                ("dry_run", if dry_run { "true" } else { "false" }),
            ]);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        Self::json(req.send().await?).await
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        Self::json(
            self.http
                .get(format!("{}/v1/jobs/{id}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await?,
        )
        .await
    }

    pub async fn items(
        &self,
        id: &str,
        outcome: &str,
        limit: u32,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/v1/jobs/{id}/items", self.base);
        let req = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .query(&[("outcome", outcome), ("limit", &limit.to_string())]);
        Self::json(req.send().await?).await
    }

    /// Polls the job until it ends, drawing a progress bar of rows done.
    pub async fn wait_with_progress(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} rows  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        loop {
            let job = self.job(id).await?;
            let counts = job.get("counts").cloned().unwrap_or_default();
            let total = counts.get("total").and_then(|v| v.as_u64()).unwrap_or(0);
            let pending = counts.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
            let status = job
                .get("status")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            let calls = job
                .pointer("/scim/requests")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            bar.set_length(total);
            bar.set_position(total - pending);
            bar.set_message(format!("{status}, {calls} SCIM calls"));
            if matches!(
                status.as_str(),
                "succeeded"
                    | "completed_with_errors"
                    | "failed"
                    | "cancelled"
                    | "awaiting_approval"
            ) {
                bar.finish();
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
