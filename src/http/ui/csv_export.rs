//! The rejected rows of a job as CSV, for HR to fix in a spreadsheet and upload again: the
//! columns `line, external_id, role_template, license_tier, outcome, reason, detail` (the batch
//! reader takes the three it needs by name). Streamed a page at a time, so memory holds one page
//! whatever the job's size; every cell a spreadsheet could run as a formula is neutralised.

use crate::domain::Outcome;
use crate::store::{ItemRecord, Store};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

const COLUMNS: [&str; 7] = [
    "line",
    "external_id",
    "role_template",
    "license_tier",
    "outcome",
    "reason",
    "detail",
];
/// Rows read from the store per page.
const PAGE: i64 = 1000;

/// The answer: headers now, rows as they are read. A store failure after the first bytes can
/// only cut the body short (the transfer ends in error), never pass for a complete file.
pub fn rejected(store: Store, job_id: String) -> Response {
    let filename = format!("job-{job_id}-rejected.csv");
    let pages = futures::stream::try_unfold(
        (store, job_id, Some(0i64), true),
        |(store, job_id, cursor, first)| async move {
            let Some(after) = cursor else {
                return Ok::<_, std::io::Error>(None);
            };
            let mut out = csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
            if first {
                out.write_record(COLUMNS).map_err(std::io::Error::other)?;
            }
            let items = store
                .list_items(&job_id, Some(Outcome::Rejected), PAGE, Some(after))
                .await
                .map_err(|e| {
                    tracing::error!(job.id = %job_id, error = %e, "CSV of rejected rows cut short");
                    std::io::Error::other(e)
                })?;
            let next = match items.last() {
                Some(last) if items.len() as i64 == PAGE => Some(last.line),
                _ => None,
            };
            for item in &items {
                out.write_record(record(item))
                    .map_err(std::io::Error::other)?;
            }
            let bytes = out.into_inner().map_err(|e| e.into_error())?;
            Ok(Some((Bytes::from(bytes), (store, job_id, next, false))))
        },
    );
    let mut resp = Body::from_stream(pages).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

fn record(item: &ItemRecord) -> [String; 7] {
    let (reason, detail) = match &item.reason {
        Some(r) => (r.code.as_str(), r.message.as_str()),
        None => ("", ""),
    };
    [
        item.line.to_string(),
        neutralise(&item.external_id).into_owned(),
        neutralise(&item.role_template).into_owned(),
        neutralise(&item.license_tier).into_owned(),
        item.outcome.as_str().to_owned(),
        reason.to_owned(),
        neutralise(detail).into_owned(),
    ]
}

/// A cell a spreadsheet would read as a formula (`= + - @`, or a tab or carriage return that
/// some strip first) gets a leading `'`, which spreadsheets show as text.
fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn formula_cells_are_neutralised() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("u-1"), "u-1");
        assert_eq!(neutralise(""), "");
    }
}
