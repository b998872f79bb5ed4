//! Kubernetes label selectors (`matchLabels`, `matchExpressions`) against a label map.

use std::collections::BTreeMap;

use lxd_operator_crds::shared::LabelSelector;

/// Whether `labels` match `selector`. An empty selector matches everything.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    lxd_operator_crds::shared::selector_matches(selector, labels)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn match_labels_and_expressions() {
        let labels = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "front".to_owned()),
        ]);
        let requirement = |key: &str, operator: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        };
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
            match_expressions: Some(vec![
                requirement("tier", "In", &["front", "back"]),
                requirement("zone", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(&selector, &labels));
        let other = LabelSelector {
            match_expressions: Some(vec![requirement("app", "NotIn", &["web"])]),
            ..LabelSelector::default()
        };
        assert!(!matches(&other, &labels));
        assert!(matches(&LabelSelector::default(), &labels));
    }
}
