//! Server-side printing: `kubectl get` asks for a `meta.k8s.io/v1` Table; custom resources get
//! their CRD's printer columns (JSONPath), ages rendered by the server.

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

/// The Table of objects given as their stored JSON, as JSON text. Each row reads its object
/// once, decoding only what its cells show (see [`FieldTree`]); the metadata is copied as it is.
pub fn stored_table(
    resource: &Resource,
    texts: &[impl AsRef<str>],
    revision: i64,
) -> Result<String, serde_json::Error> {
    let cells = CellPaths::of(resource);
    let now = jiff::Timestamp::now();
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
        stored_row(resource, &cells, now, text.as_ref(), &mut out)?;
    }
    out.push_str("]}");
    Ok(out)
}

/// What each cell of a row reads: the name, the age when there are no printer columns, then
/// the columns. A cell whose JSONPath does not start with a field name is read from the object
/// decoded whole.
#[derive(Debug)]
struct CellPaths {
    tree: FieldTree,
    count: usize,
    /// The cells read from the whole object instead of the tree, with their JSONPath.
    whole: Vec<(usize, String)>,
}

impl CellPaths {
    fn of(resource: &Resource) -> CellPaths {
        let mut paths = vec![".metadata.name"];
        if resource.columns.is_empty() {
            paths.push(".metadata.creationTimestamp");
        }
        paths.extend(resource.columns.iter().map(|c| c.json_path.as_str()));
        let mut tree = FieldTree::default();
        let mut whole = Vec::new();
        for (cell, path) in paths.iter().enumerate() {
            if !tree.insert(path, cell) {
                whole.push((cell, (*path).to_owned()));
            }
        }
        CellPaths {
            tree,
            count: paths.len(),
            whole,
        }
    }
}

/// The fields the cells read, as a tree of field names. A cell's path is followed by name as
/// far as it goes; the value there is decoded, and the rest of the path (an index, a filter)
/// evaluated on it. Every other field is skipped unread.
#[derive(Debug, Default)]
struct FieldTree {
    /// The cells that read this field, with the rest of their path.
    cells: Vec<(usize, String)>,
    children: Vec<(String, FieldTree)>,
}

impl FieldTree {
    /// Adds a cell's JSONPath; false if it is not one this tree follows (it must start with
    /// a field name).
    fn insert(&mut self, path: &str, cell: usize) -> bool {
        let path = path.trim().trim_start_matches('{').trim_end_matches('}');
        let mut node = self;
        let mut rest = path;
        let mut depth = 0;
        while let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() {
                return false;
            }
            let index = match node.children.iter().position(|(n, _)| n == name) {
                Some(index) => index,
                None => {
                    node.children.push((name.to_owned(), FieldTree::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[index].1;
            rest = &after[end..];
            depth += 1;
        }
        if depth == 0 || !(rest.is_empty() || rest.starts_with('[')) {
            return false;
        }
        node.cells.push((cell, rest.to_owned()));
        true
    }

    fn child(&self, name: &str) -> Option<&FieldTree> {
        self.children
            .iter()
            .find_map(|(n, child)| (n == name).then_some(child))
    }

    /// Fills the cells under this field from its decoded value.
    fn fill(&self, value: &Value, found: &mut [Option<Value>]) {
        for (cell, rest) in &self.cells {
            found[*cell] = evaluate_ref(value, rest).cloned();
        }
        for (name, child) in &self.children {
            if let Some(value) = value.get(name) {
                child.fill(value, found);
            }
        }
    }
}

/// Reads one JSON value for a [`FieldTree`] node, filling the cells found under it: decoded
/// there when cells read the node itself, else followed field by field. At the top of the
/// object, `metadata` is kept as its text instead (the row carries it whole) and read
/// afterwards.
struct TreeSeed<'t, 'f, 'de> {
    tree: &'t FieldTree,
    found: &'f mut [Option<Value>],
    metadata: Option<&'f mut Option<&'de RawValue>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for TreeSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.tree.cells.is_empty() {
            deserializer.deserialize_any(self)
        } else {
            let value = <Value as serde::Deserialize>::deserialize(deserializer)?;
            self.tree.fill(&value, self.found);
            Ok(())
        }
    }
}

impl<'de> serde::de::Visitor<'de> for TreeSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(FieldName(name)) = map.next_key()? {
            if name == "metadata"
                && let Some(metadata) = self.metadata.as_deref_mut()
            {
                *metadata = Some(map.next_value()?);
                continue;
            }
            match self.tree.child(&name) {
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Some(child) => map.next_value_seed(TreeSeed {
                    tree: child,
                    found: self.found,
                    metadata: None,
                })?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A field name, borrowed from the text unless it has escapes.
struct FieldName<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = FieldName<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(name.into()))
            }
            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(name.to_owned().into()))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Appends the row of one stored object to `out`.
fn stored_row(
    resource: &Resource,
    paths: &CellPaths,
    now: jiff::Timestamp,
    text: &str,
    out: &mut String,
) -> Result<(), serde_json::Error> {
    let mut found = vec![None; paths.count];
    let mut metadata = None;
    serde::de::DeserializeSeed::deserialize(
        TreeSeed {
            tree: &paths.tree,
            found: &mut found,
            metadata: Some(&mut metadata),
        },
        &mut serde_json::Deserializer::from_str(text),
    )?;
    if let (Some(raw), Some(tree)) = (metadata, paths.tree.child("metadata")) {
        serde::de::DeserializeSeed::deserialize(
            TreeSeed {
                tree,
                found: &mut found,
                metadata: None,
            },
            &mut serde_json::Deserializer::from_str(raw.get()),
        )?;
    }
    if !paths.whole.is_empty() {
        let object: Value = serde_json::from_str(text)?;
        for (cell, path) in &paths.whole {
            found[*cell] = evaluate(&object, path);
        }
    }
    let mut found = found.into_iter();
    let mut cells = Vec::with_capacity(paths.count);
    cells.push(found.next().flatten().unwrap_or(Value::Null));
    if resource.columns.is_empty() {
        let created = found.next().flatten();
        cells.push(json!(age_since(
            created.as_ref().and_then(Value::as_str).unwrap_or_default(),
            now
        )));
    }
    for (column, value) in resource.columns.iter().zip(found) {
        cells.push(cell_at(column, value.as_ref(), now));
    }
    out.push_str(r#"{"cells":"#);
    out.push_str(&serde_json::to_string(&cells)?);
    out.push_str(
        r#","object":{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":"#,
    );
    out.push_str(metadata.map_or("null", |raw| raw.get()));
    out.push_str("}}");
    Ok(())
}

/// The cell of `column` for the value its JSONPath found.
fn cell(column: &CustomResourceColumnDefinition, value: Option<&Value>) -> Value {
    cell_at(column, value, jiff::Timestamp::now())
}

/// [`cell`], with ages counted up to `now`.
fn cell_at(
    column: &CustomResourceColumnDefinition,
    value: Option<&Value>,
    now: jiff::Timestamp,
) -> Value {
    match (column.type_.as_str(), value) {
        (_, None) => Value::Null,
        ("date", Some(Value::String(time))) => json!(age_since(time, now)),
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
    age_since(time, jiff::Timestamp::now())
}

/// [`age`] at `now`.
fn age_since(time: &str, now: jiff::Timestamp) -> String {
    let Ok(then) = time.parse::<jiff::Timestamp>() else {
        return "<unknown>".to_owned();
    };
    let seconds = now.duration_since(then).as_secs().max(0);
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
        let mut odd_columns = containers.clone();
        let column = |name: &str, type_: &str, json_path: &str| CustomResourceColumnDefinition {
            name: name.to_owned(),
            type_: type_.to_owned(),
            json_path: json_path.to_owned(),
            ..Default::default()
        };
        odd_columns.columns = vec![
            column("Metadata", "string", ".metadata"),
            column("Label", "string", ".metadata.labels.x"),
            column("Status", "string", "{.status}"),
            column("Phase", "string", ".status.phase"),
            column("First", "string", ".status.ipv4[0]"),
            column("Manager", "string", ".metadata.managedFields[0].manager"),
            column("Deep", "string", ".kind.not.there"),
            column("Created", "date", ".metadata.creationTimestamp"),
            column("Odd", "integer", r#".we"ird"#),
            column("NotAPath", "string", "status"),
        ];
        let stored: Value =
            serde_json::from_str(&stored_table(&odd_columns, &texts, 7).unwrap()).unwrap();
        assert_eq!(stored, table(&odd_columns, &objects, 7, None));
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
