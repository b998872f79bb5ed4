//! The shape of an object's `metadata`, checked before anything reads or writes it: the
//! Kubernetes API server decodes metadata into ObjectMeta and refuses a body whose metadata is
//! not that shape. Here the object stays JSON, so the check is explicit, and everything after
//! it may rely on `metadata` being an object whose known fields have their types.

use serde_json::Value;

use crate::status::ApiError;

/// What a known field of ObjectMeta must be.
#[derive(Debug, Clone, Copy)]
enum Shape {
    String,
    Integer,
    StringMap,
    StringList,
    ObjectList,
}

const FIELDS: &[(&str, Shape)] = &[
    ("name", Shape::String),
    ("generateName", Shape::String),
    ("namespace", Shape::String),
    ("selfLink", Shape::String),
    ("uid", Shape::String),
    ("resourceVersion", Shape::String),
    ("generation", Shape::Integer),
    ("creationTimestamp", Shape::String),
    ("deletionTimestamp", Shape::String),
    ("deletionGracePeriodSeconds", Shape::Integer),
    ("labels", Shape::StringMap),
    ("annotations", Shape::StringMap),
    ("ownerReferences", Shape::ObjectList),
    ("finalizers", Shape::StringList),
    ("managedFields", Shape::ObjectList),
];

impl Shape {
    fn holds(self, value: &Value) -> bool {
        match self {
            Shape::String => value.is_string(),
            Shape::Integer => value.is_i64(),
            Shape::StringMap => value
                .as_object()
                .is_some_and(|map| map.values().all(|v| v.is_string() || v.is_null())),
            Shape::StringList => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            Shape::ObjectList => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_object)),
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Shape::String => "must be a string",
            Shape::Integer => "must be an integer",
            Shape::StringMap => "must be an object of string values",
            Shape::StringList => "must be a list of strings",
            Shape::ObjectList => "must be a list of objects",
        }
    }
}

/// A 400 naming the first field of `object`'s metadata that is not ObjectMeta's shape. A
/// missing `metadata`, and `null` for any field, count as absent.
pub fn check(object: &Value) -> Result<(), ApiError> {
    let metadata = match object.get("metadata") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(metadata)) => metadata,
        Some(other) => return Err(refusal("metadata", other, "must be an object")),
    };
    for (field, shape) in FIELDS {
        if let Some(value) = metadata.get(*field)
            && !value.is_null()
            && !shape.holds(value)
        {
            return Err(refusal(&format!("metadata.{field}"), value, shape.rule()));
        }
    }
    Ok(())
}

fn refusal(field: &str, value: &Value, rule: &str) -> ApiError {
    let mut shown = value.to_string();
    if shown.len() > 64 {
        // A value can be megabytes; the message names it, it need not repeat it.
        let cut = (0..=61)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push_str("...");
    }
    ApiError::bad_request(format!("{field}: Invalid value: {shown}: {rule}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(object: Value) -> String {
        match check(&object) {
            Ok(()) => String::new(),
            Err(error) => error.status()["message"].as_str().unwrap_or("").to_owned(),
        }
    }

    #[test]
    fn metadata_that_is_not_an_object_is_named() {
        assert_eq!(
            message(json!({"metadata": 1})),
            "metadata: Invalid value: 1: must be an object"
        );
        assert_eq!(
            message(json!({"metadata": [1]})),
            "metadata: Invalid value: [1]: must be an object"
        );
    }

    #[test]
    fn each_known_field_of_the_wrong_type_is_named_with_its_rule() {
        for (metadata, expected) in [
            (
                json!({"name": 5}),
                "metadata.name: Invalid value: 5: must be a string",
            ),
            (
                json!({"labels": {"a": 1}}),
                "metadata.labels: Invalid value: {\"a\":1}: must be an object of string values",
            ),
            (
                json!({"finalizers": "x"}),
                "metadata.finalizers: Invalid value: \"x\": must be a list of strings",
            ),
            (
                json!({"generation": 1.5}),
                "metadata.generation: Invalid value: 1.5: must be an integer",
            ),
            (
                json!({"ownerReferences": [1]}),
                "metadata.ownerReferences: Invalid value: [1]: must be a list of objects",
            ),
        ] {
            assert_eq!(message(json!({ "metadata": metadata })), expected);
        }
    }

    #[test]
    fn absent_null_and_well_formed_metadata_pass() {
        assert!(check(&json!({})).is_ok());
        assert!(check(&json!({"metadata": null})).is_ok());
        assert!(
            check(
                &json!({"metadata": {"name": "a", "labels": {"x": "y", "z": null},
                "finalizers": ["f"], "generation": 2, "colour": 7}})
            )
            .is_ok()
        );
    }

    #[test]
    fn a_huge_value_is_cut_in_the_message() {
        let long = "é".repeat(1000);
        let text = message(json!({"metadata": {"name": [long]}}));
        assert!(text.len() < 160, "{text}");
        assert!(text.ends_with("...: must be a string"), "{text}");
    }
}
