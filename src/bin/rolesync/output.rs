//! How the CLI prints what the API answers: `--output table` (aligned text for people) or
//! `--output json` (the API's JSON, for scripts). Printing is kept apart from the commands.

use serde_json::Value;
use std::io::Write;

/// `--output`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Aligned text.
    #[default]
    Table,
    /// The API's JSON, one document.
    Json,
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// One job.
pub fn job(out: &mut impl Write, job: &Value, format: Output) -> std::io::Result<()> {
    if format == Output::Json {
        return writeln!(out, "{}", serde_json::to_string_pretty(job)?);
    }
    let counts = ["pending", "applied", "unchanged", "planned", "rejected"]
        .into_iter()
        .chain(["not_found", "failed", "cancelled"])
        .filter_map(|k| {
            let c = n(job, &format!("/counts/{k}"));
            (c > 0).then(|| format!("{c} {k}"))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut lines = vec![
        ("job", s(job, "/job_id").to_owned()),
        ("kind", s(job, "/kind").to_owned()),
        ("status", s(job, "/status").to_owned()),
        (
            "mode",
            format!(
                "{}{}",
                s(job, "/mode"),
                if job["dry_run"] == true {
                    " (dry run)"
                } else {
                    ""
                }
            ),
        ),
        (
            "rows",
            format!("{} total: {counts}", n(job, "/counts/total")),
        ),
        (
            "users",
            format!(
                "{} total, {} changed, {} unchanged",
                n(job, "/users/total"),
                n(job, "/users/changed"),
                n(job, "/users/unchanged")
            ),
        ),
        (
            "SCIM calls",
            format!(
                "{} ({} retries, {} rate limited)",
                n(job, "/scim/requests"),
                n(job, "/scim/retries"),
                n(job, "/scim/rate_limited")
            ),
        ),
    ];
    for (label, pointer) in [
        ("reverts", "/original_job_id"),
        ("reverted by", "/reverted_by"),
        ("paused", "/paused_reason"),
        ("error", "/error"),
        ("created", "/created_at"),
        ("started", "/started_at"),
        ("finished", "/finished_at"),
    ] {
        let v = s(job, pointer);
        if !v.is_empty() {
            lines.push((label, v.to_owned()));
        }
    }
    if !job["estimate"].is_null() {
        lines.push((
            "estimate",
            format!(
                "{} reads ({}), at most {} writes, about {} s",
                n(job, "/estimate/reads"),
                s(job, "/estimate/strategy"),
                n(job, "/estimate/writes_max"),
                n(job, "/estimate/eta_secs")
            ),
        ));
    }
    for (label, value) in lines {
        writeln!(out, "{label:<11} {value}")?;
    }
    Ok(())
}

/// A page of `GET /v1/jobs`.
pub fn jobs(out: &mut impl Write, list: &Value, format: Output) -> std::io::Result<()> {
    if format == Output::Json {
        return writeln!(out, "{}", serde_json::to_string_pretty(list)?);
    }
    writeln!(
        out,
        "{:<36}  {:<21}  {:<7}  {:>8}  {:>8}  CREATED",
        "JOB", "STATUS", "MODE", "ROWS", "PENDING"
    )?;
    for j in list["jobs"].as_array().into_iter().flatten() {
        let mode = format!(
            "{}{}",
            s(j, "/mode"),
            if j["dry_run"] == true { "*" } else { "" }
        );
        writeln!(
            out,
            "{:<36}  {:<21}  {:<7}  {:>8}  {:>8}  {}",
            s(j, "/job_id"),
            s(j, "/status"),
            mode,
            n(j, "/counts/total"),
            n(j, "/counts/pending"),
            s(j, "/created_at")
        )?;
    }
    if let Some(next) = list["next_cursor"].as_str() {
        writeln!(out, "(more: --cursor {next}; * = dry run)")?;
    }
    Ok(())
}

/// Prints a job's rows page by page, so a job of any size streams: a table, or one JSON array.
pub struct Items {
    format: Output,
    first: bool,
}

impl Items {
    pub fn start(out: &mut impl Write, format: Output) -> std::io::Result<Items> {
        match format {
            Output::Json => write!(out, "[")?,
            Output::Table => writeln!(
                out,
                "{:>7}  {:<20}  {:<24}  {:<20}  {:<10}  REASON",
                "LINE", "EXTERNAL_ID", "ROLE_TEMPLATE", "LICENSE_TIER", "OUTCOME"
            )?,
        }
        Ok(Items {
            format,
            first: true,
        })
    }

    pub fn page(&mut self, out: &mut impl Write, items: &[Value]) -> std::io::Result<()> {
        for i in items {
            match self.format {
                Output::Json => {
                    let sep = if self.first { "\n  " } else { ",\n  " };
                    write!(out, "{sep}{}", serde_json::to_string(i)?)?;
                }
                Output::Table => {
                    let reason = match (s(i, "/reason/code"), s(i, "/reason/message")) {
                        ("", _) => String::new(),
                        (code, "") => code.to_owned(),
                        (code, message) => format!("{code}: {message}"),
                    };
                    writeln!(
                        out,
                        "{:>7}  {:<20}  {:<24}  {:<20}  {:<10}  {reason}",
                        n(i, "/line"),
                        s(i, "/external_id"),
                        s(i, "/role_template"),
                        s(i, "/license_tier"),
                        s(i, "/outcome"),
                    )?;
                }
            }
            self.first = false;
        }
        Ok(())
    }

    pub fn finish(self, out: &mut impl Write) -> std::io::Result<()> {
        match self.format {
            Output::Json if self.first => writeln!(out, "]"),
            Output::Json => writeln!(out, "\n]"),
            Output::Table => Ok(()),
        }
    }
}
