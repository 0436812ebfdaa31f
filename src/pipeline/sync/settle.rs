//! A cancelled job's users: each left without an outcome gets the one that is true in the
//! target, without a write. And, for any job, a user about to be recorded `failed` although a
//! write may have reached them (`read_back`).

use super::super::decide::settled;
use super::user::stored_intent;
use super::*;

/// Gives each user of a cancelled job left without an outcome the outcome that is true in the
/// target, sending no write: a user no write may have reached (none sent by this run, no intent
/// recorded by an earlier one) is `cancelled` without a call; the others are read back once
/// (`settle_user`). A user whose read-back failed stays pending, and the chunk is claimed
/// again after a backoff to settle them (`run` is this claim's run of the chunk).
pub(super) async fn settle(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    users: Vec<Unsettled>,
    run: i64,
    done: &mut ChunkDone,
) {
    // A tally of its own: the run's was stopped by the cancel, and these reads are how the
    // cancel learns what was written. It is never stopped; a shutdown drops the whole chunk
    // (its lease is released and the next claim settles it).
    let tally = CallTally::default();
    {
        let mut settled = futures::stream::iter(users)
            .map(|(u, sent)| {
                let tally = &tally;
                async move {
                    let result =
                        settle_user(deps, policy, job, &u, sent.as_ref(), run, tally).await;
                    (u, result)
                }
            })
            .buffer_unordered(deps.settings.target.max_concurrency);
        while let Some((u, r)) = settled.next().await {
            match r {
                UserResult::Rows {
                    results,
                    events,
                    changed,
                    desired,
                    drifted,
                    audit,
                    ..
                } => record(done, results, events, changed, desired, drifted, audit),
                UserResult::Retry { lines } => done.retry_lines.extend(lines),
                // `settle_user` gives nothing else today; were it to, the user would stay
                // pending and be settled again by a later claim, never dropped from the
                // chunk (a chunk committed with a row left out never finishes its job).
                _ => {
                    tracing::error!(user.external_id = %u.external_id, "a cancelled job's user came out of settling without an outcome; kept pending");
                    done.retry_lines.extend(u.lines());
                }
            }
        }
    }
    if !done.retry_lines.is_empty() {
        // The chunk stays open (and the job unfinished) until a later claim settles them.
        done.retry_at_ms = Some(crate::store::now_ms() + retry_backoff_ms(run));
    }
    let (requests, retries, rate_limited) = tally.snapshot();
    done.deltas.scim_requests += requests;
    done.deltas.scim_retries += retries;
    done.deltas.scim_rate_limited += rate_limited;
}

/// One user of a cancelled job whose write may have been sent: by this run (`sent`), or by an
/// earlier run of the chunk that recorded its intent. Read once, fresh (a snapshot predates the
/// write): `applied` with the part of that write that landed, if any did (`decide::settled`:
/// on the Authorization path a user's change takes several calls, and a cancel between them
/// leaves it partly made), else `cancelled`. If the read fails, the write's fate is unknown:
/// `cancelled` would claim nothing was written and `failed` that the write did not land, so
/// the user stays pending (`Retry`) and a later claim of the chunk reads them again; only when
/// the chunk's runs are used up (`sync.max_chunk_attempts`, this being run `run`) are the rows
/// `failed`, saying the fate is unknown.
pub(super) async fn settle_user(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    u: &UserRows<ItemRecord>,
    sent: Option<&RoleChange>,
    run: i64,
    tally: &CallTally,
) -> UserResult {
    let report = Report {
        deps,
        policy,
        job,
        user: u,
    };
    match read_back(&report, sent, tally).await {
        ReadBack::NoWrite | ReadBack::NotLanded => report.cancelled(),
        ReadBack::Landed(applied) => applied,
        ReadBack::Lookup(result) => result,
        ReadBack::Unreadable(e) if run < i64::from(deps.settings.sync.max_chunk_attempts) => {
            tracing::warn!(user.external_id = %u.external_id, error = %e, "cannot read back a cancelled job's user whose write may have landed; settled by a later run of the chunk");
            UserResult::Retry {
                lines: u.lines().collect(),
            }
        }
        ReadBack::Unreadable(e) => report.failed(
            Outcome::Failed,
            ReasonCode::ScimRejected,
            &format!(
                "the job was cancelled while a write to this user may have been in flight, \
                 and reading the user back failed in every run of the chunk, so whether it \
                 landed is unknown: {e}"
            ),
        ),
    }
}

/// A user about to be recorded `failed` (`failure`) although a write may have reached them:
/// sent by this run and answered by no success (a timeout, a connection lost, a 5xx after an
/// attempt whose answer never came: any attempt may have landed), or recorded as an intent by
/// an earlier run of the chunk. Read once, fresh: if any part of that write is in place, the
/// user is `applied` with that part (`decide::settled`), for the record must hold every write
/// that reached the target; else, or if the read fails too, `failure` stands. One read, spent
/// only on a user who would otherwise fail.
pub(super) async fn read_back_or(
    report: &Report<'_>,
    sent: Option<&RoleChange>,
    tally: &CallTally,
    failure: UserResult,
) -> UserResult {
    if !matches!(failure, UserResult::Rows { .. }) {
        // Not a final outcome (retried, skipped, target-wide): the next run reads the user.
        return failure;
    }
    match read_back(report, sent, tally).await {
        ReadBack::Landed(applied) => applied,
        ReadBack::Unreadable(e) => {
            tracing::warn!(error = %e, "cannot read back a user whose write may have landed; recorded failed");
            failure
        }
        ReadBack::NoWrite | ReadBack::NotLanded | ReadBack::Lookup(_) => failure,
    }
}

/// What reading a user back told of a write that may have reached them.
enum ReadBack {
    /// No write may have: none sent by this run, no intent recorded by an earlier one.
    NoWrite,
    /// Part or all of it is in place: the user's `applied` result with that part.
    Landed(UserResult),
    /// None of it is in place.
    NotLanded,
    /// The lookup found no single user (deleted, ambiguous): its own result.
    Lookup(UserResult),
    /// The read failed.
    Unreadable(ScimError),
}

/// Reads the user once, fresh (a snapshot predates the write), and tells whether the write
/// sent by this run (`sent`), or else the intent an earlier run recorded, landed.
async fn read_back(report: &Report<'_>, sent: Option<&RoleChange>, tally: &CallTally) -> ReadBack {
    let prior = sent
        .map(|c| Intent {
            added: &c.added,
            removed: &c.removed,
        })
        .or_else(|| stored_intent(report.user));
    let Some(prior) = prior else {
        return ReadBack::NoWrite;
    };
    let found = match find_user(report.deps, None, &report.user.external_id, tally).await {
        Ok(found) => found,
        Err(e) => return ReadBack::Unreadable(e),
    };
    let user = match report.one_user(found) {
        Ok(user) => user,
        Err(result) => return ReadBack::Lookup(result),
    };
    match settled(&user.role_names(), prior) {
        Some(change) => ReadBack::Landed(report.applied(&user.id, &change)),
        None => ReadBack::NotLanded,
    }
}
