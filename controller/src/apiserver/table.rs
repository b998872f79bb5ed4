//! Server-side printing: `kubectl get` asks for a `meta.k8s.io/v1` Table; custom resources get
//! their CRD's printer columns (JSONPath), ages rendered by the server.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::registry::Resource;

/// Whether the client asked for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// The Table's column definitions: the name, then the printer columns (or the age).
fn column_definitions(resource: &Resource) -> Vec<Value> {
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
    columns
}

fn table_metadata(revision: i64, continue_token: Option<&str>) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    metadata
}

/// The Table of `objects`.
pub fn table(
    resource: &Resource,
    objects: &[Value],
    revision: i64,
    continue_token: Option<&str>,
) -> Value {
    let rows: Vec<Value> = objects.iter().map(|object| row(resource, object)).collect();
    // Built by moving the rows in: `json!` would copy them.
    let mut table = serde_json::Map::new();
    table.insert("kind".to_owned(), json!("Table"));
    table.insert("apiVersion".to_owned(), json!("meta.k8s.io/v1"));
    table.insert(
        "metadata".to_owned(),
        table_metadata(revision, continue_token),
    );
    table.insert(
        "columnDefinitions".to_owned(),
        Value::Array(column_definitions(resource)),
    );
    table.insert("rows".to_owned(), Value::Array(rows));
    Value::Object(table)
}

/// The Table of objects given as their stored JSON, as JSON text. Each row reads only what
/// its cells need: the objects are not decoded whole, and their metadata is copied as it is.
pub fn stored_table(
    resource: &Resource,
    texts: &[impl AsRef<str>],
    revision: i64,
) -> Result<String, serde_json::Error> {
    let mut out = String::with_capacity(texts.iter().map(|t| t.as_ref().len()).sum::<usize>());
    out.push_str(r#"{"apiVersion":"meta.k8s.io/v1","columnDefinitions":"#);
    out.push_str(&serde_json::to_string(&column_definitions(resource))?);
    out.push_str(r#","kind":"Table","metadata":"#);
    out.push_str(&serde_json::to_string(&table_metadata(revision, None))?);
    out.push_str(r#","rows":["#);
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        stored_row(resource, text.as_ref(), &mut out)?;
    }
    out.push_str("]}");
    Ok(out)
}

/// The top-level fields of a stored object, undecoded.
type Fields<'a> = BTreeMap<&'a str, &'a RawValue>;

/// Appends the row of one stored object to `out`.
fn stored_row(resource: &Resource, text: &str, out: &mut String) -> Result<(), serde_json::Error> {
    // Field names with escapes cannot be borrowed: such an object is decoded whole.
    let whole = |out: &mut String| -> Result<(), serde_json::Error> {
        let object: Value = serde_json::from_str(text)?;
        out.push_str(&serde_json::to_string(&row(resource, &object))?);
        Ok(())
    };
    let Ok(top) = serde_json::from_str::<Fields>(text) else {
        return whole(out);
    };
    let metadata = match top
        .get("metadata")
        .map(|raw| serde_json::from_str::<Fields>(raw.get()))
    {
        None => Fields::new(),
        Some(Ok(metadata)) => metadata,
        Some(Err(_)) => return whole(out),
    };
    let lookup = |path: &str| -> Option<Value> {
        let path = path.trim().trim_start_matches('{').trim_end_matches('}');
        let after = path.strip_prefix('.')?;
        let end = after.find(['.', '[']).unwrap_or(after.len());
        let (field, rest) = (&after[..end], &after[end..]);
        let (raw, rest) = match rest.strip_prefix('.') {
            Some(after) if field == "metadata" => {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                (*metadata.get(&after[..end])?, &after[end..])
            }
            _ => (*top.get(field)?, rest),
        };
        let value: Value = serde_json::from_str(raw.get()).ok()?;
        evaluate_ref(&value, rest).cloned()
    };
    let mut cells = Vec::with_capacity(resource.columns.len() + 2);
    cells.push(lookup(".metadata.name").unwrap_or(Value::Null));
    if resource.columns.is_empty() {
        let created = lookup(".metadata.creationTimestamp");
        cells.push(json!(age(created
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or_default())));
    }
    for column in &resource.columns {
        let value = if column.json_path.trim().starts_with(['.', '{']) {
            lookup(&column.json_path)
        } else {
            // Not a path this reads piecewise: as `evaluate` reads it.
            serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|object| evaluate(&object, &column.json_path))
        };
        cells.push(cell(column, value.as_ref()));
    }
    out.push_str(r#"{"cells":"#);
    out.push_str(&serde_json::to_string(&cells)?);
    out.push_str(
        r#","object":{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":"#,
    );
    out.push_str(top.get("metadata").map_or("null", |raw| raw.get()));
    out.push_str("}}");
    Ok(())
}

/// The cell of `column` for the value its JSONPath found.
fn cell(column: &CustomResourceColumnDefinition, value: Option<&Value>) -> Value {
    match (column.type_.as_str(), value) {
        (_, None) => Value::Null,
        ("date", Some(Value::String(time))) => json!(age(time)),
        ("string", Some(Value::String(text))) => json!(text),
        ("string", Some(other)) => json!(other.to_string()),
        (_, Some(other)) => other.clone(),
    }
}

/// One row, with the object's metadata (kubectl needs it for `-A` and `--show-labels`).
pub fn row(resource: &Resource, object: &Value) -> Value {
    let mut cells = Vec::with_capacity(resource.columns.len() + 2);
    cells.push(object["metadata"]["name"].clone());
    if resource.columns.is_empty() {
        cells.push(json!(age(object["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default())));
    }
    for column in &resource.columns {
        cells.push(cell(column, evaluate_ref(object, &column.json_path)));
    }
    let mut partial = serde_json::Map::new();
    partial.insert("kind".to_owned(), json!("PartialObjectMetadata"));
    partial.insert("apiVersion".to_owned(), json!("meta.k8s.io/v1"));
    partial.insert("metadata".to_owned(), object["metadata"].clone());
    let mut row = serde_json::Map::new();
    row.insert("cells".to_owned(), Value::Array(cells));
    row.insert("object".to_owned(), Value::Object(partial));
    Value::Object(row)
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
    evaluate_ref(object, path).cloned()
}

/// [`evaluate`], borrowing the value found.
fn evaluate_ref<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = vec![object];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            current = current.iter().filter_map(|v| v.get(key)).collect();
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
                    .filter_map(|v| v.as_array())
                    .flatten()
                    .filter(|item| item.get(key.trim()).and_then(Value::as_str) == Some(wanted))
                    .collect();
            } else {
                let index: usize = selector.trim().parse().ok()?;
                current = current.iter().filter_map(|v| v.get(index)).collect();
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

    fn resource(plural: &str) -> Resource {
        let registry = super::super::registry::Registry::default();
        for crd in lxd_operator_crds::generate::all_crds() {
            registry.install_crd(&crd).unwrap();
        }
        registry
            .all()
            .into_iter()
            .find(|r| r.plural == plural)
            .unwrap()
    }

    #[test]
    fn a_table_of_stored_text_is_the_table_of_the_objects() {
        let containers = resource("lxdcontainers");
        let objects = [
            json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
                   "metadata": {"name": "a", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z",
                                "labels": {"x": "y\"z"}, "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                   "spec": {"clusterRef": {"name": "c1"}, "image": {"alias": "busybox"}},
                   "status": {"phase": "Running", "member": "m1", "ipv4": ["10.0.0.2"]}}),
            json!({"metadata": {"name": "b"}, "status": {"ipv4": [], "member": 3}}),
            json!({"kind": "Odd", "we\"ird": 1, "metadata": {"name": "c"}}),
        ];
        let texts: Vec<String> = objects.iter().map(Value::to_string).collect();
        let stored: Value =
            serde_json::from_str(&stored_table(&containers, &texts, 7).unwrap()).unwrap();
        assert_eq!(stored, table(&containers, &objects, 7, None));
        let config_maps = resource("configmaps");
        let stored: Value =
            serde_json::from_str(&stored_table(&config_maps, &texts, 7).unwrap()).unwrap();
        assert_eq!(stored, table(&config_maps, &objects, 7, None));
    }

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
