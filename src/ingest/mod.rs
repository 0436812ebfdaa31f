//! Reads a submitted batch: JSON, NDJSON or CSV, chosen by `Content-Type`.
//!
//! Two kinds of problems, kept apart on purpose:
//! - the body's *shape* is wrong (invalid UTF-8, broken JSON, a missing header or field):
//!   the whole batch is refused with a 400 naming the line and column, and nothing is stored;
//! - one *row* is wrong (unknown role, a CSV row with too few fields): that row is stored as
//!   rejected with its reason, and the rest of the batch goes on.

mod csv_body;
pub mod csv_cell;
mod json_body;
#[cfg(test)]
mod leaver_tests;
pub mod spool;

use crate::configuration::Settings;
use crate::domain::{Action, Assignment, Mode, Roster};
use crate::error::{ApiError, FieldError};
use std::io::BufRead;

/// The bounds a batch is read under (`server.max_rows_per_job` and `[ingest]`). What a reader
/// holds at once is bounded by these figures and `BATCH_ROWS`, never by the body.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows in one batch; beyond, 413.
    pub max_rows: u64,
    /// One record (CSV record, NDJSON line, JSON element).
    pub max_record_bytes: u64,
    /// `role_template` and `license_tier`, in bytes.
    pub max_field_bytes: usize,
    /// Fields in one record.
    pub max_fields: usize,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Limits {
        Limits {
            max_rows: s.server.max_rows_per_job,
            max_record_bytes: s.ingest.max_record_bytes,
            max_field_bytes: s.ingest.max_field_bytes,
            max_fields: s.ingest.max_fields,
        }
    }

    /// The built-in bounds with another row limit.
    pub fn with_max_rows(max_rows: u64) -> Limits {
        let d = crate::configuration::IngestSettings::default();
        Limits {
            max_rows,
            max_record_bytes: d.max_record_bytes,
            max_field_bytes: d.max_field_bytes,
            max_fields: d.max_fields,
        }
    }
}

/// A parsed batch, before any policy check.
#[derive(Debug, Clone)]
pub struct Batch {
    pub mode: Mode,
    pub dry_run: bool,
    pub roster: Roster,
    pub rows: Vec<Assignment>,
}

/// Body formats rolesync reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
}

impl Format {
    /// From a `Content-Type` header; None for anything unsupported (415).
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Format::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Format::Ndjson)
            }
            "text/csv" | "application/csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// From a file name, for the CLI.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv",
        }
    }
}

/// A row's `action` as sent: empty is `assign` (the column is optional); another word than
/// `assign` or `revoke` is the row's rejection (`malformed_row`, naming the field).
/// A row's `effective_at`: empty for at once, else an RFC 3339 date-time with its offset
/// (`2026-03-31T17:00:00Z`, `2026-03-31T18:00:00+01:00`). Anything else is the row's
/// rejection (`malformed_row`), at submission: a typo is not found on the day.
pub(crate) fn parse_effective_at(word: &str) -> Result<Option<i64>, String> {
    let word = word.trim();
    if word.is_empty() {
        return Ok(None);
    }
    let shown: String = word.chars().take(40).collect();
    let at = time::OffsetDateTime::parse(word, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!(
                "effective_at \"{shown}\" is not an RFC 3339 date-time (e.g. 2026-03-31T17:00:00Z)"
            )
        })?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map(Some)
        .map_err(|_| format!("effective_at \"{shown}\" is out of range"))
}

pub(crate) fn parse_action(word: &str) -> Result<Action, String> {
    let word = word.trim();
    if word.is_empty() {
        return Ok(Action::Assign);
    }
    Action::parse(word).ok_or_else(|| {
        let shown: String = word.chars().take(40).collect();
        format!("action \"{shown}\" is not one of: {}", Action::expected())
    })
}

/// Options given as query parameters, for every format; how they meet the options a JSON
/// envelope states is `settle_options`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchQuery {
    /// `merge` (the default) adds the roles asked for; `replace` also removes the managed roles
    /// not asked for. Given here and in a JSON envelope, the two must agree.
    #[param(value_type = Option<Mode>)]
    pub mode: Option<String>,
    /// Judge and plan, read the target, write nothing. A dry run asked for here or in the body
    /// is a dry run.
    pub dry_run: Option<bool>,
    /// `full`: the batch is the complete list of managed users; every managed user (one with
    /// a desired state) it does not name is a leaver and loses every managed role (a `revoke`
    /// row is added for them). `partial` (the default): only the users named change. Given here
    /// and in a JSON envelope, the two must agree.
    #[param(value_type = Option<Roster>)]
    pub roster: Option<String>,
}

/// The options a body states itself (the JSON envelope's `mode` and `dry_run`); NDJSON, CSV and
/// a bare JSON array state none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BodyOptions {
    pub mode: Option<Mode>,
    pub dry_run: Option<bool>,
    pub roster: Option<Roster>,
}

/// The one rule for a batch's options, whatever its format. A dry run asked for anywhere (query
/// or body) is a dry run: a write is never made because one of the two said nothing or `false`.
/// `mode` given in both places must agree: a disagreement is a 400 naming both, since either
/// choice could remove roles the caller meant to keep. Unstated, a batch is `merge`.
pub(crate) fn settle_options(
    query_mode: Option<Mode>,
    query_dry_run: Option<bool>,
    body: BodyOptions,
) -> Result<(Mode, bool), ApiError> {
    let mode = match (query_mode, body.mode) {
        (Some(q), Some(b)) if q != b => {
            let message = format!(
                "the query says mode={q} and the body says \"mode\": \"{b}\"; state it once or make them agree"
            );
            return Err(ApiError::BadRequest {
                detail: format!("mode: {message}"),
                errors: ["query.mode", "body.mode"]
                    .into_iter()
                    .map(|field| FieldError {
                        field: field.into(),
                        message: message.clone(),
                        line: None,
                        column: None,
                    })
                    .collect(),
            });
        }
        (q, b) => q.or(b).unwrap_or_default(),
    };
    let dry_run = query_dry_run == Some(true) || body.dry_run == Some(true);
    Ok((mode, dry_run))
}

/// Parses a whole body held in memory (`/v1/validate`, the CLI). Same reader as the streamed
/// path of `POST /v1/jobs`, so a body is judged the same way everywhere.
pub fn parse(
    format: Format,
    body: &[u8],
    query: &BatchQuery,
    limits: &Limits,
) -> Result<Batch, ApiError> {
    utf8(body)?;
    let mut rows = Vec::new();
    let summary = read_rows(format, body, query, limits, &mut |batch| {
        rows.extend(batch);
        Ok(())
    })?;
    Ok(Batch {
        mode: summary.mode,
        dry_run: summary.dry_run,
        roster: summary.roster,
        rows,
    })
}

/// What a streamed read found besides its rows.
#[derive(Debug, Clone, Copy)]
pub struct ReadSummary {
    pub mode: Mode,
    pub dry_run: bool,
    pub roster: Roster,
    pub rows: u64,
}

/// `roster` given in the query and in a JSON envelope must agree, like `mode`: a roster
/// `full` takes every role from the managed users it does not name, so neither may be guessed.
pub(crate) fn settle_roster(
    query: Option<Roster>,
    body: Option<Roster>,
) -> Result<Roster, ApiError> {
    match (query, body) {
        (Some(q), Some(b)) if q != b => {
            let message = format!(
                "the query says roster={q} and the body says \"roster\": \"{b}\"; state it once or make them agree"
            );
            Err(ApiError::BadRequest {
                detail: format!("roster: {message}"),
                errors: ["query.roster", "body.roster"]
                    .into_iter()
                    .map(|field| FieldError {
                        field: field.into(),
                        message: message.clone(),
                        line: None,
                        column: None,
                    })
                    .collect(),
            })
        }
        (q, b) => Ok(q.or(b).unwrap_or_default()),
    }
}

/// Reads a spooled body (`spool`) into an open store `Ingest`: the parser runs on a blocking
/// thread and hands batches over a short queue, so memory holds a few batches at most whatever
/// the body. `events` gives the outbox events that go with a batch (its rejected rows). On
/// error the caller drops the `Ingest` (rolled back), which also stops the parser.
pub(crate) async fn receive(
    ingest: &mut crate::store::Ingest,
    file: std::fs::File,
    format: Format,
    query: BatchQuery,
    limits: Limits,
    events: &(dyn Fn(&[Assignment]) -> Vec<crate::store::OutboxEvent> + Sync),
) -> Result<ReadSummary, ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Assignment>>(2);
    let parser = tokio::task::spawn_blocking(move || {
        let input = std::io::BufReader::with_capacity(256 * 1024, file);
        read_rows(format, input, &query, &limits, &mut |batch| {
            tx.blocking_send(batch).map_err(|_| ApiError::Unavailable {
                detail: "the store stopped taking rows".into(),
                retry_after_secs: 5,
            })
        })
    });
    // Ends when the parser is done (or failed: its error is returned below) and its sender
    // dropped.
    if let Err(e) = ingest.add_stream(&mut rx, events).await {
        // Dropping the receiver stops the parser at its next batch.
        drop(rx);
        let _ = parser.await;
        return Err(e.into());
    }
    parser
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("parser task: {e}")))?
}

/// Rows handed to the sink at a time.
pub const BATCH_ROWS: usize = 2000;

/// Reads a body of valid UTF-8 (see `spool`) as a stream, handing rows to `emit` in batches of
/// at most `BATCH_ROWS`, in body order. Memory stays bounded by one batch whatever the size
/// of the body. On a shape error the error is returned and rows already emitted must be
/// discarded by the caller (the store rolls its transaction back).
pub fn read_rows<R: BufRead>(
    format: Format,
    mut input: R,
    query: &BatchQuery,
    limits: &Limits,
    emit: &mut dyn FnMut(Vec<Assignment>) -> Result<(), ApiError>,
) -> Result<ReadSummary, ApiError> {
    let query_mode = match &query.mode {
        None => None,
        Some(m) => Some(
            Mode::parse(m)
                .ok_or_else(|| ApiError::field("mode", "must be \"merge\" or \"replace\""))?,
        ),
    };
    let query_roster = match &query.roster {
        None => None,
        Some(r) => Some(
            Roster::parse(r)
                .ok_or_else(|| ApiError::field("roster", "must be \"partial\" or \"full\""))?,
        ),
    };
    skip_bom(&mut input)?;
    let mut sink = RowSink::new(*limits, emit);
    let body = match format {
        Format::Json => json_body::read_envelope(input, &mut sink)?,
        Format::Ndjson => {
            json_body::read_ndjson(input, &mut sink)?;
            BodyOptions::default()
        }
        Format::Csv => {
            csv_body::read(input, &mut sink)?;
            BodyOptions::default()
        }
    };
    let (mode, dry_run) = settle_options(query_mode, query.dry_run, body)?;
    let roster = settle_roster(query_roster, body.roster)?;
    let rows = sink.finish()?;
    Ok(ReadSummary {
        mode,
        dry_run,
        roster,
        rows,
    })
}

fn skip_bom<R: BufRead>(input: &mut R) -> Result<(), ApiError> {
    let head = input
        .fill_buf()
        .map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
    if head.starts_with(b"\xef\xbb\xbf") {
        input.consume(3);
    }
    Ok(())
}

/// Collects rows into batches and field problems into one refusal.
pub(crate) struct RowSink<'a> {
    batch: Vec<Assignment>,
    rows: u64,
    pub(crate) limits: Limits,
    emit: &'a mut dyn FnMut(Vec<Assignment>) -> Result<(), ApiError>,
    errors: Vec<FieldError>,
    /// A failure that is not the body's (the receiver went away): stops the read.
    pub(crate) failed: Option<ApiError>,
}

/// Field problems collected before the body is refused.
const MAX_FIELD_ERRORS: usize = 100;

/// The text rules, the same whatever the store: a control character (NUL included) in any
/// field, an `external_id` longer than `ExternalId::MAX_LEN`, or another field longer than
/// `max_field_bytes` rejects the row (`malformed_row`, with the reason) before it is stored.
/// What is stored is made safe for every store and bounded: control characters become U+FFFD
/// and a field too long is cut to its limit plus one character (so it still reads as too long).
fn text_rules(row: &mut Assignment, max_field_bytes: usize) {
    use crate::domain::ExternalId;
    let mut problems: Vec<String> = Vec::new();
    for (name, value) in [
        ("role_template", &mut row.role_template),
        ("license_tier", &mut row.license_tier),
    ] {
        if value.len() > max_field_bytes {
            let mut cut = max_field_bytes + 1;
            while !value.is_char_boundary(cut) {
                cut += 1;
            }
            value.truncate(cut);
            problems.push(format!("{name} is longer than {max_field_bytes} bytes"));
        }
    }
    for (name, value) in [
        ("external_id", &mut row.external_id),
        ("role_template", &mut row.role_template),
        ("license_tier", &mut row.license_tier),
    ] {
        if value.chars().any(char::is_control) {
            *value = value
                .chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect();
            problems.push(format!("{name} contains a control character"));
        }
    }
    if row.external_id.chars().count() > ExternalId::MAX_LEN {
        row.external_id = row
            .external_id
            .chars()
            .take(ExternalId::MAX_LEN + 1)
            .collect();
        problems.push(format!(
            "external_id is longer than {} characters",
            ExternalId::MAX_LEN
        ));
    }
    if !problems.is_empty() && row.defect.is_none() {
        row.defect = Some(problems.join("; "));
    }
}

impl<'a> RowSink<'a> {
    fn new(
        limits: Limits,
        emit: &'a mut dyn FnMut(Vec<Assignment>) -> Result<(), ApiError>,
    ) -> RowSink<'a> {
        RowSink {
            batch: Vec::with_capacity(BATCH_ROWS),
            rows: 0,
            limits,
            emit,
            errors: Vec::new(),
            failed: None,
        }
    }

    /// Takes one row. Err stops the read: too many rows, or the receiver went away.
    pub(crate) fn push(&mut self, mut row: Assignment) -> Result<(), ApiError> {
        text_rules(&mut row, self.limits.max_field_bytes);
        self.rows += 1;
        if self.rows > self.limits.max_rows {
            return Err(ApiError::PayloadTooLarge(format!(
                "the batch has more than {} rows (line {}); at most {} are accepted in one job",
                self.limits.max_rows, row.line, self.limits.max_rows
            )));
        }
        if !self.errors.is_empty() {
            // The body will be refused: no point storing more.
            return Ok(());
        }
        self.batch.push(row);
        if self.batch.len() >= BATCH_ROWS {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ROWS));
            (self.emit)(full)?;
        }
        Ok(())
    }

    /// Records a row whose required fields are missing; the body will be refused. Returns
    /// false once enough problems are known to stop reading.
    pub(crate) fn field_error(&mut self, e: FieldError) -> bool {
        self.rows += 1;
        self.errors.push(e);
        self.errors.len() < MAX_FIELD_ERRORS
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    fn finish(mut self) -> Result<u64, ApiError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if !self.errors.is_empty() {
            let detail = format!(
                "{} row(s) lack required fields, first: {}; nothing was stored",
                self.errors.len(),
                self.errors.first().map(|e| e.field.as_str()).unwrap_or("")
            );
            return Err(ApiError::BadRequest {
                detail,
                errors: self.errors,
            });
        }
        if self.rows == 0 {
            return Err(ApiError::bad_request("the batch has no assignments"));
        }
        if !self.batch.is_empty() {
            let rest = std::mem::take(&mut self.batch);
            (self.emit)(rest)?;
        }
        Ok(self.rows)
    }
}

/// The body as UTF-8, or a 400 naming the line and column of the first invalid byte.
fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| {
        let valid = &body[..e.valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let column =
            (valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1)) as u64 + 1;
        shape_error(line, Some(column), "the body is not valid UTF-8".into())
    })
}

/// A 400 for a malformed body, naming where.
pub(crate) fn shape_error(line: u64, column: Option<u64>, message: String) -> ApiError {
    let at = match column {
        Some(c) => format!("line {line}, column {c}"),
        None => format!("line {line}"),
    };
    ApiError::BadRequest {
        detail: format!("{at}: {message}"),
        errors: vec![FieldError {
            field: format!("line {line}"),
            message,
            line: Some(line),
            column,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> BatchQuery {
        BatchQuery::default()
    }

    #[test]
    fn csv_with_bom_crlf_quotes_and_shuffled_columns() {
        let body = "\u{feff}license_tier,extra,external_id,role_template\r\n\"Standard Agent\",x,EMP-1,Agent\r\nSupervisor,\"a,b\",\"EMP-\"\"2\",\"Supervisor\"\r\n";
        let b = parse(
            Format::Csv,
            body.as_bytes(),
            &q(),
            &Limits::with_max_rows(10),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.rows.len(), 2);
        assert_eq!(b.rows[0].external_id, "EMP-1");
        assert_eq!(b.rows[0].license_tier, "Standard Agent");
        assert_eq!(b.rows[0].line, 2);
        assert_eq!(b.rows[1].external_id, "EMP-\"2");
        assert_eq!(b.rows[1].line, 3);
    }

    #[test]
    fn csv_row_with_wrong_field_count_is_that_rows_error() {
        let body =
            "external_id,role_template,license_tier\nEMP-1,Agent\nEMP-2,Agent,Standard Agent\n";
        let b = parse(
            Format::Csv,
            body.as_bytes(),
            &q(),
            &Limits::with_max_rows(10),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.rows.len(), 2);
        assert!(
            b.rows[0]
                .defect
                .as_deref()
                .unwrap_or("")
                .contains("2 fields")
        );
        assert!(b.rows[1].defect.is_none());
    }

    #[test]
    fn csv_without_a_required_column_is_refused() {
        let e = parse(
            Format::Csv,
            b"external_id,role_template\nEMP-1,Agent\n",
            &q(),
            &Limits::with_max_rows(10),
        )
        .err();
        assert!(matches!(e, Some(ApiError::BadRequest { .. })));
        assert!(
            e.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("license_tier")
        );
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let e = parse(
            Format::Csv,
            b"external_id,role_template,license_tier\nEMP-\xff,Agent,X\n",
            &q(),
            &Limits::with_max_rows(10),
        )
        .err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("line 2, column 5: the body is not valid UTF-8".into())
        );
    }

    #[test]
    fn json_missing_field_names_the_row() {
        let body = r#"{"assignments":[{"external_id":"A","role_template":"Agent","license_tier":"Standard Agent"},{"external_id":"B","role_template":"Agent"}]}"#;
        let e = parse(
            Format::Json,
            body.as_bytes(),
            &q(),
            &Limits::with_max_rows(10),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("assignments[1]") && e.contains("license_tier"),
            "{e}"
        );
    }

    #[test]
    fn broken_json_names_line_and_column() {
        let e = parse(
            Format::Json,
            b"{\"assignments\": [\n  {\"external_id\": }\n]}",
            &q(),
            &Limits::with_max_rows(10),
        )
        .err();
        assert!(
            e.map(|e| e.to_string())
                .unwrap_or_default()
                .starts_with("line 2, column")
        );
    }

    #[test]
    fn ndjson_lines_are_numbered_physically() {
        let body = "{\"external_id\":\"A\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}\n\n{\"external_id\":\"B\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}\n";
        let b = parse(
            Format::Ndjson,
            body.as_bytes(),
            &q(),
            &Limits::with_max_rows(10),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn too_many_rows_is_413() {
        let body = "external_id,role_template,license_tier\nA,Agent,X\nB,Agent,X\n";
        assert!(matches!(
            parse(
                Format::Csv,
                body.as_bytes(),
                &q(),
                &Limits::with_max_rows(1)
            ),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn ndjson_fields_of_another_type_are_missing_and_named_by_line() {
        let body = "{\"external_id\":\"A\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}\n[1,2]\n{\"external_id\":5,\"role_template\":\"Agent\",\"license_tier\":\"X\"}\n";
        let e = parse(
            Format::Ndjson,
            body.as_bytes(),
            &q(),
            &Limits::with_max_rows(10),
        )
        .err();
        let Some(ApiError::BadRequest { errors, .. }) = e else {
            panic!("{e:?}")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "line 2: external_id",
                "line 2: role_template",
                "line 2: license_tier",
                "line 3: external_id"
            ]
        );
        assert_eq!(errors[3].line, Some(3));
    }

    #[test]
    fn an_envelope_without_assignments_or_with_unknown_fields_is_refused() {
        let missing = parse(
            Format::Json,
            br#"{"mode":"merge"}"#,
            &q(),
            &Limits::with_max_rows(10),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(missing.contains("assignments"), "{missing}");
        let unknown = parse(
            Format::Json,
            br#"{"assignments":[],"colour":1}"#,
            &q(),
            &Limits::with_max_rows(10),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(unknown.contains("colour"), "{unknown}");
        let trailing = parse(
            Format::Json,
            br#"{"assignments":[]} x"#,
            &q(),
            &Limits::with_max_rows(10),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(trailing.starts_with("line 1, column"), "{trailing}");
    }

    #[test]
    fn field_problems_stop_after_a_hundred() {
        let mut body = String::from("{\"assignments\":[");
        for _ in 0..500 {
            body.push_str("{\"external_id\":\"A\"},");
        }
        body.push_str("{}]}");
        let e = parse(
            Format::Json,
            body.as_bytes(),
            &q(),
            &Limits::with_max_rows(10_000),
        )
        .err();
        let Some(ApiError::BadRequest { errors, .. }) = e else {
            panic!("{e:?}")
        };
        assert_eq!(errors.len(), 100);
    }

    #[test]
    fn rows_come_in_batches_in_body_order() {
        let mut body = String::from("external_id,role_template,license_tier\n");
        for i in 0..(BATCH_ROWS * 2 + 7) {
            body.push_str(&format!("E{i},Agent,X\n"));
        }
        let mut sizes = Vec::new();
        let mut lines = Vec::new();
        let summary = read_rows(
            Format::Csv,
            body.as_bytes(),
            &q(),
            &Limits::with_max_rows(u64::MAX),
            &mut |b| {
                sizes.push(b.len());
                lines.extend(b.iter().map(|r| r.line));
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sizes, vec![BATCH_ROWS, BATCH_ROWS, 7]);
        assert_eq!(summary.rows, (BATCH_ROWS * 2 + 7) as u64);
        assert!(lines.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(lines[0], 2);
    }
}
