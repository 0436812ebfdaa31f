//! The types of `sandbox-check`'s request and report, and the report's table.

use super::assumptions::{Finding, Verdict};
use std::path::PathBuf;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The externalId of the test user: the only user written.
    pub test_user: String,
    /// The role granted and taken away during the check (default: the first role of the
    /// catalog, by name, that the user lacks, other than Employee).
    pub test_role: Option<String>,
    /// Where the redacted trace is written (JSON lines).
    pub trace: PathBuf,
}

/// How the test user was left.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStatus {
    /// Nothing was written: nothing to restore.
    NotNeeded,
    /// Read back after the restore: as recorded.
    Restored,
    /// Read back after the restore: not as recorded (or not readable). See `fix`.
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Restore {
    pub status: RestoreStatus,
    /// What was recorded before the first write: `active` and `roles`.
    pub recorded: Option<serde_json::Value>,
    /// What to set by hand when the restore failed; empty otherwise.
    pub fix: String,
}

/// What `rolesync sandbox-check --output json` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub test_user: String,
    pub test_role: Option<String>,
    pub assumptions: Vec<Finding>,
    /// Why the check stopped early (test user not found, no answer, interrupted); null when it
    /// ran to the end.
    pub stopped: Option<String>,
    pub interrupted: bool,
    pub restore: Restore,
    /// Calls made to the target, the token included.
    pub calls: u32,
    pub trace: String,
}

impl Report {
    pub fn refuted(&self) -> bool {
        self.assumptions
            .iter()
            .any(|f| f.verdict == Verdict::Refuted)
    }

    /// The report for people: one line per assumption, its evidence under it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for f in &self.assumptions {
            let mark = match f.verdict {
                Verdict::Confirmed => "✔",
                Verdict::Refuted => "✘",
                Verdict::NotTestable => "?",
            };
            out.push_str(&format!(
                "{mark} {:<12} {:<30} {}\n",
                f.verdict.as_str(),
                f.id.as_str(),
                f.statement
            ));
            out.push_str(&format!("  {:<43} seen: {}\n", "", f.evidence));
            out.push_str(&format!("  {:<43} source: {}\n", "", f.source));
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!("stopped early: {why}\n"));
        }
        match self.restore.status {
            RestoreStatus::NotNeeded => out.push_str("test user: not written\n"),
            RestoreStatus::Restored => out.push_str("test user: restored as recorded\n"),
            RestoreStatus::Failed => {
                out.push_str(&format!("test user: NOT RESTORED. {}\n", self.restore.fix))
            }
        }
        out.push_str(&format!(
            "{} calls to the target; redacted trace: {}\n",
            self.calls, self.trace
        ));
        out
    }
}
