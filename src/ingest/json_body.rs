//! JSON envelope and NDJSON rows.

use super::{Batch, shape_error};
use crate::domain::{Assignment, Mode};
use crate::error::{ApiError, FieldError};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
    assignments: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RowFields {
    external_id: Option<String>,
    role_template: Option<String>,
    license_tier: Option<String>,
}

pub(super) fn parse_envelope(
    text: &str,
    query_mode: Option<Mode>,
    query_dry_run: Option<bool>,
) -> Result<Batch, ApiError> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    let mode = match env.mode.as_deref() {
        None => query_mode.unwrap_or_default(),
        Some(m) => Mode::parse(m)
            .ok_or_else(|| ApiError::field("mode", "must be \"merge\" or \"replace\""))?,
    };
    let mut errors = Vec::new();
    let mut rows = Vec::with_capacity(env.assignments.len());
    for (i, v) in env.assignments.into_iter().enumerate() {
        match row(v, (i + 1) as u64) {
            Ok(a) => rows.push(a),
            Err(missing) => errors.extend(missing.into_iter().map(|f| FieldError {
                field: format!("assignments[{i}].{f}"),
                message: "required string field is missing".into(),
                line: None,
                column: None,
            })),
        }
        if errors.len() >= 100 {
            break;
        }
    }
    if !errors.is_empty() {
        return Err(refuse(errors));
    }
    Ok(Batch {
        mode,
        dry_run: env.dry_run.or(query_dry_run).unwrap_or(false),
        rows,
    })
}

pub(super) fn parse_ndjson(text: &str) -> Result<Vec<Assignment>, ApiError> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = (i + 1) as u64;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| shape_error(n, Some(e.column() as u64), format!("invalid JSON: {e}")))?;
        match row(v, n) {
            Ok(a) => rows.push(a),
            Err(missing) => errors.extend(missing.into_iter().map(|f| FieldError {
                field: format!("line {n}: {f}"),
                message: "required string field is missing".into(),
                line: Some(n),
                column: None,
            })),
        }
        if errors.len() >= 100 {
            break;
        }
    }
    if !errors.is_empty() {
        return Err(refuse(errors));
    }
    Ok(rows)
}

/// A row, or the names of its missing or non-string fields.
fn row(v: serde_json::Value, line: u64) -> Result<Assignment, Vec<&'static str>> {
    let fields: RowFields = match serde_json::from_value(v) {
        Ok(f) => f,
        Err(_) => return Err(vec!["external_id", "role_template", "license_tier"]),
    };
    match (
        fields.external_id,
        fields.role_template,
        fields.license_tier,
    ) {
        (Some(e), Some(r), Some(t)) => Ok(Assignment {
            line,
            external_id: e.trim().to_owned(),
            role_template: r.trim().to_owned(),
            license_tier: t.trim().to_owned(),
            defect: None,
        }),
        (e, r, t) => {
            let mut missing = Vec::new();
            if e.is_none() {
                missing.push("external_id");
            }
            if r.is_none() {
                missing.push("role_template");
            }
            if t.is_none() {
                missing.push("license_tier");
            }
            Err(missing)
        }
    }
}

fn refuse(errors: Vec<FieldError>) -> ApiError {
    let detail = format!(
        "{} row(s) lack required fields, first: {}; nothing was stored",
        errors.len(),
        errors.first().map(|e| e.field.as_str()).unwrap_or("")
    );
    ApiError::BadRequest { detail, errors }
}

fn json_error(e: &serde_json::Error) -> ApiError {
    shape_error(
        e.line() as u64,
        Some(e.column() as u64),
        format!("invalid JSON: {e}"),
    )
}
