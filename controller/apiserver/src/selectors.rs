//! Label and field selectors, as `kubectl get -l` and `--field-selector` send them.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A label or field selector that cannot be parsed, naming the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector requirement has no operator and is not a bare key.
    #[error("unable to parse requirement: {part:?}")]
    Requirement {
        /// The requirement, trimmed.
        part: String,
    },
    /// A field selector term has none of `=`, `==` and `!=`.
    #[error("invalid field selector: {part:?}")]
    FieldTerm {
        /// The term, trimmed.
        part: String,
    },
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((key, values)) = split_set(part, " notin ") {
                Requirement::NotIn(key, values)
            } else if let Some((key, values)) = split_set(part, " in ") {
                Requirement::In(key, values)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part.to_owned())
            } else {
                return Err(SelectorError::Requirement {
                    part: part.to_owned(),
                });
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether the object's labels match.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|v| !values.iter().any(|x| x == v))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn split_set(part: &str, operator: &str) -> Option<(String, Vec<String>)> {
    let (key, rest) = part.split_once(operator)?;
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((
        key.trim().to_owned(),
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    ))
}

/// A parsed field selector: `path=value` and `path!=value` terms on dotted paths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `metadata.name=x,involvedObject.uid!=y`.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((path, value)) = part.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                (path, true, value)
            } else {
                return Err(SelectorError::FieldTerm {
                    part: part.to_owned(),
                });
            };
            terms.push((path.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    /// The value a term requires of `metadata.name`, for a watch of one object.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(path, equal, _)| path == "metadata.name" && *equal)
            .map(|(_, _, v)| v.as_str())
    }

    /// Whether the object matches.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let mut current = object;
            for segment in path.split('.') {
                current = &current[segment];
            }
            let actual = match current {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_label_operator() {
        let object = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (selector, expected) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (db,web)", true),
            ("app notin (db,web)", false),
            ("tier", true),
            ("!tier", false),
            ("missing", false),
            ("!missing", true),
            ("app=web,tier in (front)", true),
            ("", true),
            ("app notin (db)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(selector).unwrap().matches(&object),
                expected,
                "{selector}"
            );
        }
    }

    #[test]
    fn field_selectors_on_dotted_paths() {
        let event = json!({"metadata": {"name": "e", "namespace": "default"}, "involvedObject": {"kind": "LxdContainer", "uid": "u1"}});
        let selector = FieldSelector::parse(
            "involvedObject.kind=LxdContainer,involvedObject.uid=u1,metadata.namespace=default",
        )
        .unwrap();
        assert!(selector.matches(&event));
        assert!(
            !FieldSelector::parse("metadata.name!=e")
                .unwrap()
                .matches(&event)
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=web-1").unwrap().name(),
            Some("web-1")
        );
    }

    #[test]
    fn a_broken_part_is_named_as_the_api_answers_it() {
        let label = LabelSelector::parse("app=web, app ~ web").unwrap_err();
        assert_eq!(
            label,
            SelectorError::Requirement {
                part: "app ~ web".to_owned()
            }
        );
        assert_eq!(
            label.to_string(),
            "unable to parse requirement: \"app ~ web\""
        );
        let field = FieldSelector::parse("metadata.name").unwrap_err();
        assert_eq!(
            field.to_string(),
            "invalid field selector: \"metadata.name\""
        );
    }
}

/// Properties over generated selectors and labels: any text is parsed or refused (never a
/// panic), and each operator means what Kubernetes says it means.
#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn labelled(labels: &BTreeMap<String, String>) -> Value {
        json!({"metadata": {"name": "web", "labels": labels}})
    }

    proptest! {
        #[test]
        fn any_text_is_parsed_or_refused(text in "\\PC{0,40}", near in "[a-c=!,() in]{0,30}") {
            for text in [&text, &near] {
                let _ = LabelSelector::parse(text).map(|s| s.matches(&json!({})));
                let _ = FieldSelector::parse(text).map(|s| s.matches(&json!({})));
            }
        }

        #[test]
        fn each_label_operator_matches_as_kubernetes_defines_it(
            labels in prop::collection::btree_map("[a-c]", "[x-z]", 0..3),
            key in "[a-c]",
            value in "[x-z]",
            values in prop::collection::vec("[x-z]", 1..3),
        ) {
            let object = labelled(&labels);
            let has = labels.get(&key);
            let set = values.join(",");
            let matches = |text: String| LabelSelector::parse(&text).unwrap().matches(&object);
            prop_assert_eq!(matches(format!("{key}={value}")), has == Some(&value));
            prop_assert_eq!(matches(format!("{key}=={value}")), has == Some(&value));
            prop_assert_eq!(matches(format!("{key}!={value}")), has != Some(&value));
            prop_assert_eq!(matches(format!("{key} in ({set})")), has.is_some_and(|v| values.contains(v)));
            prop_assert_eq!(matches(format!("{key} notin ({set})")), !has.is_some_and(|v| values.contains(v)));
            prop_assert_eq!(matches(key.clone()), has.is_some());
            prop_assert_eq!(matches(format!("!{key}")), has.is_none());
            prop_assert_eq!(
                matches(format!("{key},{key} in ({set})")),
                has.is_some() && has.is_some_and(|v| values.contains(v))
            );
        }

        #[test]
        fn a_field_selector_on_the_name_matches_that_name_only(name in "[a-c]{1,3}", asked in "[a-c]{1,3}") {
            let object = json!({"metadata": {"name": name}});
            let equal = FieldSelector::parse(&format!("metadata.name={asked}")).unwrap();
            let unequal = FieldSelector::parse(&format!("metadata.name!={asked}")).unwrap();
            prop_assert_eq!(equal.matches(&object), name == asked);
            prop_assert_eq!(unequal.matches(&object), name != asked);
            prop_assert_eq!(equal.name(), Some(asked.as_str()));
        }
    }
}
