//! The JSON Schema subset a declared message type may use (`agents[].messageTypes[].schema`),
//! and a validator for it: MCP `tools/call` checks a call's `message` against it before
//! the RPC is sent (docs/a2a-mcp.md).
//!
//! Keywords that constrain: `type` (a name or a list), `enum`, `const`, `properties`,
//! `required`, `additionalProperties` (bool or schema), `items` (one schema),
//! `minItems`, `maxItems`, `minLength`, `maxLength` (in characters), `minimum`,
//! `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers), `allOf`, `anyOf`,
//! `oneOf`, `not`, `dependentRequired`. Annotations are allowed and checked by nothing: `title`,
//! `description`, `default`, `examples`, `format`, `$schema`, `$id`, `$comment`,
//! `deprecated`, `readOnly`, `writeOnly`. Any other keyword (`$ref`, `pattern`, ...) is
//! refused when the config file is read ([`check_supported`]), so no declared
//! constraint is silently ignored.

use serde_json::{Map, Value};

const CONSTRAINTS: [&str; 20] = [
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "dependentRequired",
];

const ANNOTATIONS: [&str; 11] = [
    "title",
    "description",
    "default",
    "examples",
    "format",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// Whether `schema` uses only the subset this module validates; the error names the
/// place (`properties.q.pattern`) and why.
pub fn check_supported(schema: &Value) -> Result<(), String> {
    check_at(schema, "")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check_at(schema: &Value, path: &str) -> Result<(), String> {
    let here = |k: &str| join(path, k);
    let object = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(o) => o,
        _ => {
            return Err(format!(
                "{}: a schema must be an object or a boolean",
                if path.is_empty() { "(root)" } else { path }
            ));
        }
    };
    for (k, v) in object {
        if ANNOTATIONS.contains(&k.as_str()) {
            continue;
        }
        if !CONSTRAINTS.contains(&k.as_str()) {
            return Err(format!(
                "{}: keyword {k:?} is not supported (supported: {})",
                here(k),
                CONSTRAINTS.join(", ")
            ));
        }
        let bad = |why: &str| Err(format!("{}: {why}", here(k)));
        match k.as_str() {
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for n in names {
                    if !n.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return bad(&format!("{n} is not a JSON Schema type"));
                    }
                }
            }
            "enum" if !v.is_array() => return bad("must be an array"),
            "properties" => {
                let Some(props) = v.as_object() else {
                    return bad("must be an object");
                };
                for (name, s) in props {
                    check_at(s, &join(&here(k), name))?;
                }
            }
            "required" if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) => {
                return bad("must be an array of strings");
            }
            "dependentRequired" => {
                let ok = v.as_object().is_some_and(|o| {
                    o.values()
                        .all(|l| l.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
                });
                if !ok {
                    return bad("must map property names to arrays of strings");
                }
            }
            "additionalProperties" | "items" | "not" => check_at(v, &here(k))?,
            "minItems" | "maxItems" | "minLength" | "maxLength" if !v.is_u64() => {
                return bad("must be a non-negative integer");
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" if !v.is_number() => {
                return bad("must be a number");
            }
            "allOf" | "anyOf" | "oneOf" => {
                let Some(list) = v.as_array().filter(|a| !a.is_empty()) else {
                    return bad("must be a non-empty array of schemas");
                };
                for (i, s) in list.iter().enumerate() {
                    check_at(s, &format!("{}[{i}]", here(k)))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, name: &str) -> bool {
    match name {
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        other => type_name(v) == other,
    }
}

/// Checks `value` against `schema` (one [`check_supported`] accepted); the error names
/// the first failing place from `path` (`message.text: expected string, got number`).
pub fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    match schema {
        Value::Bool(true) => Ok(()),
        Value::Bool(false) => Err(format!("{path}: no value is allowed here")),
        Value::Object(s) => validate_object(s, value, path),
        _ => Ok(()),
    }
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn validate_object(s: &Map<String, Value>, value: &Value, path: &str) -> Result<(), String> {
    let fail = |why: String| Err(format!("{path}: {why}"));
    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::String(n) => vec![n.as_str()],
            _ => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|n| is_type(value, n)) {
            return fail(format!(
                "expected {}, got {}",
                names.join(" or "),
                type_name(value)
            ));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(value)
    {
        return fail(format!(
            "{value} is not one of {}",
            Value::Array(options.clone())
        ));
    }
    if let Some(c) = s.get("const")
        && c != value
    {
        return fail(format!("must be {c}"));
    }
    match value {
        Value::Object(o) => {
            if let Some(Value::Array(required)) = s.get("required") {
                for r in required.iter().filter_map(Value::as_str) {
                    if !o.contains_key(r) {
                        return Err(format!("{}: is required", join(path, r)));
                    }
                }
            }
            if let Some(Value::Object(deps)) = s.get("dependentRequired") {
                for (k, needs) in deps {
                    if o.contains_key(k) {
                        for n in needs
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                        {
                            if !o.contains_key(n) {
                                return Err(format!(
                                    "{}: is required when {k} is given",
                                    join(path, n)
                                ));
                            }
                        }
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, v) in o {
                let at = join(path, k);
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => validate(ps, v, &at)?,
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(format!("{at}: is not an allowed property"));
                        }
                        Some(extra) => validate(extra, v, &at)?,
                        None => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                return fail(format!("needs at least {min} items, has {len}"));
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                return fail(format!("allows at most {max} items, has {len}"));
            }
            if let Some(item) = s.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(item, v, &format!("{path}[{i}]"))?;
                }
            }
        }
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                return fail(format!("needs at least {min} characters, has {len}"));
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                return fail(format!("allows at most {max} characters, has {len}"));
            }
        }
        Value::Number(_) => {
            let n = number(value).unwrap_or(f64::NAN);
            let bound = |k: &str| s.get(k).and_then(number);
            if let Some(min) = bound("minimum")
                && n < min
            {
                return fail(format!("{n} is less than the minimum {min}"));
            }
            if let Some(max) = bound("maximum")
                && n > max
            {
                return fail(format!("{n} is more than the maximum {max}"));
            }
            if let Some(min) = bound("exclusiveMinimum")
                && n <= min
            {
                return fail(format!("{n} must be more than {min}"));
            }
            if let Some(max) = bound("exclusiveMaximum")
                && n >= max
            {
                return fail(format!("{n} must be less than {max}"));
            }
        }
        _ => {}
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            validate(sub, value, path)?;
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf") {
        let mut first = None;
        for sub in any {
            match validate(sub, value, path) {
                Ok(()) => {
                    first = None;
                    break;
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first {
            return Err(format!("matches none of anyOf (the first: {e})"));
        }
    }
    if let Some(Value::Array(one)) = s.get("oneOf") {
        let matching = one
            .iter()
            .filter(|sub| validate(sub, value, path).is_ok())
            .count();
        if matching != 1 {
            return fail(format!(
                "must match exactly one of oneOf, matches {matching}"
            ));
        }
    }
    if let Some(not) = s.get("not")
        && validate(not, value, path).is_ok()
    {
        return fail("matches the schema under not".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ask() -> Value {
        json!({
            "type": "object",
            "description": "a question",
            "properties": {
                "text": {"type": "string", "minLength": 1},
                "sleep": {"type": "number", "minimum": 0},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
                "n": {"type": "integer"}
            },
            "required": ["text"],
            "additionalProperties": false
        })
    }

    #[test]
    fn valid_values_pass() {
        let s = ask();
        check_supported(&s).unwrap();
        validate(&s, &json!({"text": "hi"}), "message").unwrap();
        validate(
            &s,
            &json!({"text": "hi", "sleep": 1.5, "tags": ["a"], "n": 3}),
            "message",
        )
        .unwrap();
        validate(&s, &json!({"text": "hi", "n": 3.0}), "message").unwrap();
    }

    #[test]
    fn each_violation_names_its_field() {
        let s = ask();
        let e = |v: Value| validate(&s, &v, "message").unwrap_err();
        assert_eq!(e(json!({})), "message.text: is required");
        assert_eq!(
            e(json!({"text": 3})),
            "message.text: expected string, got integer"
        );
        assert_eq!(e(json!("x")), "message: expected object, got string");
        assert!(e(json!({"text": ""})).starts_with("message.text: needs at least 1"));
        assert!(e(json!({"text": "x", "sleep": -1})).starts_with("message.sleep: -1"));
        assert!(
            e(json!({"text": "x", "tags": ["c"]}))
                .starts_with("message.tags[0]: \"c\" is not one of")
        );
        assert!(e(json!({"text": "x", "tags": ["a", "a", "b"]})).contains("at most 2 items"));
        assert_eq!(
            e(json!({"text": "x", "other": 1})),
            "message.other: is not an allowed property"
        );
        assert!(e(json!({"text": "x", "n": 1.5})).starts_with("message.n: expected integer"));
    }

    #[test]
    fn combinators() {
        let s = json!({"anyOf": [{"type": "string"}, {"type": "object", "required": ["q"]}]});
        check_supported(&s).unwrap();
        validate(&s, &json!("x"), "m").unwrap();
        validate(&s, &json!({"q": 1}), "m").unwrap();
        assert!(
            validate(&s, &json!(1), "m")
                .unwrap_err()
                .contains("none of anyOf")
        );
        let one = json!({"oneOf": [{"type": "number"}, {"type": "integer"}]});
        assert!(validate(&one, &json!(1), "m").is_err(), "1 matches both");
        validate(&one, &json!(1.5), "m").unwrap();
        let not = json!({"not": {"const": 0}});
        assert!(validate(&not, &json!(0), "m").is_err());
        validate(&not, &json!(1), "m").unwrap();
    }

    #[test]
    fn unsupported_keywords_are_refused_with_their_place() {
        let e = check_supported(&json!({"properties": {"q": {"type": "string", "pattern": "^a"}}}))
            .unwrap_err();
        assert!(
            e.starts_with("properties.q.pattern: keyword \"pattern\" is not supported"),
            "{e}"
        );
        let e = check_supported(&json!({"$ref": "#/x"})).unwrap_err();
        assert!(e.starts_with("$ref: keyword"), "{e}");
        let e = check_supported(&json!({"type": "text"})).unwrap_err();
        assert_eq!(e, "type: \"text\" is not a JSON Schema type");
        let e = check_supported(&json!({"anyOf": []})).unwrap_err();
        assert_eq!(e, "anyOf: must be a non-empty array of schemas");
        check_supported(&json!({"format": "email", "title": "t", "$schema": "x"})).unwrap();
    }
}
