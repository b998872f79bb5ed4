//! Calls about LXD projects: a cluster with a project per namespace has the operator make each
//! namespace's project and keep its limits.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Call, LxdClient};
use super::cluster::path_segment;
use super::error::{LxdError, Result};

/// A project, from `GET /1.0/projects/<name>`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Project {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Its configuration (`features.*`, `limits.*`, `restricted.*`).
    pub config: BTreeMap<String, String>,
}

/// What a project should be: the configuration it is made with, and the keys the operator
/// keeps at a value (or removes, when `None`) once it exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectIntent {
    /// Description when made.
    pub description: String,
    /// Configuration when made (LXD refuses to change `features.*` of a project with instances,
    /// so these are never changed afterwards).
    pub created_with: BTreeMap<String, String>,
    /// Keys kept at a value (`Some`) or kept unset (`None`).
    pub kept: BTreeMap<String, Option<String>>,
}

/// What [`LxdClient::ensure_project`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectChange {
    /// The project was made.
    Created,
    /// Its kept keys were set.
    Updated,
    /// It was as intended.
    Unchanged,
}

impl LxdClient {
    /// The project `name`, if it exists.
    pub async fn project_named(&self, name: &str) -> Result<Option<(Project, Option<String>)>> {
        let call = Call::get(format!("/1.0/projects/{}", path_segment(name)));
        match self.send(call).await {
            Ok(answer) => {
                let etag = answer.etag.clone();
                Ok(Some((answer.metadata()?, etag)))
            }
            Err(LxdError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Makes project `name` as `intent` says, or sets its kept keys when they differ (guarded
    /// by its ETag, so a concurrent change by an administrator is not overwritten unseen).
    pub async fn ensure_project(
        &self,
        name: &str,
        intent: &ProjectIntent,
    ) -> Result<ProjectChange> {
        let Some((existing, etag)) = self.project_named(name).await? else {
            let mut config = intent.created_with.clone();
            config.extend(
                intent
                    .kept
                    .iter()
                    .filter_map(|(key, value)| Some((key.clone(), value.clone()?))),
            );
            let body = serde_json::json!({
                "name": name,
                "description": intent.description,
                "config": config,
            });
            return match self
                .send(Call::new(Method::POST, "/1.0/projects").json(&body)?)
                .await
            {
                Ok(_) => Ok(ProjectChange::Created),
                // Made at the same moment by a reconcile of another container of the namespace.
                Err(LxdError::AlreadyExists { .. }) => Ok(ProjectChange::Unchanged),
                Err(error) => Err(error),
            };
        };
        let mut config = existing.config.clone();
        for (key, value) in &intent.kept {
            match value {
                Some(value) => config.insert(key.clone(), value.clone()),
                None => config.remove(key),
            };
        }
        if config == existing.config {
            return Ok(ProjectChange::Unchanged);
        }
        let body = serde_json::json!({
            "description": existing.description,
            "config": config,
        });
        let mut call =
            Call::new(Method::PUT, format!("/1.0/projects/{}", path_segment(name))).json(&body)?;
        if let Some(etag) = &etag {
            call = call.if_match(etag);
        }
        self.send(call).await?;
        Ok(ProjectChange::Updated)
    }
}
