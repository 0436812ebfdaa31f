//! JSON envelope and NDJSON rows, read as streams: the `assignments` array is visited element
//! by element (never built as one value), NDJSON one line at a time.

use super::{BodyOptions, RowSink, shape_error};
use crate::domain::{Action, Assignment, Mode, Roster};
use crate::error::{ApiError, FieldError};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, Read};
use std::rc::Rc;

/// One row as sent: each field a string, or absent, or of another type (reported as missing),
/// and how many keys the object had (`ingest.max_fields`).
#[derive(Default)]
struct RowFields {
    external_id: Loose,
    role_template: Loose,
    license_tier: Loose,
    action: Loose,
    effective_at: Loose,
    keys: usize,
}

/// A key of a row object; the others are skipped without being kept.
enum Key {
    ExternalId,
    RoleTemplate,
    LicenseTier,
    Action,
    EffectiveAt,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "external_id" => Key::ExternalId,
                    "role_template" => Key::RoleTemplate,
                    "license_tier" => Key::LicenseTier,
                    "action" => Key::Action,
                    "effective_at" => Key::EffectiveAt,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A string, or anything else (skipped without building it); `seen` once its key was read.
#[derive(Default)]
struct Loose {
    value: Option<String>,
    seen: bool,
}

impl Loose {
    fn of(value: Option<String>) -> Loose {
        Loose { value, seen: false }
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose::of(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
                Ok(Loose::of(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose, E> {
                Ok(Loose::of(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose, E> {
                Ok(Loose::of(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose, E> {
                Ok(Loose::of(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose, E> {
                Ok(Loose::of(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose::of(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose::of(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
                Loose::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Loose, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::of(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Loose, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::of(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An element of `assignments` or an NDJSON line: a row object, or anything else (every field
/// missing).
enum Element {
    Row(RowFields),
    NotAnObject,
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Element, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an assignment object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Element, A::Error> {
                let mut f = RowFields::default();
                while let Some(key) = a.next_key::<Key>()? {
                    f.keys += 1;
                    let slot = match key {
                        Key::ExternalId => &mut f.external_id,
                        Key::RoleTemplate => &mut f.role_template,
                        Key::LicenseTier => &mut f.license_tier,
                        Key::Action => &mut f.action,
                        Key::EffectiveAt => &mut f.effective_at,
                        Key::Other => {
                            a.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.seen {
                        return Err(de::Error::custom("a field appears twice in one object"));
                    }
                    *slot = a.next_value()?;
                    slot.seen = true;
                }
                Ok(Element::Row(f))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Element, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element::NotAnObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Element, E> {
                Ok(Element::NotAnObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element, E> {
                Ok(Element::NotAnObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
                Ok(Element::NotAnObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element, E> {
                Ok(Element::NotAnObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
                Ok(Element::NotAnObject)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element, E> {
                Ok(Element::NotAnObject)
            }
        }
        d.deserialize_any(V)
    }
}

/// The row, or the names of its missing or non-string fields. `action` is optional (`assign`
/// when absent or null); a `revoke` row needs only `external_id` (a leaver has no role nor
/// tier), so its `role_template` and `license_tier` may be absent. An `action` of another word
/// or type is the row's rejection (`malformed_row`), not the body's.
fn row(e: Element, line: u64, max_fields: usize) -> Result<Assignment, Vec<&'static str>> {
    let Element::Row(fields) = e else {
        return Err(vec!["external_id", "role_template", "license_tier"]);
    };
    let keys = fields.keys;
    let mut defect = (keys > max_fields)
        .then(|| format!("the object has {keys} keys; at most ingest.max_fields ({max_fields})"));
    let action = match (&fields.action.value, fields.action.seen) {
        (Some(word), _) => super::parse_action(word).unwrap_or_else(|why| {
            defect.get_or_insert(why);
            Action::Assign
        }),
        (None, false) => Action::Assign,
        (None, true) => {
            defect.get_or_insert_with(|| "action is not a string".to_owned());
            Action::Assign
        }
    };
    let effective_at_ms = match (&fields.effective_at.value, fields.effective_at.seen) {
        (Some(word), _) => super::parse_effective_at(word).unwrap_or_else(|why| {
            defect.get_or_insert(why);
            None
        }),
        (None, false) => None,
        (None, true) => {
            defect.get_or_insert_with(|| "effective_at is not a string".to_owned());
            None
        }
    };
    let revoke = action == Action::Revoke;
    let or_empty = |v: Option<String>| if revoke { v.or(Some(String::new())) } else { v };
    match (
        fields.external_id.value,
        or_empty(fields.role_template.value),
        or_empty(fields.license_tier.value),
    ) {
        (Some(e), Some(r), Some(t)) => Ok(Assignment {
            effective_at_ms,
            line,
            external_id: e.trim().to_owned(),
            role_template: r.trim().to_owned(),
            license_tier: t.trim().to_owned(),
            action,
            defect,
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

/// Takes an element: a row goes to the sink, missing fields become field errors named by
/// `name(field)`. Err stops the read.
fn take(
    sink: &mut RowSink<'_>,
    e: Element,
    line: u64,
    ndjson_line: Option<u64>,
    name: impl Fn(&str) -> String,
) -> Result<bool, ApiError> {
    match row(e, line, sink.limits.max_fields) {
        Ok(a) => sink.push(a).map(|_| true),
        Err(missing) => {
            let mut more = true;
            for f in missing {
                more = sink.field_error(FieldError {
                    field: name(f),
                    message: "required string field is missing".into(),
                    line: ndjson_line,
                    column: None,
                });
            }
            Ok(more)
        }
    }
}

/// The envelope `{"mode", "dry_run", "roster", "assignments": [...]}`, or a bare array of assignments
/// (which states no options). Returns the options the body states; how they meet the query's
/// is decided once, in `super::settle_options`.
///
/// `ingest.max_record_bytes` bounds each element of `assignments` (and what comes before the
/// array or after an element): the reader is metered, so a string of any length is refused
/// with a 400 naming its line once it passes the bound, never built whole.
pub(super) fn read_envelope<R: BufRead>(
    input: R,
    sink: &mut RowSink<'_>,
) -> Result<BodyOptions, ApiError> {
    let used = Rc::new(Cell::new(0u64));
    let limit = sink.limits.max_record_bytes;
    let metered = Metered {
        inner: input,
        used: used.clone(),
        limit,
    };
    let mut de = serde_json::Deserializer::from_reader(metered);
    let seed = EnvelopeSeed {
        sink,
        used: used.clone(),
    };
    let parsed = seed.deserialize(&mut de).and_then(|env| {
        de.end()?;
        Ok(env)
    });
    let EnvelopeOptions {
        mode,
        dry_run,
        roster,
        had_assignments,
    } = match parsed {
        Ok(v) => v,
        Err(e) => {
            if let Some(stop) = sink.failed.take() {
                return Err(stop);
            }
            if sink.has_errors() && e.to_string().starts_with(STOP) {
                // Enough field problems to refuse the body: `finish` reports them.
                return Ok(BodyOptions::default());
            }
            if e.is_io() && used.get() > limit {
                return Err(shape_error(
                    e.line() as u64,
                    None,
                    format!(
                        "an element of assignments (or the envelope around it) is larger than \
                         ingest.max_record_bytes ({limit} bytes)"
                    ),
                ));
            }
            return Err(json_error(&e));
        }
    };
    if !had_assignments {
        return Err(ApiError::field(
            "assignments",
            "the envelope has no \"assignments\" array",
        ));
    }
    let mode = match mode.as_deref() {
        None => None,
        Some(m) => Some(
            Mode::parse(m)
                .ok_or_else(|| ApiError::field("mode", "must be \"merge\" or \"replace\""))?,
        ),
    };
    let roster = match roster.as_deref() {
        None => None,
        Some(r) => Some(
            Roster::parse(r)
                .ok_or_else(|| ApiError::field("roster", "must be \"partial\" or \"full\""))?,
        ),
    };
    Ok(BodyOptions {
        mode,
        dry_run,
        roster,
    })
}

/// The options an envelope states, as sent (`mode` and `roster` checked by the caller).
#[derive(Default)]
struct EnvelopeOptions {
    mode: Option<String>,
    dry_run: Option<bool>,
    roster: Option<String>,
    had_assignments: bool,
}

/// Marks an early stop of the envelope's visit (not a JSON error).
const STOP: &str = "rolesync: stop reading";

/// Counts the bytes read since the count was last reset (at each element of `assignments`),
/// and fails the read once they pass `limit`.
struct Metered<R> {
    inner: R,
    used: Rc<Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let used = self.used.get() + n as u64;
        self.used.set(used);
        if used > self.limit {
            return Err(std::io::Error::other("record too large"));
        }
        Ok(n)
    }
}

struct EnvelopeSeed<'s, 'a> {
    sink: &'s mut RowSink<'a>,
    used: Rc<Cell<u64>>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_, '_> {
    type Value = EnvelopeOptions;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_, '_> {
    type Value = EnvelopeOptions;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with \"assignments\", or an array of assignments")
    }

    /// A bare array: the rows, no options (they come from the query).
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        AssignmentsSeed {
            sink: self.sink,
            used: self.used,
            path: "",
        }
        .visit_seq(seq)?;
        Ok(EnvelopeOptions {
            had_assignments: true,
            ..EnvelopeOptions::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut o = EnvelopeOptions::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "mode" => o.mode = map.next_value::<Option<String>>()?,
                "dry_run" => o.dry_run = map.next_value::<Option<bool>>()?,
                "roster" => o.roster = map.next_value::<Option<String>>()?,
                "assignments" => {
                    o.had_assignments = true;
                    map.next_value_seed(AssignmentsSeed {
                        sink: &mut *self.sink,
                        used: self.used.clone(),
                        path: "assignments",
                    })?;
                }
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["mode", "dry_run", "roster", "assignments"],
                    ));
                }
            }
        }
        Ok(o)
    }
}

struct AssignmentsSeed<'s, 'a> {
    sink: &'s mut RowSink<'a>,
    used: Rc<Cell<u64>>,
    /// How a field problem names the array: `assignments[3].role_template`, or `[3].…`.
    path: &'static str,
}

impl<'de> DeserializeSeed<'de> for AssignmentsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AssignmentsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of assignments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0u64;
        loop {
            // Each element gets the whole budget.
            self.used.set(0);
            let Some(e) = seq.next_element::<Element>()? else {
                break;
            };
            let index = i;
            let path = self.path;
            match take(self.sink, e, i + 1, None, |f| {
                format!("{path}[{index}].{f}")
            }) {
                Ok(true) => {}
                Ok(false) => return Err(de::Error::custom(STOP)),
                Err(stop) => {
                    self.sink.failed = Some(stop);
                    return Err(de::Error::custom(STOP));
                }
            }
            i += 1;
        }
        Ok(())
    }
}

/// One assignment object per line; blank lines are skipped; lines are numbered physically. A
/// line longer than `ingest.max_record_bytes` is that row's rejection (`malformed_row`): the
/// rest of it is skipped without being kept.
pub(super) fn read_ndjson<R: BufRead>(
    mut input: R,
    sink: &mut RowSink<'_>,
) -> Result<(), ApiError> {
    let limit = sink.limits.max_record_bytes;
    let mut buf = Vec::with_capacity(256);
    let mut n = 0u64;
    loop {
        buf.clear();
        let line = match read_line(&mut input, &mut buf, limit)? {
            Line::End => return Ok(()),
            Line::Whole => {
                n += 1;
                n
            }
            Line::TooLong => {
                n += 1;
                sink.push(Assignment {
                    line: n,
                    external_id: String::new(),
                    role_template: String::new(),
                    license_tier: String::new(),
                    action: Action::Assign,
                    effective_at_ms: None,
                    defect: Some(format!(
                        "the line is longer than ingest.max_record_bytes ({limit} bytes)"
                    )),
                })?;
                continue;
            }
        };
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let e: Element = serde_json::from_slice(&buf).map_err(|e| {
            shape_error(line, Some(e.column() as u64), format!("invalid JSON: {e}"))
        })?;
        if !take(sink, e, line, Some(line), |f| format!("line {line}: {f}"))? {
            return Ok(());
        }
    }
}

/// What `read_line` found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (or the last bytes of the body) is in the buffer.
    Whole,
    /// A line longer than the limit was passed over; the buffer holds its start only.
    TooLong,
    /// No bytes were left.
    End,
}

/// Reads up to the next `\n` into `buf`, keeping at most `limit` bytes of it.
fn read_line<R: BufRead>(input: &mut R, buf: &mut Vec<u8>, limit: u64) -> Result<Line, ApiError> {
    let mut read_any = false;
    let mut too_long = false;
    loop {
        let available = input
            .fill_buf()
            .map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
        if available.is_empty() {
            return Ok(match (read_any, too_long) {
                (false, _) => Line::End,
                (true, false) => Line::Whole,
                (true, true) => Line::TooLong,
            });
        }
        read_any = true;
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            if (buf.len() + take) as u64 > limit {
                too_long = true;
            } else {
                buf.extend_from_slice(&available[..take]);
            }
        }
        input.consume(take);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Whole });
        }
    }
}

fn json_error(e: &serde_json::Error) -> ApiError {
    shape_error(
        e.line() as u64,
        Some(e.column() as u64),
        format!("invalid JSON: {e}"),
    )
}
