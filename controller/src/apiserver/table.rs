//! Server-side printing: `kubectl get` asks for a `meta.k8s.io/v1` Table; custom resources get
//! their CRD's printer columns (JSONPath), ages rendered by the server.

use serde_json::{Value, json};

use super::registry::Resource;

/// Whether the client asked for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// The Table of `objects`.
pub fn table(
    resource: &Resource,
    objects: &[Value],
    revision: i64,
    continue_token: Option<&str>,
) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    if resource.columns.is_empty() {
        columns.push(json!({"name": "Age", "type": "date", "format": "", "description": "Time since creation", "priority": 0}));
    }
    for column in &resource.columns {
        columns.push(json!({
            "name": column.name, "type": column.type_, "format": column.format.clone().unwrap_or_default(),
            "description": column.description.clone().unwrap_or_default(), "priority": column.priority.unwrap_or(0),
        }));
    }
    let rows: Vec<Value> = objects.iter().map(|object| row(resource, object)).collect();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows})
}

/// One row, with the object's metadata (kubectl needs it for `-A` and `--show-labels`).
pub fn row(resource: &Resource, object: &Value) -> Value {
    let mut cells = vec![object["metadata"]["name"].clone()];
    if resource.columns.is_empty() {
        cells.push(json!(age(object["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default())));
    }
    for column in &resource.columns {
        let value = evaluate(object, &column.json_path);
        let cell = match (column.type_.as_str(), value) {
            (_, None) => Value::Null,
            ("date", Some(Value::String(time))) => json!(age(&time)),
            ("string", Some(Value::String(text))) => json!(text),
            ("string", Some(other)) => json!(other.to_string()),
            (_, Some(other)) => other,
        };
        cells.push(cell);
    }
    json!({
        "cells": cells,
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]},
    })
}

/// `5s`, `3m`, `2h`, `4d`: how long ago an RFC 3339 time was.
pub fn age(time: &str) -> String {
    let Ok(then) = time.parse::<jiff::Timestamp>() else {
        return "<unknown>".to_owned();
    };
    let seconds = jiff::Timestamp::now().duration_since(then).as_secs().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A printer column's JSONPath: `.a.b`, `.a[0]`, `.a[?(@.type=="Ready")].status`.
pub fn evaluate(object: &Value, path: &str) -> Option<Value> {
    let mut current = vec![object.clone()];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            current = current.iter().filter_map(|v| v.get(key).cloned()).collect();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let selector = &after[..end];
            rest = &after[end + 1..];
            if let Some(filter) = selector
                .strip_prefix("?(@.")
                .and_then(|f| f.strip_suffix(')'))
            {
                let (key, wanted) = filter.split_once("==")?;
                let wanted = wanted.trim().trim_matches(['"', '\'']);
                current = current
                    .iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .filter(|item| item.get(key.trim()).and_then(Value::as_str) == Some(wanted))
                    .collect();
            } else {
                let index: usize = selector.trim().parse().ok()?;
                current = current
                    .iter()
                    .filter_map(|v| v.get(index).cloned())
                    .collect();
            }
        } else {
            return None;
        }
    }
    current.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths() {
        let object = json!({"status": {"phase": "Running", "ipv4": ["10.0.0.2"], "conditions": [{"type": "Scheduled", "status": "True"}, {"type": "Ready", "status": "False"}]}});
        assert_eq!(evaluate(&object, ".status.phase"), Some(json!("Running")));
        assert_eq!(
            evaluate(&object, ".status.ipv4[0]"),
            Some(json!("10.0.0.2"))
        );
        assert_eq!(
            evaluate(&object, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(json!("False"))
        );
        assert_eq!(evaluate(&object, ".status.member"), None);
    }
}
