//! JSON envelope and NDJSON rows, read as streams: the `assignments` array is visited element
//! by element (never built as one value), NDJSON one line at a time.

use super::{BodyOptions, RowSink, shape_error};
use crate::domain::{Assignment, Mode};
use crate::error::{ApiError, FieldError};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::BufRead;

/// One row as sent: each field a string, or absent, or of another type (reported as missing).
#[derive(Deserialize)]
struct RowFields {
    #[serde(default)]
    external_id: Loose,
    #[serde(default)]
    role_template: Loose,
    #[serde(default)]
    license_tier: Loose,
}

/// A string, or anything else (skipped without building it).
#[derive(Default)]
struct Loose(Option<String>);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
                Ok(Loose(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
                Loose::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Loose, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Loose, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
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
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Element, A::Error> {
                RowFields::deserialize(de::value::MapAccessDeserializer::new(a)).map(Element::Row)
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

/// The row, or the names of its missing or non-string fields.
fn row(e: Element, line: u64) -> Result<Assignment, Vec<&'static str>> {
    let Element::Row(fields) = e else {
        return Err(vec!["external_id", "role_template", "license_tier"]);
    };
    match (
        fields.external_id.0,
        fields.role_template.0,
        fields.license_tier.0,
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

/// Takes an element: a row goes to the sink, missing fields become field errors named by
/// `name(field)`. Err stops the read.
fn take(
    sink: &mut RowSink<'_>,
    e: Element,
    line: u64,
    ndjson_line: Option<u64>,
    name: impl Fn(&str) -> String,
) -> Result<bool, ApiError> {
    match row(e, line) {
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

/// The envelope `{"mode", "dry_run", "assignments": [...]}`, or a bare array of assignments
/// (which states no options). Returns the options the body states; how they meet the query's
/// is decided once, in `super::settle_options`.
pub(super) fn read_envelope<R: BufRead>(
    input: R,
    sink: &mut RowSink<'_>,
) -> Result<BodyOptions, ApiError> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let seed = EnvelopeSeed { sink };
    let parsed = seed.deserialize(&mut de).and_then(|env| {
        de.end()?;
        Ok(env)
    });
    let (mode, dry_run, had_assignments) = match parsed {
        Ok(v) => v,
        Err(e) => {
            if let Some(stop) = sink.failed.take() {
                return Err(stop);
            }
            if sink.has_errors() && e.to_string().starts_with(STOP) {
                // Enough field problems to refuse the body: `finish` reports them.
                return Ok(BodyOptions::default());
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
    Ok(BodyOptions { mode, dry_run })
}

/// Marks an early stop of the envelope's visit (not a JSON error).
const STOP: &str = "rolesync: stop reading";

struct EnvelopeSeed<'s, 'a> {
    sink: &'s mut RowSink<'a>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_, '_> {
    type Value = (Option<String>, Option<bool>, bool);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_, '_> {
    type Value = (Option<String>, Option<bool>, bool);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with \"assignments\", or an array of assignments")
    }

    /// A bare array: the rows, no options (they come from the query).
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        AssignmentsSeed {
            sink: self.sink,
            path: "",
        }
        .visit_seq(seq)?;
        Ok((None, None, true))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut mode = None;
        let mut dry_run = None;
        let mut had_assignments = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "mode" => mode = map.next_value::<Option<String>>()?,
                "dry_run" => dry_run = map.next_value::<Option<bool>>()?,
                "assignments" => {
                    had_assignments = true;
                    map.next_value_seed(AssignmentsSeed {
                        sink: &mut *self.sink,
                        path: "assignments",
                    })?;
                }
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["mode", "dry_run", "assignments"],
                    ));
                }
            }
        }
        Ok((mode, dry_run, had_assignments))
    }
}

struct AssignmentsSeed<'s, 'a> {
    sink: &'s mut RowSink<'a>,
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
        while let Some(e) = seq.next_element::<Element>()? {
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

/// One assignment object per line; blank lines are skipped; lines are numbered physically.
pub(super) fn read_ndjson<R: BufRead>(
    mut input: R,
    sink: &mut RowSink<'_>,
) -> Result<(), ApiError> {
    let mut buf = Vec::with_capacity(256);
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let e: Element = serde_json::from_slice(&buf)
            .map_err(|e| shape_error(n, Some(e.column() as u64), format!("invalid JSON: {e}")))?;
        let line = n;
        if !take(sink, e, n, Some(n), |f| format!("line {line}: {f}"))? {
            return Ok(());
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
