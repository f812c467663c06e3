//! Checking a JSON value against a schema of our OpenAPI documents, with a real JSON Schema
//! validator (`jsonschema`, draft 2020-12: what OpenAPI 3.1's schemas are).

use serde_json::Value;

/// Checks `value` against `schema`, a schema of the OpenAPI 3.1 document `doc` (its `$ref`s to
/// `#/components/...` resolved in `doc`). Returns every mismatch, each with the JSON pointer of
/// the part of `value` it is about, so a test can say exactly where a response and its document
/// disagree. A schema that does not compile is one mismatch saying so.
pub fn openapi_mismatches(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let Some(schema) = schema.as_object() else {
        return vec![format!("not a schema: {schema}")];
    };
    // The schema as the root, the document's components beside it: `#/components/schemas/X`
    // then points where it points in the document.
    let mut root = schema.clone();
    root.insert("components".into(), doc["components"].clone());
    let validator = match jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&Value::Object(root))
    {
        Ok(v) => v,
        Err(e) => return vec![format!("the document's schema does not compile: {e}")],
    };
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn refs_resolve_in_the_document_and_every_mismatch_is_named() {
        let doc = json!({"components": {"schemas": {
            "Page": {"type": "object", "required": ["items"], "additionalProperties": false,
                     "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}}},
            "Item": {"type": "object", "required": ["n"], "properties": {
                "n": {"type": "integer"}, "kind": {"enum": ["a", "b"]}}},
        }}});
        let page = json!({"$ref": "#/components/schemas/Page"});
        assert!(
            openapi_mismatches(&doc, &page, &json!({"items": [{"n": 1, "kind": "a"}]})).is_empty()
        );
        let m = openapi_mismatches(
            &doc,
            &page,
            &json!({"items": [{"n": "1"}, {"kind": "c"}], "extra": true}),
        );
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m.iter().any(|e| e.starts_with("/items/0/n:")), "{m:?}");
        assert!(
            m.iter().any(|e| e.starts_with("/items/1:")),
            "n missing: {m:?}"
        );
        assert!(m.iter().any(|e| e.starts_with("/items/1/kind:")), "{m:?}");
        assert!(m.iter().any(|e| e.contains("extra")), "{m:?}");
    }
}
