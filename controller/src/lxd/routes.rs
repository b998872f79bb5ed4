//! Which configured endpoint is which cluster member, learned from the member list, so that a
//! call about an instance goes to the member that holds it.
//!
//! Any member answers any call, but one that does not hold the instance forwards it to the one
//! that does: every create, state change and operation wait sent through the first endpoint
//! costs that member's CPU as well as the target's. In a rollout on one machine that first
//! member becomes the bottleneck (observed: node1's daemon spent twice the CPU of the others,
//! every request having gone to it). Only endpoints the user configured are used: a member's own
//! address may not be reachable from where the operator runs, and the configured list is what
//! the user trusts.

use std::collections::HashMap;
use std::sync::Mutex;

use super::client::Endpoint;
use super::types::ClusterMember;

/// Member name → index of the configured endpoint that is that member.
#[derive(Debug, Default)]
pub(crate) struct MemberRoutes {
    by_member: Mutex<HashMap<String, usize>>,
}

impl MemberRoutes {
    /// Learns the routes from a member list (each member's `url` is its cluster address).
    pub(crate) fn learn(&self, members: &[ClusterMember], endpoints: &[Endpoint]) {
        let routes: HashMap<String, usize> = members
            .iter()
            .filter_map(|member| {
                let address = Endpoint::parse(&member.url).ok()?;
                let index = endpoints.iter().position(|e| *e == address)?;
                Some((member.server_name.clone(), index))
            })
            .collect();
        if let Ok(mut by_member) = self.by_member.lock() {
            *by_member = routes;
        }
    }

    /// The endpoint that is `member`, if it is configured.
    pub(crate) fn endpoint_of(&self, member: &str) -> Option<usize> {
        self.by_member.lock().ok()?.get(member).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, url: &str) -> ClusterMember {
        ClusterMember {
            server_name: name.to_owned(),
            url: url.to_owned(),
            ..ClusterMember::default()
        }
    }

    #[test]
    fn a_member_is_routed_to_the_configured_endpoint_with_its_address() {
        let endpoints = vec![
            Endpoint::parse("https://127.0.0.1:8443").unwrap(),
            Endpoint::parse("https://127.0.0.2").unwrap(),
        ];
        let routes = MemberRoutes::default();
        routes.learn(
            &[
                member("node1", "https://127.0.0.1:8443"),
                member("node2", "https://127.0.0.2:8443"),
                // Not configured: never used, whatever it says.
                member("node3", "https://127.0.0.3:8443"),
            ],
            &endpoints,
        );
        assert_eq!(routes.endpoint_of("node1"), Some(0));
        assert_eq!(routes.endpoint_of("node2"), Some(1));
        assert_eq!(routes.endpoint_of("node3"), None);
        assert_eq!(routes.endpoint_of("elsewhere"), None);
    }
}
