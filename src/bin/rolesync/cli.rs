//! The command line (`rolesync --help`): the service and its tools (`serve`, `emulator`,
//! `demo`, `validate`, `doctor`, `sandbox-check`, `policy check`, `hash-key`, `completions`) and a client of a running
//! service (`submit`, `jobs list | show | items | cancel | approve | revert | watch`,
//! `reconcile`). What each command
//! exits with is `exit::Exit`; how it prints is `output`.

use crate::client::{Client, ClientArgs, SubmitOptions};
use crate::exit::Exit;
use crate::output::{self, Output};
use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand};
use genesys_cloud_emulator::EmulatorArgs;
use rolesync::configuration::Settings;
use rolesync::domain::{JobStatus, Mode, Outcome, Roster};
use rolesync::ingest::{self, BatchQuery, Format};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

#[derive(Parser, Debug)]
#[command(
    name = "rolesync",
    version,
    about = "Keeps Genesys Cloud user roles in step with an HR system",
    after_help = "Exit codes: 0 succeeded (or done), 1 usage, connection or service error, \
                  2 completed with errors (validate: invalid rows), 3 awaiting approval, \
                  4 failed or cancelled, 5 not finished yet (--timeout ran out). \
                  doctor: 0 nothing failed, 1 a check failed, 2 a check could not be made, \
                  3 the configuration or the policy cannot be loaded. \
                  sandbox-check: 0 nothing refuted, 1 something refuted, 3 refused to run, \
                  4 interrupted (test user restored), 5 test user not restored."
)]
pub struct Cli {
    /// How results are printed: aligned text, or the API's JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and run the sync pipeline. The target (target.scim_base and its
    /// credentials) must be named in --config or ROLESYNC__TARGET__*, unless --dev.
    Serve(ServeArgs),
    /// Serve an in-memory Genesys Cloud org (for demos, tests and benchmarks).
    Emulator(EmulatorArgs),
    /// Run the emulator and the service in one process, sync a sample batch, print the summary.
    Demo(crate::demo::DemoArgs),
    /// Submit a batch file (CSV, NDJSON, a JSON array or envelope) to a running service.
    Submit(SubmitArgs),
    /// Read and steer the jobs of a running service.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Apply every managed user's desired state again (the last role set a job gave them):
    /// find the users whose roles drifted, and fix them unless --dry-run.
    Reconcile(ReconcileArgs),
    /// The same as `jobs show`.
    #[command(hide = true)]
    Status(JobArgs),
    /// Validate a batch file against the policy, offline: no service, no SCIM calls.
    Validate(ValidateArgs),
    /// Preflight of the configured target, before the first job: a handful of read calls (at
    /// most 9), each check ✔ / ✘ / ? with its fix. Reads the same config as `serve`. Exits 0
    /// when nothing failed (the write permissions are always ?), 1 when a check failed, 2 when
    /// a check other than the write permissions could not be made, 3 when the configuration
    /// or the policy cannot be loaded.
    Doctor(ConfigArgs),
    /// Test, against a SANDBOX org, every assumption the SCIM and Authorization paths rest
    /// on, writing only to the test user and putting it back as it was (also on Ctrl-C or
    /// SIGTERM). Each assumption confirmed / refuted / not testable, with the evidence, and a
    /// redacted trace to send back. Exits 0 when nothing was refuted, 1 when something was,
    /// 3 when it refused to run, 4 when interrupted, 5 when the test user could not be restored.
    SandboxCheck(SandboxCheckArgs),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the SHA-256 of an API key, for `auth.keys.key_sha256`. The key is read from
    /// standard input (its first line), never from the command line, where other users and the
    /// shell history would see it.
    HashKey,
    /// Print a shell completion script: `rolesync completions bash > /etc/bash_completion.d/rolesync`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List(ListArgs),
    /// One job: status, counts, users, SCIM calls, estimate. Exits with the job's status code.
    Show(JobArgs),
    /// A job's rows with their outcomes and reasons.
    Items(ItemsArgs),
    /// Stop a job: nothing more is written (what was written is reported).
    Cancel(JobArgs),
    /// Release a job held in `awaiting_approval` (needs the `admin` scope).
    Approve(JobArgs),
    /// Undo a job: put back the roles it found, for every user it changed who still holds what
    /// it left (the others are reported `changed_since`). Starts a job of kind `revert`.
    Revert(RevertArgs),
    /// Follow a job with a progress bar until it ends; exits with its status code.
    Watch(WatchArgs),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Load and check the policy; print every problem, or a table of the roles.
    Check(ConfigArgs),
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct SandboxCheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The externalId of the test user: the only user written (exactly one user must hold it).
    #[arg(long)]
    pub test_user: Option<String>,
    /// The role granted to the test user and taken away again (default: the first role of the
    /// catalog, by name, that it lacks, other than Employee).
    #[arg(long)]
    pub test_role: Option<String>,
    /// Confirms that the check writes to the org (to the test user only, restored after).
    #[arg(long)]
    pub i_understand_this_writes: bool,
    /// Where the redacted trace is written (JSON lines).
    #[arg(long, default_value = "sandbox-check-trace.jsonl")]
    pub trace: PathBuf,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Configuration file layered over the built-in defaults and config/default.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Allow the built-in development target (the local emulator at 127.0.0.1:9090 and its
    /// published credentials) for the target keys no --config file or ROLESYNC__TARGET__*
    /// variable sets. Without it, `serve` refuses to start on them. Logged as a warning.
    #[arg(long)]
    pub dev: bool,
}

/// A closed vocabulary of the domain as a clap value: the accepted words are listed in `--help`
/// and in the shell completions, and anything else is a usage error naming them.
fn vocabulary<T>(all: &'static [T], word: fn(T) -> &'static str) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(all.iter().cloned().map(word)).try_map(|s| s.parse::<T>())
}

#[derive(clap::Args, Debug, Clone)]
pub struct SubmitArgs {
    /// The batch: .csv, .ndjson (or .jsonl), or .json (an array of assignments, or
    /// {"mode", "dry_run", "assignments"}).
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
    /// How the roles meet the ones users hold. Unset: the file's own `mode`, else merge. A file
    /// that says otherwise is refused.
    #[arg(long, value_parser = vocabulary(Mode::ALL, Mode::as_str))]
    pub mode: Option<Mode>,
    /// Plan every row and write nothing, whatever the file says.
    #[arg(long)]
    pub dry_run: bool,
    /// `full`: the file is the whole list of managed users; those it does not name are leavers
    /// and lose every managed role. Unset: the file's own `roster`, else partial.
    #[arg(long, value_parser = vocabulary(Roster::ALL, Roster::as_str))]
    pub roster: Option<Roster>,
    /// Wait for the job to end (or to wait for approval), with a progress bar; exit with its
    /// status code.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this many seconds (exit 5; the job goes on).
    #[arg(long, value_name = "SECS", requires = "wait")]
    pub timeout: Option<u64>,
    /// Sent as `Idempotency-Key`: the same key and file give the same job, never a second one.
    /// Unset, a new key is made and printed on standard error, to retry with.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct JobArgs {
    pub job: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RevertArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Plan the revert and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also revert users changed since: remove what the job added and add back what it
    /// removed, on top of the roles they hold now.
    #[arg(long)]
    pub force: bool,
    /// Wait for the revert to end, with a progress bar; exit with its status code.
    #[arg(long)]
    pub wait: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Report the drifted users (items `planned`) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// merge: give back desired roles a user lost; replace: also take away managed roles
    /// outside the desired state.
    #[arg(long, default_value = "merge", value_parser = vocabulary(Mode::ALL, Mode::as_str))]
    pub mode: Mode,
    /// Wait for the reconcile to end, with a progress bar; exit with its status code.
    #[arg(long)]
    pub wait: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Stop watching after this many seconds (exit 5; the job goes on).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only jobs in this status.
    #[arg(long, value_parser = vocabulary(JobStatus::ALL, JobStatus::as_str))]
    pub status: Option<JobStatus>,
    /// Jobs per page.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// The page after this one (the `next_cursor` of the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ItemsArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Only rows with this outcome.
    #[arg(long, value_parser = vocabulary(Outcome::ALL, Outcome::as_str))]
    pub outcome: Option<Outcome>,
    /// The service's CSV file (line, external_id, role_template, license_tier, outcome, reason,
    /// detail): fix the rows in a spreadsheet and submit the file again as it is.
    #[arg(long)]
    pub csv: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ValidateArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `--help` and `--version` are answers; anything else is a usage error, exit 1
            // like every other error (clap's own code would be 2, which means something else here).
            return if e.use_stderr() {
                Exit::Error.into()
            } else {
                Exit::Success.into()
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Error.into();
        }
    };
    match runtime.block_on(run(cli.command, cli.output)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Error.into()
        }
    }
}

async fn run(command: Command, output: Output) -> anyhow::Result<Exit> {
    match command {
        Command::Serve(args) => {
            let file = args.config.config.as_deref();
            let settings = Settings::load(file)?;
            // Checked before anything starts: a production config that forgets [target] must
            // not come up healthy against the development emulator.
            let from_defaults = rolesync::configuration::target_keys_from_defaults(file)?;
            if !from_defaults.is_empty() && !args.dev {
                anyhow::bail!(
                    "no target configured: {} would come from the built-in development defaults \
                     (the local emulator and its published credentials); {}. To run against \
                     the development target on purpose, start `rolesync serve --dev`",
                    from_defaults.join(", "),
                    rolesync::configuration::TARGET_KEYS_HELP
                );
            }
            let telemetry = rolesync::telemetry::init_with_traces(
                settings.log.format,
                "info",
                &settings.telemetry,
            )?;
            if !from_defaults.is_empty() {
                tracing::warn!(
                    target.scim_base = %settings.target.scim_base,
                    target.keys_from_defaults = %from_defaults.join(", "),
                    "--dev: the development target is in use (built-in defaults); not for production"
                );
            }
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
        Command::Submit(args) => return submit(args, output).await,
        Command::Jobs { command } => return jobs(command, output).await,
        Command::Reconcile(args) => {
            let client = Client::new(&args.client)?;
            let job = client.reconcile(args.dry_run, args.mode).await?;
            return started(&client, job, args.wait, output).await;
        }
        Command::Status(args) => return jobs(JobsCommand::Show(args), output).await,
        Command::Validate(args) => return validate(args).await,
        Command::Doctor(args) => return doctor(args, output).await,
        Command::SandboxCheck(args) => return sandbox_check(args, output).await,
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => {
            let settings = Settings::load(args.config.as_deref())?;
            let (report, ok) = rolesync::policy::check_report(&settings.policy.file);
            println!("{report}");
            return Ok(if ok { Exit::Success } else { Exit::Error });
        }
        Command::HashKey => {
            let key = read_key(std::io::stdin().lock())?;
            println!("{}", rolesync::http::auth::key_digest_hex(&key));
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "rolesync",
                &mut std::io::stdout(),
            );
        }
    }
    Ok(Exit::Success)
}

/// `rolesync doctor`: the report as a table or JSON; the exit code from its verdict.
async fn doctor(args: ConfigArgs, output: Output) -> anyhow::Result<Exit> {
    let loaded = (|| -> anyhow::Result<_> {
        let settings = Settings::load(args.config.as_deref())?;
        let policy = rolesync::policy::Policy::load(&settings.policy.file)?;
        Ok((settings, policy))
    })();
    let (settings, policy) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::ConfigInvalid);
        }
    };
    let report = rolesync::doctor::run(&settings, &policy).await;
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Table => write!(out, "{}", report.table())?,
    }
    Ok(match report.verdict() {
        rolesync::doctor::Verdict::Pass => Exit::Success,
        rolesync::doctor::Verdict::Fail => Exit::CheckFailed,
        rolesync::doctor::Verdict::Unknown => Exit::CheckUnknown,
    })
}

/// `rolesync sandbox-check`: refuses without a test user and the confirmation; otherwise runs
/// the check (restoring the test user on Ctrl-C / SIGTERM) and prints the report.
async fn sandbox_check(args: SandboxCheckArgs, output: Output) -> anyhow::Result<Exit> {
    let Some(test_user) = args.test_user.filter(|u| !u.is_empty()) else {
        eprintln!(
            "error: sandbox-check writes to one user of the org: name it with --test-user EXTERNAL_ID"
        );
        return Ok(Exit::ConfigInvalid);
    };
    if !args.i_understand_this_writes {
        eprintln!(
            "error: sandbox-check writes to the test user {test_user} (roles and active, restored after): \
             run it against a sandbox org, with --i-understand-this-writes"
        );
        return Ok(Exit::ConfigInvalid);
    }
    let settings = match Settings::load(args.config.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::ConfigInvalid);
        }
    };
    let options = rolesync::sandbox::Options {
        test_user,
        test_role: args.test_role,
        trace: args.trace,
    };
    let report =
        rolesync::sandbox::run(&settings, &options, rolesync::startup::shutdown_signal()).await;
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Table => write!(out, "{}", report.table())?,
    }
    Ok(
        if report.restore.status == rolesync::sandbox::RestoreStatus::Failed {
            Exit::RestoreFailed
        } else if report.interrupted {
            Exit::Interrupted
        } else if report.refuted() {
            Exit::CheckFailed
        } else if report
            .assumptions
            .iter()
            .all(|a| a.verdict == rolesync::sandbox::Verdict::NotTestable)
        {
            Exit::ConfigInvalid
        } else {
            Exit::Success
        },
    )
}

/// The API key on standard input: its first line without the line end. Bounded: a key is short.
fn read_key(input: impl Read) -> anyhow::Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("API key (then Enter): ");
    }
    let mut text = String::new();
    input
        .take(64 * 1024)
        .read_to_string(&mut text)
        .context("standard input is not UTF-8 text")?;
    let key = text.lines().next().unwrap_or("");
    anyhow::ensure!(
        !key.trim().is_empty(),
        "no key on standard input: `printf %s \"$KEY\" | rolesync hash-key`"
    );
    anyhow::ensure!(
        text.lines().skip(1).all(|l| l.trim().is_empty()),
        "standard input holds more than one line; give one key"
    );
    Ok(key.to_owned())
}

async fn jobs(command: JobsCommand, output: Output) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    match command {
        JobsCommand::List(args) => {
            let client = Client::new(&args.client)?;
            let list = client
                .jobs(args.status, args.limit, args.cursor.as_deref())
                .await?;
            output::jobs(&mut out, &list, output)?;
        }
        JobsCommand::Show(args) => {
            let job = Client::new(&args.client)?.job(&args.job).await?;
            output::job(&mut out, &job, output)?;
            return Ok(Exit::of_job(&job));
        }
        JobsCommand::Items(args) => {
            let client = Client::new(&args.job.client)?;
            if args.csv {
                // Copied as it arrives: a job of any size is never held here.
                let mut resp = client.items_csv(&args.job.job, args.outcome).await?;
                while let Some(chunk) = resp.chunk().await.context("the CSV was cut short")? {
                    out.write_all(&chunk)?;
                }
                out.flush()?;
                return Ok(Exit::Success);
            }
            let mut printer = output::Items::start(&mut out, output)?;
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .items(&args.job.job, args.outcome, 1000, cursor.as_deref())
                    .await?;
                let items = page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                printer.page(&mut out, items)?;
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            printer.finish(&mut out)?;
        }
        JobsCommand::Cancel(args) => {
            let job = Client::new(&args.client)?.cancel(&args.job).await?;
            output::job(&mut out, &job, output)?;
        }
        JobsCommand::Approve(args) => {
            let job = Client::new(&args.client)?.approve(&args.job).await?;
            output::job(&mut out, &job, output)?;
        }
        JobsCommand::Revert(args) => {
            let client = Client::new(&args.job.client)?;
            let job = client
                .revert(&args.job.job, args.dry_run, args.force)
                .await?;
            return started(&client, job, args.wait, output).await;
        }
        JobsCommand::Watch(args) => {
            let client = Client::new(&args.job.client)?;
            let job = client.wait(&args.job.job, deadline(args.timeout)).await?;
            output::job(&mut out, &job, output)?;
            return Ok(Exit::of_job(&job));
        }
    }
    Ok(Exit::Success)
}

/// Prints a job just started (revert, reconcile), or waits for it to end and prints it then,
/// exiting with its status code.
async fn started(client: &Client, job: Value, wait: bool, output: Output) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    if !wait {
        output::job(&mut out, &job, output)?;
        return Ok(Exit::Success);
    }
    let id = job
        .get("job_id")
        .and_then(|v| v.as_str())
        .context("the service answered a job without job_id")?
        .to_owned();
    let job = client.wait(&id, None).await?;
    output::job(&mut out, &job, output)?;
    Ok(Exit::of_job(&job))
}

fn deadline(timeout_secs: Option<u64>) -> Option<tokio::time::Instant> {
    timeout_secs.map(|s| tokio::time::Instant::now() + std::time::Duration::from_secs(s))
}

/// Exits 0 when every row would be accepted, 2 when some would be rejected.
async fn validate(args: ValidateArgs) -> anyhow::Result<Exit> {
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
        Exit::Success
    } else {
        Exit::CompletedWithErrors
    })
}

/// Streams the file to `POST /v1/jobs` with an Idempotency-Key (printed on standard error, so
/// standard output stays the job), then waits for the job if asked.
async fn submit(args: SubmitArgs, output: Output) -> anyhow::Result<Exit> {
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
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    eprintln!("Idempotency-Key: {key}  (to retry safely: --idempotency-key {key})");
    let options = SubmitOptions {
        mode: args.mode,
        dry_run: args.dry_run,
        roster: args.roster,
    };
    let job = client.submit(format, body, options, &key).await?;
    let mut out = std::io::stdout().lock();
    if !args.wait {
        output::job(&mut out, &job, output)?;
        return Ok(Exit::Success);
    }
    let id = job
        .get("job_id")
        .and_then(|v| v.as_str())
        .context("the service answered a job without job_id")?
        .to_owned();
    let job = client.wait(&id, deadline(args.timeout)).await?;
    output::job(&mut out, &job, output)?;
    Ok(Exit::of_job(&job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_key_is_the_first_line_without_its_end() {
        let key = |s: &str| read_key(s.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(key("secret\n"), Ok("secret".to_owned()));
        assert_eq!(key("secret\r\n\n"), Ok("secret".to_owned()));
        assert_eq!(key("secret"), Ok("secret".to_owned()));
        assert!(key("").is_err());
        assert!(key("\n").is_err());
        assert!(key("one\ntwo\n").is_err());
    }
}
