//! SCIM filter expressions (RFC 7644 §3.4.2.2): the parser used for the `filter` query
//! parameter and for value-path filters in PATCH paths (`roles[value eq "X"]`).
//!
//! The parser understands the whole RFC grammar (`and`, `or`, `not`, grouping, every comparison
//! operator, `pr`, value paths). What Genesys accepts is narrower and is enforced by the caller:
//! the `filter` parameter of `GET /users` must be a single `eq` (see `scim.rs`).
//!
//! Quoted values are JSON strings: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t` and `\uXXXX`
//! escapes are decoded, so `externalId eq "x\" or userName pr \""` is one `eq` on the literal
//! `x" or userName pr "`. Genesys' own examples use unquoted values (`userName eq a@b.org`):
//! a bare value runs to the next blank, `)` or `]`.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn parse(word: &str) -> Option<CmpOp> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "co" => CmpOp::Co,
            "sw" => CmpOp::Sw,
            "ew" => CmpOp::Ew,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    Str(String),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Cmp {
        attr: String,
        op: CmpOp,
        value: FilterValue,
    },
    Present(String),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    ValuePath {
        attr: String,
        filter: Box<Filter>,
    },
}

/// Why a filter could not be parsed (becomes a 400 `invalidFilter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How deep groups (parentheses, `not`, value paths) may nest, and how many comparisons one
/// filter may hold. The parser and the evaluator recurse: without these bounds a filter of a
/// few kilobytes of `(` would overflow the stack.
pub const MAX_DEPTH: usize = 32;
pub const MAX_TERMS: usize = 256;

/// Parses a complete filter expression.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    let mut p = Parser {
        chars: input.chars().collect(),
        pos: 0,
        depth: 0,
        terms: 0,
    };
    let filter = p.parse_or()?;
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(FilterError(format!(
            "unexpected text at position {}: '{}'",
            p.pos + 1,
            p.rest()
        )));
    }
    Ok(filter)
}

/// Parses a value-path filter (the text between `[` and `]`), which must be complete.
pub fn parse_value_filter(input: &str) -> Result<Filter, FilterError> {
    parse(input)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Groups open now (`MAX_DEPTH`).
    depth: usize,
    /// Comparisons read so far (`MAX_TERMS`).
    terms: usize,
}

impl Parser {
    fn rest(&self) -> String {
        self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .collect()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace()) {
            self.pos += 1;
        }
    }

    /// Reads a word (attribute path, operator or keyword): up to a blank or a delimiter.
    fn word(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"') {
                break;
            }
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Looks at the next word without consuming it.
    fn peek_word(&mut self) -> String {
        let save = self.pos;
        self.skip_ws();
        let w = self.word();
        self.pos = save;
        w
    }

    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_and()?;
        loop {
            if self.peek_word().eq_ignore_ascii_case("or") {
                self.skip_ws();
                self.word();
                let right = self.parse_and()?;
                left = Filter::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary()?;
        loop {
            if self.peek_word().eq_ignore_ascii_case("and") {
                self.skip_ws();
                self.word();
                let right = self.parse_unary()?;
                left = Filter::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn expect(&mut self, c: char) -> Result<(), FilterError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(FilterError(format!(
                "expected '{c}' at position {}",
                self.pos + 1
            )))
        }
    }

    /// Runs `f` one group deeper, refusing beyond `MAX_DEPTH`.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, FilterError>,
    ) -> Result<T, FilterError> {
        if self.depth >= MAX_DEPTH {
            return Err(FilterError(format!(
                "the filter nests more than {MAX_DEPTH} groups"
            )));
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    fn parse_unary(&mut self) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError(format!(
                "the filter has more than {MAX_TERMS} terms"
            )));
        }
        self.skip_ws();
        match self.peek() {
            None => return Err(FilterError("unexpected end of filter".into())),
            Some('(') => {
                self.pos += 1;
                let inner = self.nested(Self::parse_or)?;
                self.expect(')')?;
                return Ok(inner);
            }
            _ => {}
        }
        let save = self.pos;
        let w = self.word();
        if w.eq_ignore_ascii_case("not") {
            self.skip_ws();
            if self.peek() == Some('(') {
                self.pos += 1;
                let inner = self.nested(Self::parse_or)?;
                self.expect(')')?;
                return Ok(Filter::Not(Box::new(inner)));
            }
        }
        self.pos = save;
        self.parse_attr_expr()
    }

    fn parse_attr_expr(&mut self) -> Result<Filter, FilterError> {
        self.skip_ws();
        let attr = self.word();
        if attr.is_empty() || !is_attr_path(&attr) {
            return Err(FilterError(format!(
                "expected an attribute name at position {}",
                self.pos + 1
            )));
        }
        if self.peek() == Some('[') {
            self.pos += 1;
            let inner = self.nested(Self::parse_or)?;
            self.expect(']')?;
            return Ok(Filter::ValuePath {
                attr,
                filter: Box::new(inner),
            });
        }
        self.skip_ws();
        let op_word = self.word();
        if op_word.is_empty() {
            return Err(FilterError(format!("expected an operator after '{attr}'")));
        }
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(attr));
        }
        let op = CmpOp::parse(&op_word)
            .ok_or_else(|| FilterError(format!("unknown operator '{op_word}'")))?;
        self.skip_ws();
        let value = self.parse_value()?;
        Ok(Filter::Cmp { attr, op, value })
    }

    fn parse_value(&mut self) -> Result<FilterValue, FilterError> {
        match self.peek() {
            None => Err(FilterError("missing comparison value".into())),
            Some('"') => Ok(FilterValue::Str(self.parse_string()?)),
            Some(_) => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || matches!(c, ')' | ']') {
                        break;
                    }
                    self.pos += 1;
                }
                let raw: String = self.chars[start..self.pos].iter().collect();
                if raw.is_empty() {
                    return Err(FilterError("missing comparison value".into()));
                }
                Ok(match raw.as_str() {
                    "true" => FilterValue::Bool(true),
                    "false" => FilterValue::Bool(false),
                    "null" => FilterValue::Null,
                    // Numbers stay text: `externalId eq 167844` compares with a string
                    // attribute; `matches_value` parses them for numeric attributes.
                    _ => FilterValue::Str(raw),
                })
            }
        }
    }

    /// A JSON string literal starting at the current `"`.
    fn parse_string(&mut self) -> Result<String, FilterError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(FilterError("unterminated string".into()));
            };
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(FilterError("unterminated escape".into()));
                    };
                    self.pos += 1;
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair: `\uD83D\uDE00`.
                                if self.peek() == Some('\\')
                                    && self.chars.get(self.pos + 1) == Some(&'u')
                                {
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    let code = 0x10000
                                        + ((hi - 0xD800) << 10)
                                        + (lo.wrapping_sub(0xDC00) & 0x3FF);
                                    out.push(
                                        char::from_u32(code).ok_or_else(|| {
                                            FilterError("invalid \\u escape".into())
                                        })?,
                                    );
                                } else {
                                    return Err(FilterError("invalid \\u escape".into()));
                                }
                            } else {
                                out.push(
                                    char::from_u32(hi)
                                        .ok_or_else(|| FilterError("invalid \\u escape".into()))?,
                                );
                            }
                        }
                        other => {
                            return Err(FilterError(format!("invalid escape '\\{other}'")));
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, FilterError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| FilterError("invalid \\u escape".into()))?;
            v = v * 16 + d;
            self.pos += 1;
        }
        Ok(v)
    }
}

fn is_attr_path(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '$'))
}

/// Compares a JSON value with a filter value, the way value-path filters need it.
/// Strings compare exactly (`value` of a role is case-sensitive).
pub fn matches_value(actual: Option<&Value>, op: CmpOp, expected: &FilterValue) -> bool {
    let Some(actual) = actual else {
        return matches!((op, expected), (CmpOp::Eq, FilterValue::Null))
            || matches!((op, expected), (CmpOp::Ne, v) if *v != FilterValue::Null);
    };
    match (actual, expected) {
        (Value::String(a), FilterValue::Str(e)) => compare_str(a, op, e),
        (Value::Bool(a), FilterValue::Bool(e)) => match op {
            CmpOp::Eq => a == e,
            CmpOp::Ne => a != e,
            _ => false,
        },
        (Value::Bool(a), FilterValue::Str(e)) => match op {
            CmpOp::Eq => a.to_string().eq_ignore_ascii_case(e),
            CmpOp::Ne => !a.to_string().eq_ignore_ascii_case(e),
            _ => false,
        },
        (Value::Number(a), FilterValue::Str(e)) => {
            let (Some(a), Ok(e)) = (a.as_f64(), e.parse::<f64>()) else {
                return false;
            };
            compare_num(a, op, e)
        }
        (Value::Null, FilterValue::Null) => op == CmpOp::Eq,
        _ => op == CmpOp::Ne,
    }
}

fn compare_str(a: &str, op: CmpOp, e: &str) -> bool {
    match op {
        CmpOp::Eq => a == e,
        CmpOp::Ne => a != e,
        CmpOp::Co => a.contains(e),
        CmpOp::Sw => a.starts_with(e),
        CmpOp::Ew => a.ends_with(e),
        CmpOp::Gt => a > e,
        CmpOp::Ge => a >= e,
        CmpOp::Lt => a < e,
        CmpOp::Le => a <= e,
    }
}

fn compare_num(a: f64, op: CmpOp, e: f64) -> bool {
    match op {
        CmpOp::Eq => a == e,
        CmpOp::Ne => a != e,
        CmpOp::Gt => a > e,
        CmpOp::Ge => a >= e,
        CmpOp::Lt => a < e,
        CmpOp::Le => a <= e,
        _ => false,
    }
}

/// Evaluates a filter against one element of a multi-valued attribute (a JSON object, or a
/// primitive whose sub-attribute `value` is itself).
pub fn eval_element(filter: &Filter, element: &Value) -> bool {
    match filter {
        Filter::Cmp { attr, op, value } => matches_value(element_field(element, attr), *op, value),
        Filter::Present(attr) => element_field(element, attr).is_some_and(|v| !v.is_null()),
        Filter::And(a, b) => eval_element(a, element) && eval_element(b, element),
        Filter::Or(a, b) => eval_element(a, element) || eval_element(b, element),
        Filter::Not(a) => !eval_element(a, element),
        Filter::ValuePath { .. } => false,
    }
}

fn element_field<'a>(element: &'a Value, attr: &str) -> Option<&'a Value> {
    match element {
        Value::Object(map) => map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v),
        other if attr.eq_ignore_ascii_case("value") => Some(other),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_quotes_stay_in_one_value() {
        let f = parse(r#"externalId eq "x\" or userName pr \"""#)
            .unwrap_or(Filter::Present("x".into()));
        assert_eq!(
            f,
            Filter::Cmp {
                attr: "externalId".into(),
                op: CmpOp::Eq,
                value: FilterValue::Str(r#"x" or userName pr ""#.into())
            }
        );
    }

    #[test]
    fn backslash_escape() {
        let f = parse(r#"userName eq "a\\b""#).ok();
        assert_eq!(
            f,
            Some(Filter::Cmp {
                attr: "userName".into(),
                op: CmpOp::Eq,
                value: FilterValue::Str(r"a\b".into())
            })
        );
    }

    #[test]
    fn boolean_ops_parse() {
        assert!(matches!(
            parse(r#"a eq "1" and b eq "2""#),
            Ok(Filter::And(..))
        ));
        assert!(matches!(parse(r#"a eq "1" or b pr"#), Ok(Filter::Or(..))));
        assert!(matches!(parse(r#"not (a eq "1")"#), Ok(Filter::Not(..))));
        assert!(matches!(
            parse(r#"roles[value eq "X"]"#),
            Ok(Filter::ValuePath { .. })
        ));
    }

    #[test]
    fn bare_values() {
        assert_eq!(
            parse("userName eq search@sample.org").ok(),
            Some(Filter::Cmp {
                attr: "userName".into(),
                op: CmpOp::Eq,
                value: FilterValue::Str("search@sample.org".into())
            })
        );
        assert_eq!(
            parse("active eq false").ok(),
            Some(Filter::Cmp {
                attr: "active".into(),
                op: CmpOp::Eq,
                value: FilterValue::Bool(false)
            })
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName eq "abc"#,
            r#"userName zz "a""#,
            "(a eq 1",
            r#"a eq "\q""#,
            "a eq 1 b",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(input in "\\PC{0,40}") {
            let _ = parse(&input);
        }

        #[test]
        fn quoted_values_round_trip(value in "\\PC{0,20}") {
            let quoted = serde_json::to_string(&value).unwrap_or_default();
            let parsed = parse(&format!("externalId eq {quoted}")).ok();
            proptest::prop_assert_eq!(parsed, Some(Filter::Cmp {
                attr: "externalId".into(),
                op: CmpOp::Eq,
                value: FilterValue::Str(value.clone()),
            }));
        }
    }
}
