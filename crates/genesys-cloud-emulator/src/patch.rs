//! SCIM PATCH (RFC 7644 §3.5.2) applied to a user's JSON document.
//!
//! Body: `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[…]}`
//! (capital O, as Genesys documents it); `op` is `add`, `remove` or `replace`, case-insensitive.
//! Paths: `attr`, `attr.sub`, `attr[filter]`, `attr[filter].sub`, each optionally prefixed with a
//! schema URN (`urn:…:core:2.0:User:roles`, `urn:…:enterprise:2.0:User:department`), or a bare
//! extension URN for the whole extension object. Without a path, `add`/`replace` take an
//! object of attributes.
//!
//! The document is then turned back into a `UserData` by `user::from_json`, which validates it
//! (role names, types) and keeps `Employee` in the roles: removing `Employee` is silently ignored,
//! as the Genesys UI does ("This role cannot be removed").

use serde_json::{Map, Value};

use crate::errors::ApiError;
use crate::filter::{self, Filter};
use crate::user::{MULTI_VALUED, USER_SCHEMA, canonical_core, canonical_extension};

pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The extension URN the attribute lives in (`None` for the core schema).
    pub extension: Option<&'static str>,
    /// `None` when the path is a bare extension URN.
    pub attr: Option<String>,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// Parses a PATCH body.
pub fn parse_request(body: &Value) -> Result<Vec<Operation>, ApiError> {
    let Value::Object(obj) = body else {
        return Err(ApiError::invalid_syntax(
            "The PATCH body must be a JSON object.",
        ));
    };
    if let Some(schemas) = obj.get("schemas") {
        let ok = schemas
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(PATCH_SCHEMA)));
        if !ok {
            return Err(ApiError::invalid_syntax(format!(
                "schemas must contain {PATCH_SCHEMA}"
            )));
        }
    }
    let Some(Value::Array(ops)) = obj.get("Operations") else {
        return Err(ApiError::invalid_syntax(
            "The PATCH body must have an \"Operations\" array.",
        ));
    };
    ops.iter().map(parse_operation).collect()
}

fn parse_operation(v: &Value) -> Result<Operation, ApiError> {
    let Value::Object(obj) = v else {
        return Err(ApiError::invalid_syntax(
            "Each operation must be an object.",
        ));
    };
    let field = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let op = match field("op")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("add") => Op::Add,
        Some("remove") => Op::Remove,
        Some("replace") => Op::Replace,
        Some(other) => {
            return Err(ApiError::invalid_syntax(format!(
                "Unknown PATCH op '{other}'."
            )));
        }
        None => return Err(ApiError::invalid_syntax("Each operation needs an \"op\".")),
    };
    let path = match field("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.trim().is_empty() => None,
        Some(Value::String(p)) => Some(parse_path(p.trim())?),
        Some(_) => return Err(ApiError::invalid_path("path must be a string")),
    };
    let value = field("value").cloned();
    if op == Op::Remove && path.is_none() {
        return Err(ApiError::no_target("A remove operation needs a path."));
    }
    if op != Op::Remove && value.is_none() {
        return Err(ApiError::invalid_value(
            "add and replace operations need a value",
        ));
    }
    Ok(Operation { op, path, value })
}

/// Parses a PATCH path.
pub fn parse_path(path: &str) -> Result<PatchPath, ApiError> {
    let (head, bracket) = match path.find('[') {
        Some(i) => (&path[..i], Some(&path[i..])),
        None => (path, None),
    };
    let lower = head.to_ascii_lowercase();
    // Whole extension.
    if let Some(ext) = canonical_extension(head) {
        if bracket.is_some() {
            return Err(ApiError::invalid_path(format!("Invalid path '{path}'")));
        }
        return Ok(PatchPath {
            extension: Some(ext),
            attr: None,
            filter: None,
            sub: None,
        });
    }
    let (extension, rest) = if lower.starts_with("urn:") {
        let Some((urn, rest)) = head.rsplit_once(':') else {
            return Err(ApiError::invalid_path(format!("Invalid path '{path}'")));
        };
        // `urn:…:User:manager.value` splits at the last ':' before the attribute.
        if urn.eq_ignore_ascii_case(USER_SCHEMA) {
            (None, rest)
        } else if let Some(ext) = canonical_extension(urn) {
            (Some(ext), rest)
        } else {
            return Err(ApiError::invalid_path(format!(
                "Unknown schema in path '{path}'"
            )));
        }
    } else {
        (None, head)
    };
    let (attr, mut sub) = match rest.split_once('.') {
        Some((a, s)) => (a.to_string(), Some(s.to_string())),
        None => (rest.to_string(), None),
    };
    if attr.is_empty()
        || !attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    {
        return Err(ApiError::invalid_path(format!("Invalid path '{path}'")));
    }
    let mut filter_expr = None;
    if let Some(b) = bracket {
        if sub.is_some() {
            return Err(ApiError::invalid_path(format!("Invalid path '{path}'")));
        }
        let Some(close) = find_closing_bracket(b) else {
            return Err(ApiError::invalid_path(format!(
                "Invalid path '{path}': missing ']'"
            )));
        };
        let inner = &b[1..close];
        filter_expr = Some(filter::parse_value_filter(inner).map_err(|e| {
            ApiError::invalid_path(format!("Invalid filter in path '{path}': {e}"))
        })?);
        let after = &b[close + 1..];
        if !after.is_empty() {
            match after.strip_prefix('.') {
                Some(s)
                    if !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') =>
                {
                    sub = Some(s.to_string())
                }
                _ => return Err(ApiError::invalid_path(format!("Invalid path '{path}'"))),
            }
        }
    }
    Ok(PatchPath {
        extension,
        attr: Some(attr),
        filter: filter_expr,
        sub,
    })
}

/// The index of the `]` closing the leading `[`, skipping quoted strings.
fn find_closing_bracket(s: &str) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ']' {
            return Some(i);
        }
    }
    None
}

/// Applies the operations to `doc` in order.
pub fn apply(doc: &mut Map<String, Value>, ops: &[Operation]) -> Result<(), ApiError> {
    for op in ops {
        apply_one(doc, op)?;
    }
    Ok(())
}

fn apply_one(doc: &mut Map<String, Value>, op: &Operation) -> Result<(), ApiError> {
    let value = op.value.clone().unwrap_or(Value::Null);
    let Some(path) = &op.path else {
        // add/replace without a path: an object of attributes.
        let Value::Object(attrs) = value else {
            return Err(ApiError::invalid_value(
                "Without a path, the value must be an object of attributes.",
            ));
        };
        for (key, v) in attrs {
            let sub_path = if let Some(ext) = canonical_extension(&key) {
                PatchPath {
                    extension: Some(ext),
                    attr: None,
                    filter: None,
                    sub: None,
                }
            } else if key.to_ascii_lowercase().starts_with("urn:") {
                parse_path(&key)?
            } else {
                PatchPath {
                    extension: None,
                    attr: Some(key),
                    filter: None,
                    sub: None,
                }
            };
            apply_one(
                doc,
                &Operation {
                    op: op.op,
                    path: Some(sub_path),
                    value: Some(v),
                },
            )?;
        }
        return Ok(());
    };

    // Which object holds the attribute: the document, or an extension object inside it.
    let Some(attr) = &path.attr else {
        let ext = path.extension.unwrap_or(USER_SCHEMA);
        return apply_to_extension(doc, ext, op.op, value);
    };
    if path.extension.is_none() {
        check_writable(attr)?;
    }
    let container: &mut Map<String, Value> = match path.extension {
        None => doc,
        Some(ext) => {
            let entry = doc
                .entry(ext.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            match entry {
                Value::Object(obj) => obj,
                _ => return Err(ApiError::invalid_path("extension is not an object")),
            }
        }
    };
    let key = resolve_key(container, attr, path.extension.is_none());
    let multi = path.extension.is_none() && MULTI_VALUED.contains(&key.as_str());
    apply_to_attr(container, &key, multi, path, op.op, value)?;
    if let Some(ext) = path.extension
        && doc
            .get(ext)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        doc.remove(ext);
    }
    Ok(())
}

fn check_writable(attr: &str) -> Result<(), ApiError> {
    match canonical_core(attr) {
        Some("id") => Err(ApiError::mutability("Attribute 'id' is read-only.")),
        Some("meta") => Err(ApiError::mutability("Attribute 'meta' is read-only.")),
        Some("schemas") => Err(ApiError::mutability("Attribute 'schemas' is read-only.")),
        Some("groups") => Err(ApiError::mutability(
            "Attribute 'groups' may only be updated using the Groups resource endpoint.",
        )),
        _ => Ok(()),
    }
}

/// The key an attribute name designates in `container`: an existing key spelt differently, the
/// canonical core spelling, or the name as given.
fn resolve_key(container: &Map<String, Value>, attr: &str, core: bool) -> String {
    if let Some(k) = container.keys().find(|k| k.eq_ignore_ascii_case(attr)) {
        return k.clone();
    }
    if core && let Some(c) = canonical_core(attr) {
        return c.to_string();
    }
    attr.to_string()
}

fn apply_to_extension(
    doc: &mut Map<String, Value>,
    ext: &str,
    op: Op,
    value: Value,
) -> Result<(), ApiError> {
    match op {
        Op::Remove => {
            doc.remove(ext);
            Ok(())
        }
        Op::Add | Op::Replace => {
            let Value::Object(attrs) = value else {
                if value.is_null() && op == Op::Replace {
                    doc.remove(ext);
                    return Ok(());
                }
                return Err(ApiError::invalid_value(format!("{ext} must be an object")));
            };
            let entry = doc
                .entry(ext.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(obj) = entry {
                for (k, v) in attrs {
                    let key = resolve_key(obj, &k, false);
                    merge_value(obj, &key, v, op == Op::Add);
                }
                if obj.is_empty() {
                    doc.remove(ext);
                }
            }
            Ok(())
        }
    }
}

/// add/replace of one attribute without a filter: multi-valued attributes get the values
/// appended (add) or replaced (replace); complex attributes get their sub-attributes merged;
/// simple ones are set. `null` unassigns.
fn merge_value(container: &mut Map<String, Value>, key: &str, value: Value, add: bool) {
    if value.is_null() {
        if !add {
            container.remove(key);
        }
        return;
    }
    match (container.get_mut(key), value) {
        (Some(Value::Array(existing)), new) if add => {
            let items = match new {
                Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                if !existing.contains(&item) {
                    existing.push(item);
                }
            }
        }
        (Some(Value::Object(existing)), Value::Object(new)) => {
            for (k, v) in new {
                let k2 = resolve_key(existing, &k, false);
                if v.is_null() {
                    existing.remove(&k2);
                } else {
                    existing.insert(k2, v);
                }
            }
        }
        (_, new) => {
            container.insert(key.to_string(), new);
        }
    }
    if matches!(container.get(key), Some(Value::Array(a)) if a.is_empty()) {
        container.remove(key);
    }
}

fn apply_to_attr(
    container: &mut Map<String, Value>,
    key: &str,
    multi: bool,
    path: &PatchPath,
    op: Op,
    value: Value,
) -> Result<(), ApiError> {
    match (&path.filter, &path.sub) {
        (None, None) => match op {
            Op::Add => {
                let value = if multi && !value.is_array() && !value.is_null() {
                    Value::Array(vec![value])
                } else {
                    value
                };
                merge_value(container, key, value, true);
            }
            Op::Replace => {
                let value = if multi && !value.is_array() && !value.is_null() {
                    Value::Array(vec![value])
                } else {
                    value
                };
                merge_value(container, key, value, false);
            }
            Op::Remove => {
                if value.is_null() {
                    container.remove(key);
                } else if let Some(Value::Array(existing)) = container.get_mut(key) {
                    // Entra ID style: remove the listed values from a multi-valued attribute.
                    let doomed = match value {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    existing.retain(|item| !doomed.iter().any(|d| same_element(item, d)));
                    if existing.is_empty() {
                        container.remove(key);
                    }
                } else {
                    container.remove(key);
                }
            }
        },
        (None, Some(sub)) => {
            match container.get_mut(key) {
                Some(Value::Array(items)) => {
                    for item in items.iter_mut() {
                        set_sub(item, sub, op, value.clone());
                    }
                }
                Some(existing @ Value::Object(_)) => set_sub(existing, sub, op, value),
                Some(_) => {
                    return Err(ApiError::invalid_path(format!(
                        "'{key}' has no sub-attributes"
                    )));
                }
                None => {
                    if op != Op::Remove && !value.is_null() {
                        let mut obj = Value::Object(Map::new());
                        set_sub(&mut obj, sub, op, value);
                        container.insert(key.to_string(), obj);
                    }
                }
            }
            drop_if_empty(container, key);
        }
        (Some(f), sub) => {
            let Some(Value::Array(items)) = container.get_mut(key) else {
                return match op {
                    Op::Remove => Ok(()),
                    _ => Err(ApiError::no_target(format!(
                        "No value of '{key}' matches the filter."
                    ))),
                };
            };
            let matched = items.iter().filter(|i| filter::eval_element(f, i)).count();
            if matched == 0 {
                return match op {
                    Op::Remove => Ok(()),
                    _ => Err(ApiError::no_target(format!(
                        "No value of '{key}' matches the filter."
                    ))),
                };
            }
            match (op, sub) {
                (Op::Remove, None) => items.retain(|i| !filter::eval_element(f, i)),
                (Op::Replace, None) => {
                    for item in items.iter_mut().filter(|i| filter::eval_element(f, i)) {
                        *item = value.clone();
                    }
                }
                (Op::Add, None) => {
                    for item in items.iter_mut().filter(|i| filter::eval_element(f, i)) {
                        if let (Value::Object(existing), Value::Object(new)) = (&mut *item, &value)
                        {
                            for (k, v) in new {
                                existing.insert(k.clone(), v.clone());
                            }
                        } else {
                            *item = value.clone();
                        }
                    }
                }
                (_, Some(sub)) => {
                    for item in items.iter_mut().filter(|i| filter::eval_element(f, i)) {
                        set_sub(item, sub, op, value.clone());
                    }
                }
            }
            drop_if_empty(container, key);
        }
    }
    Ok(())
}

fn drop_if_empty(container: &mut Map<String, Value>, key: &str) {
    let empty = match container.get(key) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if empty {
        container.remove(key);
    }
}

fn set_sub(target: &mut Value, sub: &str, op: Op, value: Value) {
    let Value::Object(obj) = target else {
        return;
    };
    let key = resolve_key(obj, sub, false);
    if op == Op::Remove || value.is_null() {
        obj.remove(&key);
    } else {
        obj.insert(key, value);
    }
}

/// Two elements of a multi-valued attribute are the same when equal, or when both have the same
/// `value` sub-attribute (`{"value":"Agent"}` vs `{"value":"Agent","display":"Agent"}`).
fn same_element(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let value_of = |v: &Value| match v {
        Value::Object(o) => o
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("value"))
            .map(|(_, v)| v.clone()),
        other => Some(other.clone()),
    };
    matches!((value_of(a), value_of(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Map<String, Value> {
        match json!({"userName": "a@b.c", "roles": [{"value": "Employee"}, {"value": "Agent"}], "active": true})
        {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn run(d: &mut Map<String, Value>, body: Value) -> Result<(), ApiError> {
        let ops = parse_request(&body)?;
        apply(d, &ops)
    }

    #[test]
    fn remove_with_value_filter() {
        let mut d = doc();
        let r = run(
            &mut d,
            json!({"schemas":[PATCH_SCHEMA],"Operations":[{"op":"Remove","path":"roles[value eq \"Agent\"]"}]}),
        );
        assert!(r.is_ok());
        assert_eq!(d["roles"], json!([{"value": "Employee"}]));
    }

    #[test]
    fn replace_without_path() {
        let mut d = doc();
        let r = run(
            &mut d,
            json!({"Operations":[{"op":"replace","value":{"displayName":"X","active":false}}]}),
        );
        assert!(r.is_ok());
        assert_eq!(d["displayName"], json!("X"));
        assert_eq!(d["active"], json!(false));
    }

    #[test]
    fn add_appends_roles_and_extension_paths_work() {
        let mut d = doc();
        let r = run(
            &mut d,
            json!({"Operations":[
                {"op":"add","path":"roles","value":[{"value":"Supervisor"}]},
                {"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"Sales"},
                {"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:title","value":"Boss"}
            ]}),
        );
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(d["roles"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            d["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            json!({"department": "Sales"})
        );
        assert_eq!(d["title"], json!("Boss"));
    }

    #[test]
    fn bad_bodies() {
        let mut d = doc();
        assert!(run(&mut d, json!({"operations": []})).is_err());
        assert!(run(&mut d, json!({"Operations":[{"op":"move","path":"x"}]})).is_err());
        assert!(run(&mut d, json!({"Operations":[{"op":"remove"}]})).is_err());
        assert!(
            run(
                &mut d,
                json!({"Operations":[{"op":"replace","path":"id","value":"x"}]})
            )
            .is_err()
        );
        assert!(run(&mut d, json!({"Operations":[{"op":"replace","path":"roles[value eq \"Nope\"]","value":{"value":"A"}}]})).is_err());
        assert!(
            run(
                &mut d,
                json!({"Operations":[{"op":"replace","path":"roles[value eq","value":1}]})
            )
            .is_err()
        );
        assert!(run(&mut d, json!([])).is_err());
    }

    proptest::proptest! {
        #[test]
        fn paths_never_panic(input in "\\PC{0,40}") {
            let _ = parse_path(&input);
        }
    }
}
