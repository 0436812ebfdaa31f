//! Reads a submitted batch (SPEC §3): JSON, NDJSON or CSV, chosen by `Content-Type`.
//!
//! Two kinds of problems, kept apart on purpose:
//! - the body's *shape* is wrong (invalid UTF-8, broken JSON, a missing header or field):
//!   the whole batch is refused with a 400 naming the line and column, and nothing is stored;
//! - one *row* is wrong (unknown role, a CSV row with too few fields): that row is stored as
//!   rejected with its reason, and the rest of the batch goes on.

mod csv_body;
mod json_body;

use crate::domain::{Assignment, Mode};
use crate::error::{ApiError, FieldError};

/// A parsed batch, before any policy check.
#[derive(Debug, Clone)]
pub struct Batch {
    pub mode: Mode,
    pub dry_run: bool,
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

/// Options given as query parameters (NDJSON and CSV carry no envelope).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BatchQuery {
    pub mode: Option<String>,
    pub dry_run: Option<bool>,
}

/// Parses a whole body. `max_rows` bounds the batch.
pub fn parse(
    format: Format,
    body: &[u8],
    query: &BatchQuery,
    max_rows: u64,
) -> Result<Batch, ApiError> {
    let text = utf8(body)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let query_mode = match &query.mode {
        None => None,
        Some(m) => Some(
            Mode::parse(m)
                .ok_or_else(|| ApiError::field("mode", "must be \"merge\" or \"replace\""))?,
        ),
    };
    let batch = match format {
        Format::Json => json_body::parse_envelope(text, query_mode, query.dry_run)?,
        Format::Ndjson => Batch {
            mode: query_mode.unwrap_or_default(),
            dry_run: query.dry_run.unwrap_or(false),
            rows: json_body::parse_ndjson(text)?,
        },
        Format::Csv => Batch {
            mode: query_mode.unwrap_or_default(),
            dry_run: query.dry_run.unwrap_or(false),
            rows: csv_body::parse(text)?,
        },
    };
    if batch.rows.is_empty() {
        return Err(ApiError::bad_request("the batch has no assignments"));
    }
    if batch.rows.len() as u64 > max_rows {
        return Err(ApiError::PayloadTooLarge(format!(
            "the batch has {} rows; at most {max_rows} are accepted in one job",
            batch.rows.len()
        )));
    }
    Ok(batch)
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
        let b = parse(Format::Csv, body.as_bytes(), &q(), 10).unwrap_or_else(|e| panic!("{e}"));
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
        let b = parse(Format::Csv, body.as_bytes(), &q(), 10).unwrap_or_else(|e| panic!("{e}"));
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
            10,
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
            10,
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
        let e = parse(Format::Json, body.as_bytes(), &q(), 10)
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
            10,
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
        let b = parse(Format::Ndjson, body.as_bytes(), &q(), 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn too_many_rows_is_413() {
        let body = "external_id,role_template,license_tier\nA,Agent,X\nB,Agent,X\n";
        assert!(matches!(
            parse(Format::Csv, body.as_bytes(), &q(), 1),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }
}
