//! The one rule for CSV cells that a spreadsheet would run as a formula. rolesync writes CSV
//! (a job's rows, `GET /v1/jobs/{id}/items` with `Accept: text/csv`) that HR opens in a
//! spreadsheet, fixes and sends back: a cell starting with `=`, `+`, `-`, `@`, a tab or a
//! carriage return is written with a `'` in front (OWASP's advice against CSV injection), and
//! the CSV reader of batches takes that `'` off again, so a downloaded file resubmitted as it is
//! carries the values it was given.
//!
//! Round trip: a value that already starts with `'`s before such a character gets one more `'`
//! on the way out and loses one on the way in, so `restore(neutralise(v)) == v` for every `v`.
//! The price: a hand-written batch whose cell is `'=x` is read as `=x`.

use std::borrow::Cow;

/// The first characters a spreadsheet reads as the start of a formula.
const TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether `cell` is some `'`s (or none) followed by a trigger character.
fn guarded(cell: &str) -> bool {
    cell.trim_start_matches('\'').starts_with(TRIGGERS)
}

/// The cell as written: inert in a spreadsheet.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if guarded(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The value a written cell stands for (the inverse of `neutralise`).
pub fn restore(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if guarded(rest) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_quoted_and_nothing_else() {
        for (value, written) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'=x", "''=x"),
            ("EMP-1", "EMP-1"),
            ("'quoted", "'quoted"),
            ("", ""),
        ] {
            assert_eq!(neutralise(value), written, "{value:?}");
            assert_eq!(restore(written), value, "{written:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_value_survives_the_round_trip(v in "['=+@\t\r -]{0,3}[a-zA-Z0-9 ,\"']{0,8}") {
            let written = neutralise(&v);
            proptest::prop_assert_eq!(restore(&written), v.as_str());
            let first = written.chars().next();
            proptest::prop_assert!(first.is_none_or(|c| !TRIGGERS.contains(&c)));
        }
    }
}
