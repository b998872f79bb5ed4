//! Validation of custom resources against a CRD's `openAPIV3Schema`, with the semantics and the
//! error texts of the Kubernetes API server, so that `kubectl` users see the messages they know
//! (`spec.state: Unsupported value: "Paused": supported values: "Running", "Stopped"`).
//!
//! Covered: type, nullable, required, properties, additionalProperties, items, enum, pattern,
//! minimum/maximum (with boolean exclusive flags), minLength/maxLength, minItems/maxItems,
//! minProperties/maxProperties, uniqueItems, `x-kubernetes-list-type: map` (no key twice), the
//! two CEL rules our CRDs use (`x-kubernetes-validations`: a field unique across a list, and a
//! set's selector matching its template's labels, known by its text),
//! multipleOf, allOf/anyOf/oneOf/not,
//! `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`. Formats are not
//! checked (the API server checks only a few, and none our CRDs use). Unknown fields are not an
//! error here: pruning and strict field validation are separate steps.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, ValidationRule,
};
use lxd_operator_crds::set::SELECTOR_MATCHES_TEMPLATE_RULE;
use lxd_operator_crds::shared::{LabelSelector, selector_matches};
use regex::Regex;
use serde_json::Value;

/// Why a field is invalid, named as the Kubernetes API reports it in `details.causes[].reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// A value breaks a rule (pattern, range, length, ...).
    Invalid,
    /// A value is not one of the enumerated ones.
    NotSupported,
    /// A value has the wrong JSON type.
    TypeInvalid,
    /// A list or map has too many entries.
    TooMany,
    /// A string is too long.
    TooLong,
    /// A list holds the same entry twice.
    Duplicate,
}

impl FieldErrorKind {
    /// The `reason` of a `StatusCause`.
    pub fn cause_reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
        }
    }
}

/// One invalid field: its path (`spec.resources.cpu`), why, and the message kubectl prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, as Kubernetes writes it: `spec.endpoints[0]`.
    pub field: String,
    /// The kind of failure.
    pub kind: FieldErrorKind,
    /// Human-readable message without the path, e.g. `Required value`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A schema whose patterns were compiled once, ready to validate many objects.
#[derive(Debug)]
pub struct SchemaValidator {
    schema: JSONSchemaProps,
    patterns: HashMap<String, Regex>,
}

/// A pattern in the schema that is not a valid regular expression.
#[derive(Debug, thiserror::Error)]
#[error("schema pattern {pattern:?} is not a valid regular expression: {source}")]
pub struct InvalidPattern {
    pattern: String,
    #[source]
    source: regex::Error,
}

impl SchemaValidator {
    /// Compiles every `pattern` of the schema.
    pub fn new(schema: JSONSchemaProps) -> Result<Self, InvalidPattern> {
        let mut patterns = HashMap::new();
        collect_patterns(&schema, &mut patterns)?;
        Ok(Self { schema, patterns })
    }

    /// Every field of `value` that breaks the schema. `metadata` is not looked into: object
    /// metadata has rules of its own.
    pub fn validate(&self, value: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.check(&self.schema, value, &Path::root(), &mut errors);
        errors
    }

    fn check(
        &self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &Path,
        errors: &mut Vec<FieldError>,
    ) {
        if value.is_null() {
            // Nullable or not, a null passes here: the API server prunes the nulls of
            // non-nullable fields before validating, so a null only matters to `required`,
            // which the parent object checks.
            return;
        }
        let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
        if int_or_string {
            if !(value.is_string() || is_integer(value)) {
                errors.push(path.error(
                    FieldErrorKind::TypeInvalid,
                    format!(
                        "Invalid value: {}: {} in body must be of type integer-or-string: {}",
                        quote(value),
                        path,
                        json_type(value)
                    ),
                ));
                return;
            }
        } else if let Some(expected) = schema.type_.as_deref()
            && !matches_type(expected, value)
        {
            errors.push(path.error(
                FieldErrorKind::TypeInvalid,
                format!(
                    "Invalid value: {}: {} in body must be of type {expected}: {}",
                    quote(value),
                    path,
                    quote_str(json_type(value))
                ),
            ));
            return;
        }

        self.check_enum(schema, value, path, errors);
        self.check_string(schema, value, path, errors);
        check_number(schema, value, path, errors);
        match value {
            Value::Object(map) => self.check_object(schema, map, path, errors),
            Value::Array(items) => self.check_array(schema, items, path, errors),
            _ => {}
        }
        self.check_combinators(schema, value, path, errors);
    }

    fn check_enum(
        &self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &Path,
        errors: &mut Vec<FieldError>,
    ) {
        let Some(allowed) = &schema.enum_ else { return };
        if allowed.iter().any(|candidate| candidate.0 == *value) {
            return;
        }
        let supported: Vec<String> = allowed
            .iter()
            .map(|candidate| quote(&candidate.0))
            .collect();
        errors.push(path.error(
            FieldErrorKind::NotSupported,
            format!(
                "Unsupported value: {}: supported values: {}",
                quote(value),
                supported.join(", ")
            ),
        ));
    }

    fn check_string(
        &self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &Path,
        errors: &mut Vec<FieldError>,
    ) {
        let Value::String(text) = value else { return };
        let length = text.chars().count() as i64;
        if let Some(max) = schema.max_length
            && length > max
        {
            errors.push(path.error(
                FieldErrorKind::TooLong,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = schema.min_length
            && length < min
        {
            errors.push(path.error(
                FieldErrorKind::Invalid,
                format!(
                    "Invalid value: {}: {} in body should be at least {min} chars long",
                    quote(value),
                    path
                ),
            ));
        }
        if let Some(pattern) = &schema.pattern
            && let Some(regex) = self.patterns.get(pattern)
            && !regex.is_match(text)
        {
            errors.push(path.error(
                FieldErrorKind::Invalid,
                format!(
                    "Invalid value: {}: {} in body should match '{pattern}'",
                    quote(value),
                    path
                ),
            ));
        }
    }

    fn check_object(
        &self,
        schema: &JSONSchemaProps,
        map: &serde_json::Map<String, Value>,
        path: &Path,
        errors: &mut Vec<FieldError>,
    ) {
        for required in schema.required.iter().flatten() {
            if map.get(required).is_none_or(Value::is_null) {
                errors.push(
                    path.child(required)
                        .error(FieldErrorKind::Required, "Required value".to_owned()),
                );
            }
        }
        let count = map.len() as i64;
        if let Some(max) = schema.max_properties
            && count > max
        {
            errors.push(path.error(
                FieldErrorKind::TooMany,
                format!("Too many: {count}: must have at most {max} items"),
            ));
        }
        if let Some(min) = schema.min_properties
            && count < min
        {
            errors.push(path.error(
                FieldErrorKind::Invalid,
                format!(
                    "Invalid value: {count}: {path} in body should have at least {min} properties"
                ),
            ));
        }
        for (key, child) in map {
            let child_path = path.child(key);
            if path.is_root() && key == "metadata" {
                continue;
            }
            if let Some(property) = schema
                .properties
                .as_ref()
                .and_then(|properties| properties.get(key))
            {
                self.check(property, child, &child_path, errors);
            } else if let Some(JSONSchemaPropsOrBool::Schema(additional)) =
                &schema.additional_properties
            {
                self.check(additional, child, &child_path, errors);
            }
        }
        for rule in schema.x_kubernetes_validations.iter().flatten() {
            if rule.rule == SELECTOR_MATCHES_TEMPLATE_RULE
                && let Some(error) = selector_rule(schema, rule, map, path)
            {
                errors.push(error);
            }
        }
    }

    fn check_array(
        &self,
        schema: &JSONSchemaProps,
        items: &[Value],
        path: &Path,
        errors: &mut Vec<FieldError>,
    ) {
        let count = items.len() as i64;
        if let Some(max) = schema.max_items
            && count > max
        {
            errors.push(path.error(
                FieldErrorKind::TooMany,
                format!("Too many: {count}: must have at most {max} items"),
            ));
        }
        if let Some(min) = schema.min_items
            && count < min
        {
            errors.push(path.error(
                FieldErrorKind::Invalid,
                format!("Invalid value: {count}: {path} in body should have at least {min} items"),
            ));
        }
        if schema.unique_items == Some(true) {
            for (index, item) in items.iter().enumerate() {
                if items[..index].contains(item) {
                    errors.push(path.index(index).error(
                        FieldErrorKind::Duplicate,
                        format!("Duplicate value: {}", quote(item)),
                    ));
                }
            }
        }
        for rule in schema.x_kubernetes_validations.iter().flatten() {
            if let Some(field) = unique_field_rule(&rule.rule) {
                let key = |item: &Value| item.get(&field).cloned().unwrap_or(Value::Null);
                let repeated = items.iter().enumerate().any(|(index, item)| {
                    items[..index]
                        .iter()
                        .any(|earlier| key(earlier) == key(item))
                });
                if repeated {
                    let message = rule
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("failed rule: {}", rule.rule));
                    errors.push(path.error(
                        FieldErrorKind::Invalid,
                        format!("Invalid value: \"array\": {message}"),
                    ));
                }
            }
        }
        if schema.x_kubernetes_list_type.as_deref() == Some("map") {
            // A list of objects keyed by `x-kubernetes-list-map-keys`: no key twice.
            let keys = schema
                .x_kubernetes_list_map_keys
                .clone()
                .unwrap_or_default();
            let key_of = |item: &Value| -> serde_json::Map<String, Value> {
                keys.iter()
                    .map(|key| (key.clone(), item.get(key).cloned().unwrap_or(Value::Null)))
                    .collect()
            };
            for (index, item) in items.iter().enumerate() {
                let key = key_of(item);
                if items[..index].iter().any(|earlier| key_of(earlier) == key) {
                    errors.push(path.index(index).error(
                        FieldErrorKind::Duplicate,
                        format!("Duplicate value: {}", Value::Object(key)),
                    ));
                }
            }
        }
        match &schema.items {
            Some(JSONSchemaPropsOrArray::Schema(item_schema)) => {
                for (index, item) in items.iter().enumerate() {
                    self.check(item_schema, item, &path.index(index), errors);
                }
            }
            Some(JSONSchemaPropsOrArray::Schemas(item_schemas)) => {
                for (index, (item, item_schema)) in items.iter().zip(item_schemas).enumerate() {
                    self.check(item_schema, item, &path.index(index), errors);
                }
            }
            None => {}
        }
    }

    fn check_combinators(
        &self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &Path,
        errors: &mut Vec<FieldError>,
    ) {
        for sub in schema.all_of.iter().flatten() {
            self.check(sub, value, path, errors);
        }
        if let Some(any_of) = &schema.any_of
            && !any_of.iter().any(|sub| self.passes(sub, value, path))
        {
            // int-or-string's anyOf of {integer, string} was already enforced as a type check.
            if schema.x_kubernetes_int_or_string != Some(true) {
                errors.push(path.error(
                    FieldErrorKind::Invalid,
                    format!(
                        "Invalid value: {}: {path} in body must match at least one schema in anyOf",
                        quote(value)
                    ),
                ));
            }
        }
        if let Some(one_of) = &schema.one_of {
            let passing = one_of
                .iter()
                .filter(|sub| self.passes(sub, value, path))
                .count();
            if passing != 1 {
                let detail = if passing == 0 {
                    "must validate one and only one schema (oneOf). Found none valid"
                } else {
                    "must validate one and only one schema (oneOf). Found more than one valid"
                };
                errors.push(path.error(
                    FieldErrorKind::Invalid,
                    format!("Invalid value: {}: {path} in body {detail}", quote(value)),
                ));
            }
        }
        if let Some(not) = &schema.not
            && self.passes(not, value, path)
        {
            errors.push(path.error(
                FieldErrorKind::Invalid,
                format!(
                    "Invalid value: {}: {path} in body must not validate the schema (not)",
                    quote(value)
                ),
            ));
        }
    }

    fn passes(&self, schema: &JSONSchemaProps, value: &Value, path: &Path) -> bool {
        let mut scratch = Vec::new();
        self.check(schema, value, path, &mut scratch);
        scratch.is_empty()
    }
}

fn check_number(
    schema: &JSONSchemaProps,
    value: &Value,
    path: &Path,
    errors: &mut Vec<FieldError>,
) {
    let Some(number) = value.as_f64() else { return };
    if let Some(minimum) = schema.minimum {
        let exclusive = schema.exclusive_minimum == Some(true);
        if number < minimum || (exclusive && number == minimum) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(path.error(
                FieldErrorKind::Invalid,
                format!(
                    "Invalid value: {}: {path} in body should be {relation} {}",
                    quote(value),
                    format_number(minimum)
                ),
            ));
        }
    }
    if let Some(maximum) = schema.maximum {
        let exclusive = schema.exclusive_maximum == Some(true);
        if number > maximum || (exclusive && number == maximum) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(path.error(
                FieldErrorKind::Invalid,
                format!(
                    "Invalid value: {}: {path} in body should be {relation} {}",
                    quote(value),
                    format_number(maximum)
                ),
            ));
        }
    }
    if let Some(factor) = schema.multiple_of
        && factor > 0.0
        && ((number / factor).round() - number / factor).abs() > 1e-9
    {
        errors.push(path.error(
            FieldErrorKind::Invalid,
            format!(
                "Invalid value: {}: {path} in body should be a multiple of {}",
                quote(value),
                format_number(factor)
            ),
        ));
    }
}

/// The field a CEL rule of the form `self.all(x, self.exists_one(y, y.f == x.f))` says must be
/// unique across a list: the one rule shape our CRDs use, evaluated here without CEL. Other
/// rules are left to a real Kubernetes API server.
fn unique_field_rule(rule: &str) -> Option<String> {
    static SHAPE: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(
            r"^self\.all\((\w+),\s*self\.exists_one\((\w+),\s*(\w+)\.(\w+)\s*==\s*(\w+)\.(\w+)\)\)$",
        )
        .ok()
    });
    let captures = SHAPE.as_ref()?.captures(rule.trim())?;
    let part = |i: usize| captures.get(i).map_or("", |m| m.as_str());
    let (outer, inner) = (part(1), part(2));
    let same_field = part(4) == part(6);
    let pairs = (part(3) == inner && part(5) == outer) || (part(3) == outer && part(5) == inner);
    (same_field && pairs && outer != inner).then(|| part(4).to_owned())
}

/// `SELECTOR_MATCHES_TEMPLATE_RULE` (known by its text, evaluated without CEL) on the object
/// that holds `selector` and `template`: the error when the selector is empty, or does not
/// match the template's labels, at the rule's `fieldPath`. Stricter than the CEL text a real
/// Kubernetes API server evaluates, which checks `matchLabels` only and lets an empty selector
/// pass: here `matchExpressions` must match too (an unknown operator, or `In` without values,
/// matches nothing), and an empty selector is refused as Kubernetes refuses one for a
/// StatefulSet, since it would select every container in the namespace.
fn selector_rule(
    schema: &JSONSchemaProps,
    rule: &ValidationRule,
    map: &serde_json::Map<String, Value>,
    path: &Path,
) -> Option<FieldError> {
    // A missing or mistyped selector is reported by `required` and `type`.
    let selector = map.get("selector").and_then(Value::as_object)?;
    let labels = map
        .get("template")
        .and_then(|template| template.get("metadata"))
        .and_then(|metadata| metadata.get("labels"))
        .and_then(Value::as_object);
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    let message = if match_labels.is_none_or(serde_json::Map::is_empty)
        && expressions.is_none_or(Vec::is_empty)
    {
        "empty selector is invalid for lxdcontainerset".to_owned()
    } else {
        // Shapes the schema refuses are reported there; here they match nothing.
        let typed: Option<LabelSelector> =
            serde_json::from_value(Value::Object(selector.clone())).ok();
        let labels: BTreeMap<String, String> = labels
            .and_then(|labels| serde_json::from_value(Value::Object(labels.clone())).ok())
            .unwrap_or_default();
        if typed.is_some_and(|selector| selector_matches(&selector, &labels)) {
            return None;
        }
        rule.message
            .clone()
            .unwrap_or_else(|| format!("failed rule: {}", rule.rule))
    };
    // `fieldPath` is relative to the object the rule is declared on (`.selector`).
    let field = rule
        .field_path
        .iter()
        .flat_map(|field_path| field_path.split('.'))
        .filter(|field| !field.is_empty())
        .fold(path.clone(), |path, field| path.child(field));
    // As Kubernetes reports a failed rule: the type of the value the rule is declared on.
    let declared_on = quote_str(schema.type_.as_deref().unwrap_or("object"));
    Some(field.error(
        FieldErrorKind::Invalid,
        format!("Invalid value: {declared_on}: {message}"),
    ))
}

fn collect_patterns(
    schema: &JSONSchemaProps,
    patterns: &mut HashMap<String, Regex>,
) -> Result<(), InvalidPattern> {
    if let Some(pattern) = &schema.pattern
        && !patterns.contains_key(pattern)
    {
        let regex = Regex::new(pattern).map_err(|source| InvalidPattern {
            pattern: pattern.clone(),
            source,
        })?;
        patterns.insert(pattern.clone(), regex);
    }
    let children = schema
        .properties
        .iter()
        .flat_map(|properties| properties.values())
        .chain(match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(additional)) => Some(additional.as_ref()),
            _ => None,
        })
        .chain(match &schema.items {
            Some(JSONSchemaPropsOrArray::Schema(items)) => vec![items.as_ref()],
            Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter().collect(),
            None => vec![],
        })
        .chain(schema.all_of.iter().flatten())
        .chain(schema.any_of.iter().flatten())
        .chain(schema.one_of.iter().flatten())
        .chain(schema.not.as_deref());
    for child in children {
        collect_patterns(child, patterns)?;
    }
    Ok(())
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn matches_type(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as the API server quotes it in messages: strings in double quotes, numbers bare.
fn quote(value: &Value) -> String {
    match value {
        Value::String(text) => quote_str(text),
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

fn quote_str(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn format_number(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        format!("{number}")
    }
}

/// A field path in Kubernetes' notation: `spec.endpoints[0]`.
#[derive(Debug, Clone)]
struct Path(String);

impl Path {
    fn root() -> Self {
        Path(String::new())
    }

    fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    fn child(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }

    fn error(&self, kind: FieldErrorKind, message: String) -> FieldError {
        FieldError {
            field: self.0.clone(),
            kind,
            message,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("body")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// The rule an object's name follows, as the Kubernetes API server checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A lowercase RFC 1123 label of up to 63 characters (Namespaces).
    DnsLabel,
    /// A lowercase RFC 1123 subdomain of up to 253 characters (every other kind).
    DnsSubdomain,
}

impl NameRule {
    /// `metadata.name`'s error when `name` breaks the rule.
    pub fn check(self, name: &str) -> Result<(), FieldError> {
        // Compiled once: compiling costs more than the rest of a create.
        static DNS_LABEL: LazyLock<Option<Regex>> =
            LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").ok());
        static DNS_SUBDOMAIN: LazyLock<Option<Regex>> = LazyLock::new(|| {
            Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok()
        });
        let (compiled, max, rule) = match self {
            NameRule::DnsLabel => (
                &DNS_LABEL,
                63,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            ),
            NameRule::DnsSubdomain => (
                &DNS_SUBDOMAIN,
                253,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ),
        };
        let violation = if name.len() > max {
            format!("must be no more than {max} characters")
        } else if !compiled.as_ref().is_some_and(|r| r.is_match(name)) {
            rule.to_owned()
        } else {
            return Ok(());
        };
        Err(FieldError {
            field: "metadata.name".to_owned(),
            kind: FieldErrorKind::Invalid,
            message: format!("Invalid value: \"{name}\": {violation}"),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use lxd_operator_crds::generate::all_crds;
    use serde_json::json;

    use super::*;

    /// The schema of one of our kinds, as its generated CRD has it.
    pub(crate) fn schema_of(kind: &str) -> JSONSchemaProps {
        let crd = all_crds()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .unwrap();
        crd.spec.versions[0]
            .schema
            .clone()
            .unwrap()
            .open_api_v3_schema
            .unwrap()
    }

    fn validator_for(kind: &str) -> SchemaValidator {
        SchemaValidator::new(schema_of(kind)).unwrap()
    }

    fn container(spec: Value) -> Value {
        json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
               "metadata": {"name": "web-1", "namespace": "default"}, "spec": spec})
    }

    fn errors_for(spec: Value) -> Vec<String> {
        validator_for("LxdContainer")
            .validate(&container(spec))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The errors of an LxdCluster whose spec lists these servers.
    fn cluster_errors(servers: Value) -> Vec<String> {
        let cluster = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdCluster",
            "metadata": {"name": "formed"}, "spec": {"servers": servers}});
        validator_for("LxdCluster")
            .validate(&cluster)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_server_address_listed_twice_breaks_the_crds_uniqueness_rule() {
        let errors = cluster_errors(json!([
            {"name": "node4", "address": "https://127.0.0.4:8443"},
            {"name": "node5", "address": "https://127.0.0.4:8443"}]));
        assert_eq!(
            errors,
            [r#"spec.servers: Invalid value: "array": each server's address must be unique"#]
        );
        assert_eq!(
            unique_field_rule("self.all(s, self.exists_one(t, t.address == s.address))"),
            Some("address".to_owned())
        );
        assert_eq!(unique_field_rule("self.all(s, s.address != '')"), None);
        assert_eq!(
            unique_field_rule("self.all(s, self.exists_one(t, t.name == s.address))"),
            None
        );
    }

    /// The errors of an LxdContainerSet with this selector over a template labelled `labels`.
    fn set_errors(selector: Value, labels: Value) -> Vec<String> {
        let set = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainerSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": selector, "template": {"metadata": {"labels": labels},
                "spec": {"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}}}}});
        validator_for("LxdContainerSet")
            .validate(&set)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_sets_selector_must_match_its_templates_labels_by_labels_and_expressions() {
        let labels = json!({"app": "web", "tier": "front"});
        let valid = [
            json!({"matchLabels": {"app": "web"}}),
            json!({"matchLabels": {"app": "web", "tier": "front"}}),
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]},
                {"key": "tier", "operator": "NotIn", "values": ["back"]},
                {"key": "tier", "operator": "Exists"}, {"key": "zone", "operator": "DoesNotExist"}]}),
        ];
        for selector in valid {
            assert_eq!(
                set_errors(selector.clone(), labels.clone()),
                Vec::<String>::new(),
                "{selector}"
            );
        }
        let mismatch = r#"spec.selector: Invalid value: "object": selector does not match the template's labels"#;
        let invalid = [
            json!({"matchLabels": {"app": "api"}}),
            json!({"matchLabels": {"app": "web", "zone": "a"}}),
            json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]}),
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
            json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
            json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}),
            json!({"matchExpressions": [{"key": "app", "operator": "Matches", "values": ["web"]}]}),
        ];
        for selector in invalid {
            assert_eq!(
                set_errors(selector.clone(), labels.clone()),
                [mismatch],
                "{selector}"
            );
        }
        assert_eq!(
            set_errors(json!({"matchLabels": {"app": "web"}}), Value::Null),
            [mismatch]
        );
        for empty in [
            json!({}),
            json!({"matchLabels": {}, "matchExpressions": []}),
        ] {
            assert_eq!(
                set_errors(empty, labels.clone()),
                [
                    r#"spec.selector: Invalid value: "object": empty selector is invalid for lxdcontainerset"#
                ]
            );
        }
    }

    #[test]
    fn a_server_listed_twice_by_name_is_refused_as_a_duplicate_naming_the_entry() {
        let errors = cluster_errors(json!([
            {"name": "node4", "address": "https://127.0.0.4:8443"},
            {"name": "node5", "address": "https://127.0.0.5:8443"},
            {"name": "node4", "address": "https://127.0.0.6:8443"}]));
        assert_eq!(
            errors,
            [r#"spec.servers[2]: Duplicate value: {"name":"node4"}"#]
        );
    }

    #[test]
    fn a_complete_container_is_valid() {
        let spec = json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"},
            "instanceName": "web-1", "resources": {"cpu": 0.5, "memory": "256Mi"}, "state": "Frozen",
            "placement": {"strategy": "bin-pack", "target": "node2",
                          "antiAffinity": [{"selector": {"matchLabels": {"app": "web"}}, "topology": "FailureDomain"}]}});
        assert_eq!(errors_for(spec), Vec::<String>::new());
    }

    #[test]
    fn a_bad_instance_name_is_refused_naming_the_field_and_the_rule() {
        for bad in ["web_1", "-web", "1web", "web-", &"a".repeat(64)] {
            let errors = errors_for(
                json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "instanceName": bad}),
            );
            assert!(
                errors.iter().any(|e| e.starts_with("spec.instanceName: ")
                    && (e.contains("should match") || e.contains("Too long"))),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn a_negative_or_zero_cpu_is_refused() {
        for cpu in [json!(-1), json!(0), json!(-0.5)] {
            let errors = errors_for(
                json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "resources": {"cpu": cpu}}),
            );
            assert_eq!(
                errors,
                [format!(
                    "spec.resources.cpu: Invalid value: {cpu}: spec.resources.cpu in body should be greater than 0"
                )]
            );
        }
    }

    #[test]
    fn an_unknown_desired_state_is_refused_with_the_supported_values() {
        let errors = errors_for(
            json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "state": "Paused"}),
        );
        assert_eq!(
            errors,
            [
                r#"spec.state: Unsupported value: "Paused": supported values: "Running", "Stopped", "Frozen""#
            ]
        );
    }

    #[test]
    fn memory_must_be_a_quantity() {
        let ok = errors_for(
            json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "resources": {"memory": 268435456}}),
        );
        assert!(ok.is_empty(), "{ok:?}");
        let errors = errors_for(
            json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "resources": {"memory": "256 MB"}}),
        );
        assert!(
            errors.len() == 1
                && errors[0].starts_with("spec.resources.memory: Invalid value: \"256 MB\""),
            "{errors:?}"
        );
        let errors = errors_for(
            json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "resources": {"memory": true}}),
        );
        assert!(
            errors.len() == 1 && errors[0].contains("integer-or-string"),
            "{errors:?}"
        );
    }

    #[test]
    fn missing_required_fields_are_each_named() {
        let errors =
            validator_for("LxdContainer").validate(&container(json!({"state": "Running"})));
        let fields: Vec<(&str, FieldErrorKind)> =
            errors.iter().map(|e| (e.field.as_str(), e.kind)).collect();
        assert_eq!(
            fields,
            [
                ("spec.clusterRef", FieldErrorKind::Required),
                ("spec.image", FieldErrorKind::Required)
            ]
        );
    }

    #[test]
    fn an_image_needs_exactly_one_of_alias_and_fingerprint() {
        let both = errors_for(
            json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox", "fingerprint": "0123456789abcdef"}}),
        );
        assert!(
            both.iter()
                .any(|e| e.starts_with("spec.image: ") && e.contains("oneOf")),
            "{both:?}"
        );
        let neither = errors_for(json!({"clusterRef": {"name": "local"}, "image": {}}));
        assert!(
            neither
                .iter()
                .any(|e| e.starts_with("spec.image: ") && e.contains("oneOf")),
            "{neither:?}"
        );
    }

    #[test]
    fn a_wrong_type_is_refused() {
        let errors = errors_for(
            json!({"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}, "profiles": "default"}),
        );
        assert_eq!(
            errors,
            [
                r#"spec.profiles: Invalid value: "default": spec.profiles in body must be of type array: "string""#
            ]
        );
    }

    #[test]
    fn cluster_endpoints_must_be_https_or_unix_urls() {
        let cluster = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdCluster", "metadata": {"name": "local"},
            "spec": {"endpoints": ["https://127.0.0.1:8443", "http://10.0.0.1:8443"]}});
        let errors: Vec<String> = validator_for("LxdCluster")
            .validate(&cluster)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(r#"spec.endpoints[1]: Invalid value: "http://10.0.0.1:8443""#),
            "{errors:?}"
        );
    }

    /// Every manifest in examples/, with its file and kind.
    pub(crate) fn example_manifests() -> Vec<(std::path::PathBuf, String, Value)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut manifests = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in text.split("\n---\n") {
                let manifest: Value = serde_saphyr::from_str(doc).unwrap();
                let kind = manifest["kind"].as_str().unwrap().to_owned();
                manifests.push((path.clone(), kind, manifest));
            }
        }
        manifests
    }

    #[test]
    fn every_example_manifest_is_valid() {
        for (path, kind, manifest) in example_manifests() {
            let errors = validator_for(&kind).validate(&manifest);
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        }
    }
}
