//! Genesys' audit query API (`/api/v2/audits/query…`), the drift feed's source
//! (pipeline::drift): the realtime query (the last 14 days, pages of at most 500) and the async
//! query (create, poll its state, read its results by cursor). Every call is paced, retried,
//! counted and timed like any call to the target. Answers are bounded: at most `MAX_PAGE`
//! messages are taken from one page, whatever the target sends.

use super::{Call, CallTally, ScimClient, parse, path_segment};
use crate::scim::ScimError;
use reqwest::Method;
use serde_json::{Value, json};

/// The largest page Genesys allows (AuditApi: `pageSize` ≤ 500), and the most messages taken
/// from one answer.
pub const MAX_PAGE: u64 = 500;
/// The service role changes are audited under (unconfirmed: README, Drift).
pub const SERVICE: &str = "PeoplePermissions";

/// One page of the realtime query.
#[derive(Debug)]
pub struct AuditPage {
    pub messages: Vec<Value>,
    pub page_count: u64,
}

/// The state of an async query (`AuditQueryExecutionStatusResponse.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl QueryState {
    fn parse(s: &str) -> Option<QueryState> {
        [
            ("queued", QueryState::Queued),
            ("running", QueryState::Running),
            ("succeeded", QueryState::Succeeded),
            ("failed", QueryState::Failed),
            ("cancelled", QueryState::Cancelled),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, st)| st)
    }
}

/// `"start/end"` in ISO 8601 (UTC, milliseconds).
pub fn interval(start_ms: i64, end_ms: i64) -> String {
    let iso = |ms: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    };
    format!("{}/{}", iso(start_ms), iso(end_ms))
}

/// The query's body: role changes (`PeoplePermissions`, entity type `Role`), oldest first.
fn query_body(start_ms: i64, end_ms: i64) -> Value {
    json!({
        "interval": interval(start_ms, end_ms),
        "serviceName": SERVICE,
        "filters": [{"property": "EntityType", "value": "Role"}],
        "sort": [{"name": "Timestamp", "sortOrder": "ascending"}],
    })
}

fn messages(v: &Value) -> Vec<Value> {
    v.get("entities")
        .and_then(Value::as_array)
        .map(|a| a.iter().take(MAX_PAGE as usize).cloned().collect())
        .unwrap_or_default()
}

impl ScimClient {
    /// Page `page_number` (1-based) of the role changes in `[start_ms, end_ms)`
    /// (`POST /api/v2/audits/query/realtime`).
    pub async fn audit_realtime(
        &self,
        start_ms: i64,
        end_ms: i64,
        page_number: u64,
        tally: &CallTally,
    ) -> Result<AuditPage, ScimError> {
        let mut body = query_body(start_ms, end_ms);
        body["pageNumber"] = json!(page_number);
        body["pageSize"] = json!(MAX_PAGE);
        let a = self
            .call(
                Call {
                    method: Method::POST,
                    route: "/audits/query/realtime",
                    url: format!("{}/api/v2/audits/query/realtime", self.api_base),
                    query: &[],
                    body: Some(body),
                    if_match: None,
                },
                tally,
            )
            .await?;
        let v: Value = parse(&a.body)?;
        Ok(AuditPage {
            messages: messages(&v),
            page_count: v.get("pageCount").and_then(Value::as_u64).unwrap_or(1),
        })
    }

    /// Starts an async query of the role changes in `[start_ms, end_ms)`
    /// (`POST /api/v2/audits/query`); answers its transaction id.
    pub async fn audit_query_create(
        &self,
        start_ms: i64,
        end_ms: i64,
        tally: &CallTally,
    ) -> Result<String, ScimError> {
        let a = self
            .call(
                Call {
                    method: Method::POST,
                    route: "/audits/query",
                    url: format!("{}/api/v2/audits/query", self.api_base),
                    query: &[],
                    body: Some(query_body(start_ms, end_ms)),
                    if_match: None,
                },
                tally,
            )
            .await?;
        let v: Value = parse(&a.body)?;
        v.get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 256)
            .map(str::to_owned)
            .ok_or_else(|| ScimError::Protocol("the audit query answered no id".into()))
    }

    /// The state of async query `id` (`GET /api/v2/audits/query/{transactionId}`).
    pub async fn audit_query_state(
        &self,
        id: &str,
        tally: &CallTally,
    ) -> Result<QueryState, ScimError> {
        let a = self
            .get(
                "/audits/query/{transactionId}",
                format!("{}/api/v2/audits/query/{}", self.api_base, path_segment(id)),
                &[],
                tally,
            )
            .await?;
        let v: Value = parse(&a.body)?;
        let state = v.get("state").and_then(Value::as_str).unwrap_or("");
        QueryState::parse(state)
            .ok_or_else(|| ScimError::Protocol(format!("unknown audit query state {state:?}")))
    }

    /// A page of async query `id`'s results, and the cursor of the next page (none: the last).
    pub async fn audit_query_results(
        &self,
        id: &str,
        cursor: Option<&str>,
        tally: &CallTally,
    ) -> Result<(Vec<Value>, Option<String>), ScimError> {
        let mut query = vec![("pageSize", MAX_PAGE.to_string())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let a = self
            .get(
                "/audits/query/{transactionId}/results",
                format!(
                    "{}/api/v2/audits/query/{}/results",
                    self.api_base,
                    path_segment(id)
                ),
                &query,
                tally,
            )
            .await?;
        let v: Value = parse(&a.body)?;
        let next = v
            .get("cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .map(str::to_owned);
        Ok((messages(&v), next))
    }
}
