//! The exit codes of the command line, in one place, so a script can tell what happened
//! without parsing the output. The README lists them.

use rolesync::domain::JobStatus;
use std::process::ExitCode;

/// What a command ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The job succeeded, or the command did what it was asked (a submission accepted, a list
    /// printed, a job cancelled...).
    Success,
    /// A usage error, a file that cannot be read, the service unreachable or refusing the
    /// request (any 4xx or 5xx answer, with its reason on standard error).
    Error,
    /// The job ended `completed_with_errors`: some rows were rejected or failed.
    CompletedWithErrors,
    /// The job waits in `awaiting_approval` for `rolesync jobs approve`.
    AwaitingApproval,
    /// The job ended `failed` or `cancelled`.
    FailedOrCancelled,
    /// The job has not ended yet (`queued`, `running` or `paused`): `--timeout` ran out, or
    /// `jobs show` found it still going.
    NotFinished,
    /// `doctor`: a check failed (its fix is printed with it).
    CheckFailed,
    /// `doctor`: nothing failed, but a check that could have been made was not (`?` other
    /// than the write permissions, which reads never tell).
    CheckUnknown,
    /// `doctor`: the configuration or the policy cannot be loaded; nothing was called.
    ConfigInvalid,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Error => 1,
            Exit::CompletedWithErrors => 2,
            Exit::AwaitingApproval => 3,
            Exit::FailedOrCancelled => 4,
            Exit::NotFinished => 5,
            // doctor's own codes: its table is the detail, the code the verdict.
            Exit::CheckFailed => 1,
            Exit::CheckUnknown => 2,
            Exit::ConfigInvalid => 3,
        }
    }

    /// What a command that reports on a job exits with, from the job's status.
    pub fn of_status(status: JobStatus) -> Exit {
        match status {
            JobStatus::Succeeded => Exit::Success,
            JobStatus::CompletedWithErrors => Exit::CompletedWithErrors,
            JobStatus::AwaitingApproval => Exit::AwaitingApproval,
            JobStatus::Failed | JobStatus::Cancelled => Exit::FailedOrCancelled,
            JobStatus::Queued | JobStatus::Running | JobStatus::Paused => Exit::NotFinished,
        }
    }

    /// From a job as the API answers it; a job with no status this build knows is an error.
    pub fn of_job(job: &serde_json::Value) -> Exit {
        job.get("status")
            .and_then(|s| s.as_str())
            .and_then(JobStatus::parse)
            .map_or(Exit::Error, Exit::of_status)
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_code() {
        let codes: Vec<(JobStatus, u8)> = JobStatus::ALL
            .iter()
            .map(|s| (*s, Exit::of_status(*s).code()))
            .collect();
        assert_eq!(
            codes,
            [
                (JobStatus::Queued, 5),
                (JobStatus::Running, 5),
                (JobStatus::Paused, 5),
                (JobStatus::AwaitingApproval, 3),
                (JobStatus::Succeeded, 0),
                (JobStatus::CompletedWithErrors, 2),
                (JobStatus::Failed, 4),
                (JobStatus::Cancelled, 4),
            ]
        );
        assert_eq!(
            Exit::of_job(&serde_json::json!({"status": "new"})),
            Exit::Error
        );
    }
}
