//! The Authorization path's writes for a chunk: the users decided to be written, written
//! together by bulk calls (`bulk`) once the chunk's users are decided.

use super::*;

/// The Authorization path's writes for a chunk (`bulk`): one call per role per
/// `target.bulk_max_subjects` users, a refused batch bisected; then each user's own result
/// (`applied` with the change computed from the read, or why not), its event and audit line.
pub(super) async fn write_deferred(
    deps: &Deps,
    policy: &Policy,
    job: &JobRecord,
    run: &ChunkRun,
    deferred: Vec<Deferred>,
) -> Vec<UserRun> {
    let tally = &run.tally;
    let errors = match deps.scim.authz_catalog(tally).await {
        Ok(catalog) => {
            let changes: Vec<&RoleChange> = deferred.iter().map(|d| &d.2).collect();
            let ids: Vec<&str> = deferred.iter().map(|d| d.1.as_str()).collect();
            let batches = bulk::batches(&changes, deps.settings.target.bulk_max_subjects);
            bulk::write(&deps.scim, &catalog, tally, &ids, batches).await
        }
        Err(e) => {
            // No bulk call was sent: every user shares the catalog's failure.
            return deferred
                .into_iter()
                .map(|(user, _, _)| {
                    let report = Report {
                        deps,
                        policy,
                        job,
                        user: &user,
                    };
                    let result = report.call_failed(e.clone());
                    UserRun {
                        user,
                        result,
                        sent: None,
                    }
                })
                .collect();
        }
    };
    let mut out = Vec::with_capacity(deferred.len());
    for ((user, user_id, change), error) in deferred.into_iter().zip(errors) {
        let report = Report {
            deps,
            policy,
            job,
            user: &user,
        };
        let result = match error {
            None => report.applied(&user_id, &change),
            // Refused alone: deleted since the read (a 404 on reading it), else refused.
            Some(ScimError::Rejected {
                status: 400,
                detail,
            }) => match deps.scim.get_user(&user_id, tally).await {
                // An id known from an earlier job (`reads`), gone since: forgotten, and the
                // user looked up by a later run of the chunk.
                Err(ScimError::NotFound) if read_method(job) == ReadMethod::Grants => {
                    if let Err(e) = deps
                        .store
                        .forget_id(&job.id, &user.external_id, &user_id)
                        .await
                    {
                        tracing::warn!(error = %e, "cannot forget a stale user id");
                    }
                    UserResult::Retry {
                        lines: user.lines().collect(),
                    }
                }
                Err(ScimError::NotFound) => report.deleted(),
                _ => report.fail_rows(
                    Outcome::Failed,
                    ReasonCode::ScimRejected,
                    &format!("the bulk grant call refused this user (400): {detail}"),
                    true,
                ),
            },
            // A 404 on a role call is about the role, not the user.
            Some(ScimError::NotFound) => report.fail_rows(
                Outcome::Failed,
                ReasonCode::ScimRejected,
                "the target does not know one of the roles (404)",
                true,
            ),
            // No answer, or not one that says the call was refused: it may have landed.
            Some(e @ ScimError::Unavailable { .. }) => {
                let failure = report.call_failed(e);
                read_back_or(&report, Some(&change), tally, failure).await
            }
            Some(e) => report.call_failed(e),
        };
        out.push(UserRun {
            user,
            result,
            sent: Some(change),
        });
    }
    out
}
