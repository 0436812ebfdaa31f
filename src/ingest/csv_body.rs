//! CSV with a header (`external_id,role_template,license_tier` in any order; extra columns are
//! ignored), quoted fields, CRLF line ends; the BOM is stripped before.

use super::shape_error;
use crate::domain::Assignment;
use crate::error::ApiError;

pub(super) fn parse(text: &str) -> Result<Vec<Assignment>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| shape_error(1, None, format!("unreadable header: {e}")))?
        .clone();
    let find = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(ext), Some(role), Some(tier)) = (
        find("external_id"),
        find("role_template"),
        find("license_tier"),
    ) else {
        let missing: Vec<&str> = ["external_id", "role_template", "license_tier"]
            .into_iter()
            .filter(|n| find(n).is_none())
            .collect();
        return Err(shape_error(
            1,
            None,
            format!("the header lacks the column(s) {}", missing.join(", ")),
        ));
    };
    let width = headers.len();
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut seen_byte = 0usize;
    let mut line_no = 1u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(shape_error(line, None, format!("unreadable CSV: {e}")));
            }
        }
        // Line numbers from byte offsets: counted incrementally, so the whole body is scanned once.
        let mut byte = record
            .position()
            .map_or(seen_byte, |p| p.byte() as usize)
            .min(text.len());
        // With CRLF the reader places a record at the `\n` left over from the previous line end.
        while matches!(text.as_bytes().get(byte), Some(b'\r' | b'\n')) {
            byte += 1;
        }
        line_no += bytecount_newlines(&text.as_bytes()[seen_byte.min(byte)..byte]);
        seen_byte = byte;
        let line = line_no;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or("").trim().to_owned();
        let defect = (record.len() != width).then(|| {
            format!(
                "the row has {} fields; the header has {width}",
                record.len()
            )
        });
        rows.push(Assignment {
            line,
            external_id: field(ext),
            role_template: field(role),
            license_tier: field(tier),
            defect,
        });
    }
    Ok(rows)
}

fn bytecount_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}
