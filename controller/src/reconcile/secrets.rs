//! Which namespaces' Secrets the operator reads: an LxdCluster names its client certificate
//! and trust tokens by namespace, and whoever may write an LxdCluster must not get the
//! operator to read (and use) a Secret of a namespace they cannot read themselves.

use std::fmt;
use std::str::FromStr;

/// The namespaces whose Secrets LxdClusters may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretScope {
    /// Only this one: the operator's own namespace by default.
    Namespace(String),
    /// Every namespace (`*`), for an operator that was granted reading Secrets everywhere.
    Any,
}

impl SecretScope {
    /// Refuses a reference to a Secret in `namespace` outside the scope, saying the rule
    /// (nothing is read).
    pub fn check(&self, namespace: &str) -> Result<(), String> {
        match self {
            SecretScope::Any => Ok(()),
            SecretScope::Namespace(allowed) if allowed == namespace => Ok(()),
            SecretScope::Namespace(allowed) => Err(format!(
                "Secret in namespace {namespace:?}, but the operator reads Secrets only in namespace {allowed:?} (its own; --secrets-namespace, or the chart's rbac.secretsNamespace, widens it)"
            )),
        }
    }
}

impl FromStr for SecretScope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "*" => Ok(SecretScope::Any),
            "" => Err("a namespace name, or * for every namespace".to_owned()),
            name => Ok(SecretScope::Namespace(name.to_owned())),
        }
    }
}

impl fmt::Display for SecretScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretScope::Namespace(name) => f.write_str(name),
            SecretScope::Any => f.write_str("*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_outside_the_operators_namespace_is_refused_naming_field_and_rule() {
        let scope: SecretScope = "lxd-operator".parse().unwrap();
        assert_eq!(scope.check("lxd-operator"), Ok(()));
        let refused = scope.check("team-a").unwrap_err();
        assert!(
            refused.starts_with("Secret in namespace \"team-a\""),
            "{refused}"
        );
        assert!(
            refused.contains("only in namespace \"lxd-operator\""),
            "{refused}"
        );
        let any: SecretScope = "*".parse().unwrap();
        assert_eq!(any.check("team-a"), Ok(()));
        assert!("".parse::<SecretScope>().is_err());
    }
}
