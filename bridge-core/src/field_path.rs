//! Where a value sits in a JSON payload: a JSON Pointer (RFC 6901) in which one level may be a
//! key pattern with `*`.
//!
//! JSON Pointer addresses any key, including keys with `.`, `:` or spaces (Shelly's
//! `/params/temperature:0/tC`); `~1` stands for `/` in a key and `~0` for `~`. A level such as
//! `DS18B20-*` matches every key of that object that fits the pattern (Tasmota numbers several
//! probes of one kind `DS18B20-1`, `DS18B20-2`, ...), and the key it matched is given back so
//! that each probe becomes a series of its own.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("field path {0:?} must start with `/` (a JSON Pointer, RFC 6901: `/params/temperature:0/tC`)")]
    NoLeadingSlash(String),
    #[error(
        "field path {0:?} has a `~` not followed by 0 or 1 (write `~0` for `~` and `~1` for `/`)"
    )]
    BadEscape(String),
    #[error("field path {0:?} has more than one level with `*`; one key pattern per path")]
    TwoPatterns(String),
}

/// One level of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    /// A key pattern: the text before the first `*` and after the last one must match, and
    /// anything may come between (a `*` matches any text, including none).
    Pattern {
        prefix: String,
        suffix: String,
    },
}

/// A parsed field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    steps: Vec<Step>,
}

impl FieldPath {
    /// Parses a JSON Pointer, optionally with one pattern level. The empty path is the whole
    /// payload.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.is_empty() {
            return Ok(Self {
                text: String::new(),
                steps: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PathError::NoLeadingSlash(text.to_owned()));
        };
        let mut steps = Vec::new();
        for raw in rest.split('/') {
            let key = unescape(raw).ok_or_else(|| PathError::BadEscape(text.to_owned()))?;
            steps.push(match (key.find('*'), key.rfind('*')) {
                (Some(first), Some(last)) => Step::Pattern {
                    prefix: key[..first].to_owned(),
                    suffix: key[last + 1..].to_owned(),
                },
                _ => Step::Key(key),
            });
        }
        if steps
            .iter()
            .filter(|s| matches!(s, Step::Pattern { .. }))
            .count()
            > 1
        {
            return Err(PathError::TwoPatterns(text.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            steps,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether one level is a key pattern.
    pub fn has_pattern(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Pattern { .. }))
    }

    /// The value at this path, for a path without a pattern (with one, the first match).
    pub fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut found = None;
        self.each(root, &mut |_, v| {
            found = Some(v);
            false
        });
        found
    }

    /// Calls `f` with each value the path reaches, and the key its pattern level matched (empty
    /// without a pattern), in the payload's key order, until `f` returns false.
    pub fn each<'v>(&self, root: &'v Value, f: &mut dyn FnMut(&'v str, &'v Value) -> bool) {
        walk(&self.steps, root, "", f);
    }
}

fn walk<'v>(
    steps: &[Step],
    at: &'v Value,
    matched: &'v str,
    f: &mut dyn FnMut(&'v str, &'v Value) -> bool,
) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        return f(matched, at);
    };
    match (step, at) {
        (Step::Key(k), Value::Object(map)) => match map.get(k) {
            Some(v) => walk(rest, v, matched, f),
            None => true,
        },
        (Step::Key(k), Value::Array(items)) => match index(k).and_then(|i| items.get(i)) {
            Some(v) => walk(rest, v, matched, f),
            None => true,
        },
        (Step::Pattern { prefix, suffix }, Value::Object(map)) => {
            for (key, v) in map {
                let fits = key.len() >= prefix.len() + suffix.len()
                    && key.starts_with(prefix.as_str())
                    && key.ends_with(suffix.as_str());
                if fits && !walk(rest, v, key, f) {
                    return false;
                }
            }
            true
        }
        _ => true,
    }
}

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn index(k: &str) -> Option<usize> {
    let ok =
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) && (k == "0" || !k.starts_with('0'));
    ok.then(|| k.parse().ok()).flatten()
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A measurement's number: a JSON number, or a string holding one (older Zigbee2MQTT versions
/// send `"21.5"`), surrounding whitespace allowed. Anything else, and NaN or infinity, is not a
/// measurement: `None`.
pub fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => text_number(s)?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A number written as text: decimal notation only (Rust's parser also reads `inf` and `NaN`,
/// which are not measurements, and which ESPHome publishes for a sensor without a state).
pub fn text_number(s: &str) -> Option<f64> {
    let t = s.trim();
    let decimal = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    decimal
        .then(|| t.parse::<f64>().ok())
        .flatten()
        .filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(path: &str, v: &Value) -> Vec<(String, Value)> {
        let p = FieldPath::parse(path).unwrap();
        let mut got = Vec::new();
        p.each(v, &mut |k, v| {
            got.push((k.to_owned(), v.clone()));
            true
        });
        got
    }

    #[test]
    fn pointers_address_any_key() {
        let v = json!({
            "a.b": 1, "temperature:0": {"tC": 21.5}, "x/y": 2, "t~": 3, "": 4,
            "list": [10, 11], "deep": {"er": {"est": 5}}
        });
        let get = |p: &str| FieldPath::parse(p).unwrap().get(&v).cloned();
        assert_eq!(get("/a.b"), Some(json!(1)));
        assert_eq!(get("/temperature:0/tC"), Some(json!(21.5)));
        assert_eq!(get("/x~1y"), Some(json!(2)));
        assert_eq!(get("/t~0"), Some(json!(3)));
        assert_eq!(get("/"), Some(json!(4)));
        assert_eq!(get("/list/1"), Some(json!(11)));
        assert_eq!(get("/list/01"), None);
        assert_eq!(get("/list/2"), None);
        assert_eq!(get("/deep/er/est"), Some(json!(5)));
        assert_eq!(get("/missing"), None);
        assert_eq!(get("/a.b/under_a_number"), None);
        assert_eq!(get(""), Some(v.clone()));
    }

    #[test]
    fn bad_paths_are_refused_with_the_fix() {
        assert!(matches!(
            FieldPath::parse("temperature"),
            Err(PathError::NoLeadingSlash(_))
        ));
        assert!(matches!(
            FieldPath::parse("/a~2"),
            Err(PathError::BadEscape(_))
        ));
        assert!(matches!(
            FieldPath::parse("/a~"),
            Err(PathError::BadEscape(_))
        ));
        assert!(matches!(
            FieldPath::parse("/*/x/*"),
            Err(PathError::TwoPatterns(_))
        ));
    }

    #[test]
    fn a_pattern_level_gives_each_matching_key() {
        let v = json!({
            "Time": "2024-12-02T18:00:00",
            "DS18B20-1": {"Id": "01", "Temperature": 21.1},
            "DS18B20-2": {"Id": "02", "Temperature": 19.4},
            "DS18B20-3": {"Id": "03"},
            "SHT3X": {"Temperature": 22.0},
        });
        assert_eq!(
            all("/DS18B20-*/Temperature", &v),
            [
                ("DS18B20-1".to_owned(), json!(21.1)),
                ("DS18B20-2".to_owned(), json!(19.4))
            ]
        );
        assert_eq!(all("/*/Temperature", &v).len(), 3);
        assert_eq!(all("/*20-*/Id", &v).len(), 3);
        assert_eq!(
            all("/SHT3X/Temperature", &v),
            [(String::new(), json!(22.0))]
        );
        assert!(FieldPath::parse("/DS18B20-*/Temperature")
            .unwrap()
            .has_pattern());
        // "D*1" must not match "D" (prefix and suffix overlapping).
        assert!(all("/ab*ba", &json!({"aba": 1})).is_empty());
        assert_eq!(all("/ab*ba", &json!({"abba": 1})).len(), 1);
    }

    #[test]
    fn numbers_and_numeric_strings() {
        assert_eq!(number(&json!(21.5)), Some(21.5));
        assert_eq!(number(&json!(-3)), Some(-3.0));
        assert_eq!(number(&json!("21.5")), Some(21.5));
        assert_eq!(number(&json!(" 7 ")), Some(7.0));
        assert_eq!(number(&json!("1e3")), Some(1000.0));
        for not in [
            json!("ON"),
            json!("single"),
            json!(true),
            json!(null),
            json!({"x": 1}),
            json!([1]),
            json!("NaN"),
            json!("nan"),
            json!("inf"),
            json!("-infinity"),
            json!(""),
            json!("1e999"),
            json!("0x10"),
        ] {
            assert_eq!(number(&not), None, "{not}");
        }
        assert_eq!(text_number("21.5\n"), Some(21.5));
        assert_eq!(text_number("unavailable"), None);
    }
}
