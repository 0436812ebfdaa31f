//! CSV with a header (`external_id,role_template,license_tier` in any order, and an optional
//! `action` column: `assign`, the default when the column or the cell is empty, or `revoke`;
//! extra columns are ignored, so a job's rows downloaded as CSV can be sent back as they are), quoted fields (with
//! commas and line breaks inside), CRLF line ends; the BOM is skipped before. Cells guarded
//! against formulas (`csv_cell`) are read as the values they stand for. Read as a stream: one
//! record at a time.

use super::{RowSink, csv_cell, shape_error};
use crate::domain::{Action, Assignment};
use crate::error::ApiError;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::rc::Rc;

/// Bytes the CSV reader reads ahead of the record it is on (its buffer).
const READ_AHEAD: u64 = 64 * 1024;

/// Reads the records. `ingest.max_record_bytes` (one row, quoted line breaks included) bounds
/// what the reader holds for one record, and the line marks with it: a body of one quoted field
/// of 300 MB of newlines is refused at that size with a 400 naming its line, not buffered. A
/// record of more than `ingest.max_fields` fields is that row's rejection.
pub(super) fn read<R: BufRead>(input: R, sink: &mut RowSink<'_>) -> Result<(), ApiError> {
    let max_record = sink.limits.max_record_bytes;
    let max_fields = sink.limits.max_fields;
    let marks = Rc::new(RefCell::new(LineMarks::default()));
    let tracked = Tracked {
        inner: input,
        offset: 0,
        max_record,
        marks: marks.clone(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(READ_AHEAD as usize)
        .from_reader(tracked);
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
    let action_column = find("action");
    let effective_column = find("effective_at");
    // The first record starts where the header ended: the record bound counts from there.
    marks.borrow_mut().record_start = reader.position().byte();
    let width = headers.len();
    if width > max_fields {
        return Err(shape_error(
            1,
            None,
            format!("the header has {width} columns; at most ingest.max_fields ({max_fields})"),
        ));
    }
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                if let Some(line) = marks.borrow().too_large_at {
                    return Err(shape_error(
                        line,
                        None,
                        format!(
                            "a record is larger than ingest.max_record_bytes ({max_record} bytes)"
                        ),
                    ));
                }
                let line = e.position().map_or(0, |p| p.line());
                return Err(shape_error(line, None, format!("unreadable CSV: {e}")));
            }
        }
        // The next record starts where this one ended: the bound counts from there.
        marks.borrow_mut().record_start = reader.position().byte();
        let start = record.position().map_or(0, |p| p.byte());
        let line = marks.borrow_mut().line_of(start);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        // A cell rolesync wrote with a guard against formulas reads as the value it stands for.
        let field = |i: usize| csv_cell::restore(record.get(i).unwrap_or("").trim()).to_owned();
        let mut defect = (record.len() != width).then(|| {
            format!(
                "the row has {} fields; the header has {width}",
                record.len()
            )
        });
        let action = match action_column.map(field) {
            Some(word) => super::parse_action(&word).unwrap_or_else(|why| {
                defect.get_or_insert(why);
                Action::Assign
            }),
            None => Action::Assign,
        };
        let effective_at_ms = match effective_column.map(field) {
            Some(word) => super::parse_effective_at(&word).unwrap_or_else(|why| {
                defect.get_or_insert(why);
                None
            }),
            None => None,
        };
        sink.push(Assignment {
            effective_at_ms,
            line,
            external_id: field(ext),
            role_template: field(role),
            license_tier: field(tier),
            action,
            defect,
        })?;
    }
    Ok(())
}

/// The line ends seen by the reader, so a record's line can be told from its byte offset
/// without keeping the body. Records come in order, so marks before the current record are
/// dropped: the queue holds about one read buffer of marks.
#[derive(Default)]
struct LineMarks {
    /// Offsets of `\r` and `\n` bytes not yet passed, with the byte.
    ahead: VecDeque<(u64, u8)>,
    /// `\n` bytes before the last record start.
    newlines: u64,
    /// Where the record being read starts (the end of the last one returned).
    record_start: u64,
    /// Set when a record outgrew `ingest.max_record_bytes`: the line it starts on.
    too_large_at: Option<u64>,
}

impl LineMarks {
    /// The 1-based line of a record starting at byte `start`. The CSV reader may place a
    /// record on the line end left over from the previous record (the `\n` of a CRLF) or on
    /// blank lines before it: those belong before the record.
    fn line_of(&mut self, start: u64) -> u64 {
        while let Some(&(at, b)) = self.ahead.front() {
            if at < start {
                self.newlines += u64::from(b == b'\n');
                self.ahead.pop_front();
            } else {
                break;
            }
        }
        let mut next = start;
        while let Some(&(at, b)) = self.ahead.front() {
            if at != next {
                break;
            }
            self.newlines += u64::from(b == b'\n');
            self.ahead.pop_front();
            next += 1;
        }
        self.newlines + 1
    }
}

/// Passes bytes through, noting where the line ends are.
struct Tracked<R> {
    inner: R,
    offset: u64,
    max_record: u64,
    marks: Rc<RefCell<LineMarks>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut marks = self.marks.borrow_mut();
        // Invariant: the reader never holds more than one record plus its read-ahead.
        if (self.offset + n as u64).saturating_sub(marks.record_start)
            > self.max_record + READ_AHEAD
        {
            let start = marks.record_start;
            let line = marks.line_of(start);
            marks.too_large_at = Some(line);
            return Err(std::io::Error::other("record too large"));
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                marks.ahead.push_back((self.offset + i as u64, b));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}
