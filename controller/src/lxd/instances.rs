//! Calls about instances, images and profiles.

use std::time::Duration;

use reqwest::Method;

use super::client::{Call, LxdClient};
use super::cluster::path_segment;
use super::error::{LxdError, Result};
use super::operations::OperationHandle;
use super::types::{
    Image, ImageAlias, Instance, InstanceCreate, InstancePut, InstanceState, Profile, StateAction,
    StateChange, Target, UID_KEY,
};

/// An instance read together with its ETag, for a guarded update.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The object.
    pub value: T,
    /// Its ETag (a hash of its content, the same on every member).
    pub etag: Option<String>,
}

impl LxdClient {
    /// Every instance of the project with its config (no runtime state: that costs about 20 ms
    /// per running instance; read it per instance where it is needed).
    pub async fn instances(&self) -> Result<Vec<Instance>> {
        self.fetch(self.listing(Call::get("/1.0/instances").query("recursion", "1")))
            .await
    }

    /// Instances whose config key `key` (a `user.*` key) has exactly `value`.
    pub async fn instances_with_config(&self, key: &str, value: &str) -> Result<Vec<Instance>> {
        let filter = format!("config.{key} eq {value}");
        self.fetch(
            self.listing(
                Call::get("/1.0/instances")
                    .query("recursion", "1")
                    .query("filter", filter),
            ),
        )
        .await
    }

    /// The instance the operator created for the custom resource with this uid, if any. The
    /// copy LXD makes while it moves an instance (see [`Instance::is_move_copy`]) carries the uid
    /// too, but is not the container's instance.
    pub async fn instance_by_uid(&self, uid: &str) -> Result<Option<Instance>> {
        Ok(self
            .instances_by_uid(uid)
            .await?
            .into_iter()
            .find(|instance| !instance.is_move_copy()))
    }

    /// Every instance carrying this owner uid: one, or more after a reschedule left one
    /// behind on a failed member.
    pub async fn instances_by_uid(&self, uid: &str) -> Result<Vec<Instance>> {
        let mut found = self.instances_with_config(UID_KEY, uid).await?;
        // The filter is applied by LXD; check again so a lax filter can never adopt a stranger.
        found.retain(|instance| instance.owner_uid() == Some(uid));
        Ok(found)
    }

    /// One instance with its ETag.
    pub async fn instance(&self, name: &str) -> Result<Versioned<Instance>> {
        let answer = self
            .send(Call::get(format!("/1.0/instances/{}", path_segment(name))))
            .await?;
        let etag = answer.etag.clone();
        Ok(Versioned {
            value: answer.metadata()?,
            etag,
        })
    }

    /// The runtime state of one instance (status, processes, addresses).
    pub async fn instance_state(&self, name: &str) -> Result<InstanceState> {
        self.fetch(Call::get(format!(
            "/1.0/instances/{}/state",
            path_segment(name)
        )))
        .await
    }

    /// Whether LXD holds the storage volume of this instance on `member`. A create that its
    /// member died in can leave the instance record without one: LXD then refuses to start it
    /// ("Instance storage pool not found") but still deletes it.
    pub async fn instance_volume_exists(&self, instance: &Instance) -> Result<bool> {
        let Some(pool) = instance
            .expanded_devices
            .values()
            .find(|device| {
                device.get("type").map(String::as_str) == Some("disk")
                    && device.get("path").map(String::as_str) == Some("/")
            })
            .and_then(|root| root.get("pool"))
        else {
            // No root disk in what was read: nothing to tell by.
            return Ok(true);
        };
        let volume_type = if instance.instance_type == "virtual-machine" {
            "virtual-machine"
        } else {
            "container"
        };
        let call = Call::get(format!(
            "/1.0/storage-pools/{}/volumes/{volume_type}/{}",
            path_segment(pool),
            path_segment(&instance.name)
        ))
        .query("target", instance.location.clone());
        match self.send(call).await {
            Ok(_) => Ok(true),
            Err(LxdError::NotFound { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Starts creating an instance on `target`; the handle waits for it.
    pub async fn create_instance(
        &self,
        request: &InstanceCreate,
        target: &Target,
    ) -> Result<OperationHandle> {
        let mut call = Call::new(Method::POST, "/1.0/instances").json(request)?;
        match target {
            Target::Any => {}
            Target::Member(member) => call = call.query("target", member.clone()),
            Target::Group(group) => call = call.query("target", format!("@{group}")),
        }
        self.start_operation(call).await
    }

    /// Replaces an instance's writable part, only if it is unchanged since `etag` was read
    /// ([`LxdError::Conflict`] otherwise).
    pub async fn update_instance(
        &self,
        name: &str,
        put: &InstancePut,
        etag: Option<&str>,
    ) -> Result<OperationHandle> {
        let mut call = Call::new(
            Method::PUT,
            format!("/1.0/instances/{}", path_segment(name)),
        )
        .json(put)?;
        if let Some(etag) = etag {
            call = call.if_match(etag);
        }
        self.start_operation(call).await
    }

    /// Starts moving a stopped instance to another member of the cluster: a cold migration
    /// that copies its root filesystem (LXD 5.0 moves no running container). The name stays.
    pub async fn move_instance(&self, name: &str, member: &str) -> Result<OperationHandle> {
        let call = Call::new(
            Method::POST,
            format!("/1.0/instances/{}", path_segment(name)),
        )
        .json(&serde_json::json!({ "name": name, "migration": true }))?
        .query("target", member.to_owned());
        self.start_operation(call).await
    }

    /// Renames a stopped instance on its member.
    pub async fn rename_instance(&self, name: &str, new_name: &str) -> Result<OperationHandle> {
        let call = Call::new(
            Method::POST,
            format!("/1.0/instances/{}", path_segment(name)),
        )
        .json(&serde_json::json!({ "name": new_name }))?;
        self.start_operation(call).await
    }

    /// Deletes a stopped instance (LXD refuses to delete a running one).
    pub async fn delete_instance(&self, name: &str) -> Result<OperationHandle> {
        self.start_operation(Call::new(
            Method::DELETE,
            format!("/1.0/instances/{}", path_segment(name)),
        ))
        .await
    }

    /// Starts, stops, restarts, freezes or unfreezes an instance. `timeout` bounds a graceful
    /// stop; `force` kills instead.
    pub async fn change_state(
        &self,
        name: &str,
        action: StateAction,
        timeout: Option<Duration>,
        force: bool,
    ) -> Result<OperationHandle> {
        let body = StateChange {
            action,
            timeout: timeout
                .map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(-1),
            force,
            stateful: false,
        };
        let call = Call::new(
            Method::PUT,
            format!("/1.0/instances/{}/state", path_segment(name)),
        )
        .json(&body)?;
        self.start_operation(call).await
    }

    /// An image by fingerprint (or unique prefix).
    pub async fn image(&self, fingerprint: &str) -> Result<Image> {
        self.fetch(Call::get(format!(
            "/1.0/images/{}",
            path_segment(fingerprint)
        )))
        .await
    }

    /// The image an alias points at.
    pub async fn image_by_alias(&self, alias: &str) -> Result<Image> {
        let alias: ImageAlias = self
            .fetch(Call::get(format!(
                "/1.0/images/aliases/{}",
                path_segment(alias)
            )))
            .await?;
        self.image(&alias.target).await
    }

    /// Every profile of the project.
    pub async fn profiles(&self) -> Result<Vec<Profile>> {
        self.fetch(Call::get("/1.0/profiles").query("recursion", "1"))
            .await
    }

    /// One profile.
    pub async fn profile(&self, name: &str) -> Result<Profile> {
        self.fetch(Call::get(format!("/1.0/profiles/{}", path_segment(name))))
            .await
    }
}

/// Whether an error means the instance is not there.
pub fn is_not_found(error: &LxdError) -> bool {
    matches!(error, LxdError::NotFound { .. })
}
