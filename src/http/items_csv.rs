//! `GET /v1/jobs/{id}/items` with `Accept: text/csv`: a job's rows as a CSV file HR can open in
//! a spreadsheet, fix and send back to `POST /v1/jobs` as it is (the batch reader takes the
//! three columns it needs by name and ignores the others).
//!
//! Streamed: the store is read a page at a time while the answer is being sent, so memory holds
//! one page whatever the size of the job. Every cell a spreadsheet could run as a formula is
//! guarded (`ingest::csv_cell`). A store failure after the first bytes were sent can only cut the
//! answer short: the transfer ends with an error (a truncated chunked body), never with a file
//! that looks complete.

use crate::domain::Outcome;
use crate::ingest::csv_cell::neutralise;
use crate::store::{ItemRecord, Store};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The columns, in order. `external_id`, `role_template`, `license_tier` and `action` are the
/// batch reader's names, so the file is a valid batch (a leaver's row stays a `revoke`).
pub const COLUMNS: [&str; 8] = [
    "line",
    "external_id",
    "role_template",
    "license_tier",
    "outcome",
    "reason",
    "detail",
    "action",
];

/// Rows read from the store per page.
const PAGE: i64 = 1000;

/// Whether the client prefers CSV: `text/csv` is in `Accept` with a quality above zero and above
/// any JSON range (`application/json`). `*/*` alone, or no `Accept`, is JSON.
pub fn wants_csv(headers: &HeaderMap) -> bool {
    let mut csv = 0.0f32;
    let mut json = 0.0f32;
    for accept in headers.get_all(header::ACCEPT) {
        let Ok(accept) = accept.to_str() else {
            continue;
        };
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "text/csv" => csv = csv.max(q),
                "application/json" => json = json.max(q),
                _ => {}
            }
        }
    }
    csv > 0.0 && csv > json
}

/// The answer: headers now, rows as they are read.
pub fn response(store: Store, job_id: String, outcome: Option<Outcome>) -> Response {
    let filename = match outcome {
        None => format!("job-{job_id}-items.csv"),
        Some(o) => format!("job-{job_id}-{o}.csv"),
    };
    // State: the header is sent first; then pages after `cursor` until a short one.
    let pages = futures::stream::try_unfold(
        (store, job_id, Some(0i64), true),
        move |(store, job_id, cursor, first)| async move {
            let Some(after) = cursor else {
                return Ok::<_, std::io::Error>(None);
            };
            let mut out = csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
            if first {
                out.write_record(COLUMNS).map_err(std::io::Error::other)?;
            }
            let items = store
                .list_items(&job_id, outcome, PAGE, Some(after))
                .await
                .map_err(|e| {
                    tracing::error!(job.id = %job_id, error = %e, "CSV of a job's rows cut short");
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

/// One row's cells, in `COLUMNS` order, each guarded against formulas.
fn record(item: &ItemRecord) -> [String; 8] {
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
        item.action.as_str().to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(header::ACCEPT, v);
        }
        h
    }

    #[test]
    fn csv_only_when_preferred_to_json() {
        assert!(wants_csv(&accept("text/csv")));
        assert!(wants_csv(&accept("text/csv, application/json;q=0.5")));
        assert!(wants_csv(&accept("TEXT/CSV; charset=utf-8")));
        assert!(!wants_csv(&accept("application/json, text/csv;q=0.9")));
        assert!(!wants_csv(&accept("text/csv;q=0")));
        assert!(!wants_csv(&accept("*/*")));
        assert!(!wants_csv(&HeaderMap::new()));
    }
}
