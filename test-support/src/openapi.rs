//! Checking a JSON value against a schema of our OpenAPI documents.

/// Checks `value` against `schema`, a schema of the OpenAPI 3.1 document `doc` (`$ref`s resolved
/// in it), for the subset our documents use: `type` (or a list of types), `properties`,
/// `required`, `additionalProperties: false`, `items`, `enum`. Returns every mismatch, each
/// with its JSON path, so a test can say exactly where a response and its document disagree.
pub fn openapi_mismatches(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
) -> Vec<String> {
    let mut out = Vec::new();
    check_schema(doc, schema, value, "$", &mut out);
    out
}

fn check_schema(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        match r.strip_prefix('#').and_then(|p| doc.pointer(p)) {
            Some(target) => check_schema(doc, target, value, path, out),
            None => out.push(format!("{path}: unresolved $ref {r}")),
        }
        return;
    }
    let type_of = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = type_of(value);
        let ok = allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"));
        if !ok {
            out.push(format!(
                "{path}: is {actual}, the document says {allowed:?}"
            ));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            out.push(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if let Value::Object(fields) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                out.push(format!("{path}: required field {name} is missing"));
            }
        }
        for (name, v) in fields {
            match props.and_then(|p| p.get(name)) {
                Some(s) => check_schema(doc, s, v, &format!("{path}.{name}"), out),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    out.push(format!("{path}: field {name} is not in the document"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check_schema(doc, s, v, &format!("{path}[{i}]"), out);
        }
    }
}
