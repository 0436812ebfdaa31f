//! One user's rows, as every stage after validation sees them: the planner (rows as submitted)
//! and the sync workers and the approval check (rows as stored, with their chunk's history).
//!
//! A user's rows travel together: they are validated, chunked, synced and fail as one. Rows
//! reach the grouping ordered by user (the store reads them so, `validate_rows` sorts them), so
//! a user is one run of consecutive rows.

use crate::domain::{Action, Assignment, Mode};
use crate::policy::{Policy, RoleSet};
use crate::store::ItemRecord;

/// What the pipeline needs of a row to group it.
pub(crate) trait UserRow {
    fn external_id(&self) -> &str;
    fn role_template(&self) -> &str;
    fn line(&self) -> i64;
    /// A generated row (revert, reconcile): the roles it asks for, instead of a template.
    fn desired_roles(&self) -> Option<&[String]> {
        None
    }
    /// `revoke` for a leaver's row.
    fn action(&self) -> Action {
        Action::Assign
    }
}

impl UserRow for Assignment {
    fn external_id(&self) -> &str {
        &self.external_id
    }
    fn role_template(&self) -> &str {
        &self.role_template
    }
    fn line(&self) -> i64 {
        self.line as i64
    }
    fn action(&self) -> Action {
        self.action
    }
}

impl UserRow for ItemRecord {
    fn external_id(&self) -> &str {
        &self.external_id
    }
    fn role_template(&self) -> &str {
        &self.role_template
    }
    fn line(&self) -> i64 {
        self.line
    }
    fn desired_roles(&self) -> Option<&[String]> {
        self.desired_roles.as_deref()
    }
    fn action(&self) -> Action {
        self.action
    }
}

impl<R: UserRow> UserRow for &R {
    fn external_id(&self) -> &str {
        (*self).external_id()
    }
    fn role_template(&self) -> &str {
        (*self).role_template()
    }
    fn line(&self) -> i64 {
        (*self).line()
    }
    fn desired_roles(&self) -> Option<&[String]> {
        (*self).desired_roles()
    }
    fn action(&self) -> Action {
        (*self).action()
    }
}

/// One user and the rows that want roles for them.
///
/// Invariant: `rows` is not empty and every row names `external_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRows<R> {
    pub(crate) external_id: String,
    pub(crate) rows: Vec<R>,
}

impl<R: UserRow> UserRows<R> {
    /// The user of `rows` (all of one user); None when there are none.
    pub(crate) fn new(rows: Vec<R>) -> Option<UserRows<R>> {
        let external_id = rows.first()?.external_id().to_owned();
        Some(UserRows { external_id, rows })
    }

    pub(crate) fn lines(&self) -> impl Iterator<Item = i64> + '_ {
        self.rows.iter().map(UserRow::line)
    }

    /// A leaver: the user's rows say `revoke`. Validation keeps a user's rows all `assign` or
    /// all `revoke` (`conflicting_actions`), so the first row tells.
    pub(crate) fn revokes(&self) -> bool {
        self.rows.first().map(UserRow::action) == Some(Action::Revoke)
    }

    /// The mode the user's roles are reached in: the job's, except for a leaver, whose managed
    /// roles all go whatever the job's mode (`replace` towards no managed role).
    pub(crate) fn mode(&self, job_mode: Mode) -> Mode {
        if self.revokes() {
            Mode::Replace
        } else {
            job_mode
        }
    }

    /// The roles to push for this user: the union of the rows' roles (a generated row's
    /// `desired_roles`, else its template), expanded by `policy` (`Policy::expand`); none for
    /// a leaver. Computed where it is used, once per user.
    pub(crate) fn desired(&self, policy: &Policy) -> RoleSet {
        if self.revokes() {
            return RoleSet::new();
        }
        let mut wanted = RoleSet::new();
        for r in &self.rows {
            match r.desired_roles() {
                Some(roles) => wanted.extend(roles.iter().cloned()),
                None => {
                    wanted.insert(r.role_template().to_owned());
                }
            }
        }
        policy.expand(&wanted)
    }
}

/// Splits rows ordered by user into runs of one user each, in order.
pub(crate) fn runs_by_user<R: UserRow>(rows: impl IntoIterator<Item = R>) -> Vec<Vec<R>> {
    let mut runs: Vec<Vec<R>> = Vec::new();
    for row in rows {
        match runs.last_mut() {
            Some(run) if run.first().map(UserRow::external_id) == Some(row.external_id()) => {
                run.push(row)
            }
            _ => runs.push(vec![row]),
        }
    }
    runs
}

/// The users of rows ordered by user (a chunk's items).
pub(crate) fn group_users<R: UserRow>(rows: impl IntoIterator<Item = R>) -> Vec<UserRows<R>> {
    runs_by_user(rows)
        .into_iter()
        .filter_map(UserRows::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64, external_id: &str, role: &str) -> Assignment {
        Assignment {
            line,
            external_id: external_id.to_owned(),
            role_template: role.to_owned(),
            license_tier: "Standard Agent".to_owned(),
            action: crate::domain::Action::Assign,
            effective_at_ms: None,
            defect: None,
        }
    }

    fn policy() -> Policy {
        match Policy::from_toml_str(include_str!("../../config/policy.toml")) {
            Ok(p) => p,
            Err(e) => panic!("default policy must load: {e}"),
        }
    }

    #[test]
    fn consecutive_rows_of_a_user_make_one_user_who_wants_their_roles_expanded() {
        let rows = vec![
            row(2, "a", "Queue Member"),
            row(3, "a", "Wrap Up"),
            row(4, "b", "Agent"),
        ];
        let users = group_users(rows);
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].external_id, "a");
        assert_eq!(users[0].lines().collect::<Vec<_>>(), vec![2, 3]);
        // Both roles inherit `Agent`: it is pushed too.
        let want: RoleSet = ["Agent", "Queue Member", "Wrap Up"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(users[0].desired(&policy()), want);
        assert_eq!(users[1].lines().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn a_user_is_one_run_of_consecutive_rows() {
        // Not sorted: `a` appears twice, as two runs (callers sort first).
        let rows = vec![
            row(2, "a", "Agent"),
            row(3, "b", "Agent"),
            row(4, "a", "Agent"),
        ];
        let ids: Vec<String> = group_users(rows)
            .into_iter()
            .map(|u| u.external_id)
            .collect();
        assert_eq!(ids, ["a", "b", "a"]);
    }

    #[test]
    fn no_rows_no_users() {
        assert!(group_users::<Assignment>(Vec::new()).is_empty());
        assert!(UserRows::<Assignment>::new(Vec::new()).is_none());
    }
}
