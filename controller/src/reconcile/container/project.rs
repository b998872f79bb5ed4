//! The LXD project a container lives in. With `projectMode: PerNamespace`, its namespace's
//! project is made (and kept at the namespace's quota) before anything of the container is.

use std::collections::HashMap;
use std::sync::Mutex;

use lxd_operator_crds::cluster::{LXD_DEFAULT_PROJECT, ProjectMode};
use lxd_operator_crds::quantity::parse_bytes;
use lxd_operator_crds::{LxdClusterSpec, LxdContainerStatus};

use crate::lxd::projects::{ProjectChange, ProjectIntent};
use crate::lxd::{LxdClient, LxdError};

/// The project of a container: where its instance was made (`status.project`); for a container
/// placed before projects were recorded, the cluster's `project`; for a new one, where the
/// cluster's mode puts its namespace. So a change of mode never strands an instance: only new
/// containers follow it.
pub fn project_of(
    cluster: &LxdClusterSpec,
    namespace: &str,
    status: &LxdContainerStatus,
) -> String {
    match (&status.project, &status.member) {
        (Some(project), _) => project.clone(),
        (None, Some(_)) => cluster.project.clone(),
        (None, None) => cluster.project_for(namespace),
    }
}

/// What the namespace's own project should be, when the cluster gives namespaces projects of
/// their own (never LXD's `default` project, used as it is). It shares the images and
/// profiles of LXD's `default` project (the cluster's image and the profiles an administrator
/// allows), and keeps custom storage volumes of its own, so that one team cannot mount another's.
/// Its limits follow the namespace's quota: `limits.containers` and `limits.memory`. CPU is not
/// mirrored: LXD counts whole cores (`limits.cpu`) per instance, where a quota counts fractions.
pub fn intent(
    cluster_name: &str,
    cluster: &LxdClusterSpec,
    namespace: &str,
) -> Option<ProjectIntent> {
    if cluster.project_mode != ProjectMode::PerNamespace
        || cluster.project_for(namespace) == LXD_DEFAULT_PROJECT
    {
        return None;
    }
    let quota = cluster.quotas.as_ref().and_then(|q| q.of(namespace));
    let containers = quota.and_then(|q| q.containers).map(|n| n.to_string());
    let memory = quota
        .and_then(|q| q.memory.as_ref())
        .and_then(|m| parse_bytes(m).ok())
        .map(|bytes| bytes.to_string());
    Some(ProjectIntent {
        description: format!(
            "containers of namespace {namespace} on LxdCluster {cluster_name} (made by lxd-operator)"
        ),
        created_with: [
            ("features.images", "false"),
            ("features.profiles", "false"),
            ("features.storage.volumes", "true"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect(),
        kept: [
            ("limits.containers".to_owned(), containers),
            ("limits.memory".to_owned(), memory),
        ]
        .into_iter()
        .collect(),
    })
}

/// Projects known to be as intended, per (cluster, project), so that a reconcile asks LXD only
/// when the intent changed (a quota edited) or the operator started.
#[derive(Debug, Default)]
pub struct ProjectsMade(Mutex<HashMap<(String, String), ProjectIntent>>);

impl ProjectsMade {
    /// Makes `project` as `intent` says (or keeps its limits), unless it was already.
    pub async fn ensure(
        &self,
        client: &LxdClient,
        cluster: &str,
        project: &str,
        intent: &ProjectIntent,
    ) -> Result<(), LxdError> {
        let key = (cluster.to_owned(), project.to_owned());
        if self.known(&key).as_ref() == Some(intent) {
            return Ok(());
        }
        match client.ensure_project(project, intent).await? {
            ProjectChange::Created => {
                tracing::info!(cluster, project, "made the namespace's LXD project")
            }
            ProjectChange::Updated => {
                tracing::info!(
                    cluster,
                    project,
                    "set the LXD project's limits to the namespace's quota"
                )
            }
            ProjectChange::Unchanged => {}
        }
        if let Ok(mut made) = self.0.lock() {
            made.insert(key, intent.clone());
        }
        Ok(())
    }

    fn known(&self, key: &(String, String)) -> Option<ProjectIntent> {
        self.0.lock().ok()?.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_spec() -> LxdClusterSpec {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }

    fn per_namespace() -> LxdClusterSpec {
        let mut spec = cluster_spec();
        spec.project_mode = ProjectMode::PerNamespace;
        spec
    }

    #[test]
    fn a_new_container_goes_where_the_mode_puts_its_namespace_and_a_placed_one_stays() {
        let mut spec = per_namespace();
        spec.project_prefix = "k8s-".to_owned();
        let mut status = LxdContainerStatus::default();
        assert_eq!(project_of(&spec, "team-a", &status), "k8s-team-a");
        status.member = Some("node1".to_owned());
        assert_eq!(project_of(&spec, "team-a", &status), "default");
        status.project = Some("k8s-team-a".to_owned());
        spec.project_mode = ProjectMode::Shared;
        assert_eq!(project_of(&spec, "team-a", &status), "k8s-team-a");
    }

    #[test]
    fn a_namespace_project_shares_images_and_profiles_and_mirrors_the_quota() {
        let mut spec = per_namespace();
        spec.quotas = serde_json::from_value(serde_json::json!({
            "namespaces": {"team-a": {"containers": 3, "cpu": 2, "memory": "1Gi"}}
        }))
        .ok();
        let team_a = intent("local", &spec, "team-a").expect("a project of its own");
        assert_eq!(team_a.created_with["features.images"], "false");
        assert_eq!(team_a.created_with["features.profiles"], "false");
        assert_eq!(team_a.kept["limits.containers"].as_deref(), Some("3"));
        assert_eq!(team_a.kept["limits.memory"].as_deref(), Some("1073741824"));
        assert!(!team_a.kept.contains_key("limits.cpu"));
        let unlimited = intent("local", &spec, "team-b").expect("a project of its own");
        assert_eq!(unlimited.kept["limits.containers"], None);
    }

    #[test]
    fn shared_mode_and_lxds_default_project_are_never_configured() {
        assert_eq!(intent("local", &cluster_spec(), "team-a"), None);
        assert_eq!(intent("local", &per_namespace(), "default"), None);
    }
}
