//! The SCIM user as Genesys models it (`ScimV2User`, README, Users) and its JSON form.
//!
//! Core attributes the emulator reasons about are typed (`userName`, `externalId`,
//! `displayName`, `active`, `roles`); the others Genesys has (`title`, `emails`, `phoneNumbers`,
//! `password`, the enterprise and Genesys extensions) are kept as JSON and echoed back. Unknown
//! attributes (e.g. `name`, which Genesys does not model) are ignored.

use std::collections::BTreeSet;

use std::io::Write as _;

use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::roles::{Catalog, EMPLOYEE};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GENESYS_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:genesys:purecloud:2.0:User";
pub const EXTENSIONS: [&str; 2] = [ENTERPRISE_SCHEMA, GENESYS_SCHEMA];

/// Multi-valued attributes among them.
pub const MULTI_VALUED: [&str; 3] = ["emails", "phoneNumbers", "roles"];

/// The content of a user: what a write may change. Two equal `UserData` mean a no-op write.
#[derive(Debug, Clone, PartialEq)]
pub struct UserData {
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub active: bool,
    /// Role names; always contains `Employee`.
    pub roles: BTreeSet<String>,
    /// `title`, `emails`, `phoneNumbers`, `password` and the extension objects.
    pub attrs: Map<String, Value>,
}

/// A stored user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: std::sync::Arc<str>,
    pub seq: u64,
    pub data: UserData,
    pub version: u64,
    pub created: String,
    pub last_modified: String,
    pub deleted: bool,
}

/// The canonical spelling of a core attribute name (SCIM names are case-insensitive).
pub fn canonical_core(name: &str) -> Option<&'static str> {
    const CORE: [&str; 13] = [
        "id",
        "externalId",
        "userName",
        "displayName",
        "active",
        "title",
        "emails",
        "phoneNumbers",
        "roles",
        "password",
        "groups",
        "meta",
        "schemas",
    ];
    CORE.iter().copied().find(|c| c.eq_ignore_ascii_case(name))
}

/// The canonical spelling of an extension schema URN.
pub fn canonical_extension(name: &str) -> Option<&'static str> {
    EXTENSIONS
        .iter()
        .copied()
        .find(|c| c.eq_ignore_ascii_case(name))
}

fn opt_string(name: &str, v: &Value) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(ApiError::invalid_value(format!("{name} must be a string"))),
    }
}

/// `true`/`false`, also as the strings Entra ID sends (`"True"`, `"False"`).
pub fn parse_bool(name: &str, v: &Value) -> Result<bool, ApiError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ApiError::invalid_value(format!("{name} must be a boolean"))),
    }
}

/// Role names from a SCIM `roles` value: `[{"value": "<name>"}, …]`. Other sub-attributes are
/// tolerated and ignored, as Genesys does. Every name must be in the catalog; `Employee` is
/// always added.
pub fn parse_roles(v: &Value, catalog: &Catalog) -> Result<BTreeSet<String>, ApiError> {
    let mut roles = BTreeSet::new();
    roles.insert(EMPLOYEE.to_string());
    let items: &[Value] = match v {
        Value::Null => &[],
        Value::Array(items) => items,
        Value::Object(_) => std::slice::from_ref(v),
        _ => {
            return Err(ApiError::invalid_value(
                "roles must be a list of {\"value\": <role name>}",
            ));
        }
    };
    for item in items {
        let name = match item {
            Value::Object(obj) => obj
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .and_then(|(_, v)| v.as_str()),
            _ => None,
        };
        let Some(name) = name else {
            return Err(ApiError::invalid_value(
                "roles must be a list of {\"value\": <role name>}",
            ));
        };
        if !catalog.contains(name) {
            return Err(ApiError::invalid_value(format!(
                "The role '{name}' does not exist in this organization."
            )));
        }
        roles.insert(name.to_string());
    }
    Ok(roles)
}

fn check_multi(name: &str, v: &Value) -> Result<Option<Value>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Array(items) => {
            if items.iter().all(Value::is_object) {
                Ok(Some(v.clone()))
            } else {
                Err(ApiError::invalid_value(format!(
                    "{name} must be a list of objects"
                )))
            }
        }
        Value::Object(_) => Ok(Some(Value::Array(vec![v.clone()]))),
        _ => Err(ApiError::invalid_value(format!(
            "{name} must be a list of objects"
        ))),
    }
}

/// Builds a user's content from a SCIM JSON object (POST/PUT body, or a PATCHed document).
/// Attributes absent from `doc` are unassigned: this is PUT's "replace the whole user".
pub fn from_json(doc: &Map<String, Value>, catalog: &Catalog) -> Result<UserData, ApiError> {
    let mut data = UserData {
        user_name: String::new(),
        external_id: None,
        display_name: None,
        active: true,
        roles: BTreeSet::from([EMPLOYEE.to_string()]),
        attrs: Map::new(),
    };
    let mut user_name = None;
    for (key, value) in doc {
        if let Some(core) = canonical_core(key) {
            match core {
                "userName" => user_name = opt_string("userName", value)?,
                "externalId" => data.external_id = opt_string("externalId", value)?,
                "displayName" => data.display_name = opt_string("displayName", value)?,
                "active" if !value.is_null() => data.active = parse_bool("active", value)?,
                "roles" => data.roles = parse_roles(value, catalog)?,
                "title" | "password" => {
                    if let Some(s) = opt_string(core, value)? {
                        data.attrs.insert(core.to_string(), Value::String(s));
                    }
                }
                "emails" | "phoneNumbers" => {
                    if let Some(v) = check_multi(core, value)? {
                        data.attrs.insert(core.to_string(), v);
                    }
                }
                // id, meta, schemas, groups: read-only or server-managed; ignored here.
                _ => {}
            }
        } else if let Some(ext) = canonical_extension(key) {
            match value {
                Value::Null => {}
                Value::Object(obj) if obj.is_empty() => {}
                Value::Object(obj) => {
                    data.attrs
                        .insert(ext.to_string(), Value::Object(obj.clone()));
                }
                _ => {
                    return Err(ApiError::invalid_value(format!("{ext} must be an object")));
                }
            }
        }
    }
    match user_name {
        Some(name) if !name.trim().is_empty() => data.user_name = name,
        _ => return Err(ApiError::invalid_value("userName is required")),
    }
    Ok(data)
}

/// The user as a PATCH document: every writable attribute, no `meta`/`schemas`.
pub fn to_patch_doc(user: &User) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("id".into(), Value::String(user.id.to_string()));
    write_content(&mut doc, &user.data, true);
    doc
}

fn write_content(out: &mut Map<String, Value>, data: &UserData, with_password: bool) {
    if let Some(ext) = &data.external_id {
        out.insert("externalId".into(), Value::String(ext.clone()));
    }
    out.insert("userName".into(), Value::String(data.user_name.clone()));
    if let Some(name) = &data.display_name {
        out.insert("displayName".into(), Value::String(name.clone()));
    }
    out.insert("active".into(), Value::Bool(data.active));
    out.insert(
        "roles".into(),
        Value::Array(data.roles.iter().map(|r| json!({ "value": r })).collect()),
    );
    for (k, v) in &data.attrs {
        if k == "password" && !with_password {
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
}

/// How a user is rendered: where it lives and how its version is spelt.
pub struct Render<'a> {
    /// `http://host/api/v2/scim/v2` (the path family of the request).
    pub base: &'a str,
    pub weak_etag: bool,
}

pub fn etag(version: u64, weak: bool) -> String {
    if weak {
        format!("W/\"{version}\"")
    } else {
        format!("\"{version}\"")
    }
}

/// The full SCIM representation (`password` is never returned).
pub fn to_json(user: &User, render: &Render<'_>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut schemas = vec![Value::String(USER_SCHEMA.into())];
    for ext in EXTENSIONS {
        if user.data.attrs.contains_key(ext) {
            schemas.push(Value::String(ext.into()));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(user.id.to_string()));
    write_content(&mut out, &user.data, false);
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": user.created,
            "lastModified": user.last_modified,
            "location": format!("{}/users/{}", render.base, user.id),
            "version": etag(user.version, render.weak_etag),
        }),
    );
    out
}

/// Appends the JSON-escaped text of `s` (without quotes).
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s);
    out.push(b'"');
}

/// Appends the user's JSON representation to `out`, with `projection` applied. The common case
/// (no projection) is written directly, without building a `serde_json::Map`: it is the hot path
/// of `GET /users?filter=…`.
pub fn write_json(user: &User, render: &Render<'_>, projection: &Projection, out: &mut Vec<u8>) {
    if !projection.is_empty() {
        let _ = serde_json::to_writer(&mut *out, &projection.apply(to_json(user, render)));
        return;
    }
    let d = &user.data;
    out.extend_from_slice(b"{\"schemas\":[");
    push_json_str(out, USER_SCHEMA);
    for ext in EXTENSIONS {
        if d.attrs.contains_key(ext) {
            out.push(b',');
            push_json_str(out, ext);
        }
    }
    out.extend_from_slice(b"],\"id\":");
    push_json_str(out, &user.id);
    if let Some(ext) = &d.external_id {
        out.extend_from_slice(b",\"externalId\":");
        push_json_str(out, ext);
    }
    out.extend_from_slice(b",\"userName\":");
    push_json_str(out, &d.user_name);
    if let Some(name) = &d.display_name {
        out.extend_from_slice(b",\"displayName\":");
        push_json_str(out, name);
    }
    out.extend_from_slice(if d.active {
        b",\"active\":true"
    } else {
        b",\"active\":false"
    });
    for (k, v) in &d.attrs {
        if k == "password" {
            continue;
        }
        out.push(b',');
        push_json_str(out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, v);
    }
    out.extend_from_slice(b",\"roles\":[");
    for (i, role) in d.roles.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"value\":");
        push_json_str(out, role);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"meta\":{\"resourceType\":\"User\",\"created\":");
    push_json_str(out, &user.created);
    out.extend_from_slice(b",\"lastModified\":");
    push_json_str(out, &user.last_modified);
    out.extend_from_slice(b",\"location\":\"");
    push_escaped(out, render.base);
    out.extend_from_slice(b"/users/");
    push_escaped(out, &user.id);
    out.extend_from_slice(if render.weak_etag {
        b"\",\"version\":\"W/\\\""
    } else {
        b"\",\"version\":\"\\\""
    });
    let _ = write!(out, "{}", user.version);
    out.extend_from_slice(b"\\\"\"}}");
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5). Names may be short (`roles`,
/// `meta.version`) or full URNs (`urn:…:core:2.0:User:roles`, `urn:…:enterprise:2.0:User:division`).
/// `id`, `userName`, `active`, `meta` and `schemas` are always returned.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    include: Vec<AttrRef>,
    exclude: Vec<AttrRef>,
}

#[derive(Debug, Clone, PartialEq)]
struct AttrRef {
    /// `None` for the core schema, else the extension URN.
    schema: Option<&'static str>,
    /// Attribute name; `None` for a whole extension.
    attr: Option<String>,
    sub: Option<String>,
}

const ALWAYS: [&str; 5] = ["schemas", "id", "userName", "active", "meta"];

impl Projection {
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Projection {
        let parse_list = |s: Option<&str>| -> Vec<AttrRef> {
            s.map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(parse_attr_ref)
                    .collect()
            })
            .unwrap_or_default()
        };
        Projection {
            include: parse_list(attributes),
            exclude: parse_list(excluded),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    pub fn apply(&self, full: Map<String, Value>) -> Map<String, Value> {
        if self.is_empty() {
            return full;
        }
        if !self.include.is_empty() {
            let mut out = Map::new();
            for (key, value) in full {
                if ALWAYS.contains(&key.as_str()) {
                    out.insert(key, value);
                    continue;
                }
                if let Some(ext) = canonical_extension(&key) {
                    let wanted: Vec<&AttrRef> = self
                        .include
                        .iter()
                        .filter(|r| r.schema == Some(ext))
                        .collect();
                    if wanted.iter().any(|r| r.attr.is_none()) {
                        out.insert(key, value);
                    } else if let Value::Object(obj) = value {
                        let mut kept = Map::new();
                        for (k, v) in obj {
                            let subs: Vec<&AttrRef> = wanted
                                .iter()
                                .copied()
                                .filter(|r| {
                                    r.attr
                                        .as_deref()
                                        .is_some_and(|a| a.eq_ignore_ascii_case(&k))
                                })
                                .collect();
                            if !subs.is_empty() {
                                kept.insert(k, keep_subs(v, &subs));
                            }
                        }
                        if !kept.is_empty() {
                            out.insert(key, Value::Object(kept));
                        }
                    }
                    continue;
                }
                let subs: Vec<&AttrRef> = self
                    .include
                    .iter()
                    .filter(|r| {
                        r.schema.is_none()
                            && r.attr
                                .as_deref()
                                .is_some_and(|a| a.eq_ignore_ascii_case(&key))
                    })
                    .collect();
                if !subs.is_empty() {
                    out.insert(key, keep_subs(value, &subs));
                }
            }
            return out;
        }
        let mut out = full;
        for r in &self.exclude {
            match (r.schema, r.attr.as_deref()) {
                (Some(ext), None) => {
                    out.remove(ext);
                }
                (Some(ext), Some(attr)) => {
                    if let Some(Value::Object(obj)) = out.get_mut(ext) {
                        remove_ci(obj, attr, r.sub.as_deref());
                        if obj.is_empty() {
                            out.remove(ext);
                        }
                    }
                }
                (None, Some(attr)) => {
                    if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(attr)) {
                        continue;
                    }
                    remove_ci(&mut out, attr, r.sub.as_deref());
                }
                (None, None) => {}
            }
        }
        let present: Vec<Value> = EXTENSIONS
            .iter()
            .filter(|e| out.contains_key(**e))
            .map(|e| Value::String((*e).into()))
            .collect();
        if let Some(Value::Array(schemas)) = out.get_mut("schemas") {
            schemas.retain(|s| s.as_str() == Some(USER_SCHEMA) || present.contains(s));
        }
        out
    }
}

fn keep_subs(value: Value, refs: &[&AttrRef]) -> Value {
    if refs.iter().any(|r| r.sub.is_none()) {
        return value;
    }
    let keep = |obj: Map<String, Value>| -> Map<String, Value> {
        obj.into_iter()
            .filter(|(k, _)| {
                refs.iter()
                    .any(|r| r.sub.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(k)))
            })
            .collect()
    };
    match value {
        Value::Object(obj) => Value::Object(keep(obj)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| match i {
                    Value::Object(obj) => Value::Object(keep(obj)),
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

fn remove_ci(obj: &mut Map<String, Value>, attr: &str, sub: Option<&str>) {
    let Some(key) = obj.keys().find(|k| k.eq_ignore_ascii_case(attr)).cloned() else {
        return;
    };
    match sub {
        None => {
            obj.remove(&key);
        }
        Some(sub) => {
            if key == "meta" {
                return; // meta is always returned whole
            }
            let strip = |o: &mut Map<String, Value>| {
                if let Some(k) = o.keys().find(|k| k.eq_ignore_ascii_case(sub)).cloned() {
                    o.remove(&k);
                }
            };
            match obj.get_mut(&key) {
                Some(Value::Object(o)) => strip(o),
                Some(Value::Array(items)) => items.iter_mut().for_each(|i| {
                    if let Value::Object(o) = i {
                        strip(o)
                    }
                }),
                _ => {}
            }
        }
    }
}

fn parse_attr_ref(s: &str) -> AttrRef {
    let lower = s.to_ascii_lowercase();
    if let Some(ext) = EXTENSIONS
        .iter()
        .copied()
        .find(|e| lower == e.to_ascii_lowercase())
    {
        return AttrRef {
            schema: Some(ext),
            attr: None,
            sub: None,
        };
    }
    let (schema, rest) = if let Some(ext) = EXTENSIONS
        .iter()
        .copied()
        .find(|e| lower.starts_with(&format!("{}:", e.to_ascii_lowercase())))
    {
        (Some(ext), &s[ext.len() + 1..])
    } else if lower.starts_with(&format!("{}:", USER_SCHEMA.to_ascii_lowercase())) {
        (None, &s[USER_SCHEMA.len() + 1..])
    } else {
        (None, s)
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((a, b)) => (a.to_string(), Some(b.to_string())),
        None => (rest.to_string(), None),
    };
    AttrRef {
        schema,
        attr: Some(attr),
        sub,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        let mut attrs = Map::new();
        attrs.insert("title".into(), json!("Tab\there \"quoted\" \u{1} ünïcode"));
        attrs.insert("password".into(), json!("secret"));
        attrs.insert(ENTERPRISE_SCHEMA.into(), json!({"department": "R&D\\Ops"}));
        User {
            id: std::sync::Arc::from("0000-\"id\""),
            seq: 1,
            data: UserData {
                user_name: "a\u{7f}b@example.com".into(),
                external_id: Some("x\" or userName pr \"".into()),
                display_name: Some("Line\nbreak".into()),
                active: false,
                roles: BTreeSet::from(["Employee".to_string(), "Wrap \"Up\"".to_string()]),
                attrs,
            },
            version: 42,
            created: "2026-01-01T00:00:00Z".into(),
            last_modified: "2026-01-02T00:00:00Z".into(),
            deleted: false,
        }
    }

    #[test]
    fn the_direct_writer_matches_the_json_model() {
        for weak_etag in [false, true] {
            let render = Render {
                base: "http://h\"ost/api/v2/scim/v2",
                weak_etag,
            };
            let u = user();
            let mut out = Vec::new();
            write_json(&u, &render, &Projection::default(), &mut out);
            let written: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
            assert_eq!(written, Value::Object(to_json(&u, &render)));
            assert!(written.get("password").is_none());
        }
    }
}
