//! Delete: at once, or (with finalizers) by marking the object; then garbage collection of its
//! dependents and, for a namespace, of everything in it.

use serde_json::{Value, json};

use super::ApiState;
use super::write::{meta_str, now, revision_of};
use crate::events;
use crate::registry::{Resource, Role};
use crate::status::ApiError;
use crate::storage::DeletedVersion;

impl ApiState {
    /// Deletes an object: at once, or (with finalizers) by marking it; 202 while it waits.
    pub fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<(u16, Value), ApiError> {
        let key = resource.key(namespace, name);
        self.retry_races(resource, &key, name, false, || {
            self.delete_at(resource, &key, name, dry_run)
        })
    }

    /// One attempt of [`ApiState::delete`] on the object stored at `key`.
    fn delete_at(
        &self,
        resource: &Resource,
        key: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<(u16, Value), ApiError> {
        let mut current = self
            .store
            .get(key)?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
        let read_at = revision_of(&current);
        let has_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if dry_run {
            return Ok((200, events::present(resource, current)));
        }
        if has_finalizers {
            if current["metadata"].get("deletionTimestamp").is_some() {
                return Ok((202, events::present(resource, current)));
            }
            current["metadata"]["deletionTimestamp"] = json!(now());
            current["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if resource.custom {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                current["metadata"]["generation"] = json!(generation + 1);
            }
            let stored = self.store.update(key, read_at, current)?;
            return Ok((202, events::present(resource, stored)));
        }
        let uid = meta_str(&current, "uid").unwrap_or_default().to_owned();
        let deleted = self
            .store
            .delete(key, read_at, current, DeletedVersion::AsRead)?;
        match resource.role {
            Role::Definition => self.uninstall_crd(&deleted),
            Role::Namespace => self.delete_namespace_contents(name)?,
            Role::Plain | Role::EventsApiEvent | Role::ContainerSpecAt(_) | Role::Node => {}
        }
        self.collect_dependents(&uid)?;
        Ok((200, events::present(resource, deleted)))
    }

    fn delete_namespace_contents(&self, namespace: &str) -> Result<(), ApiError> {
        for resource in self.registry.all().into_iter().filter(|r| r.namespaced) {
            let (objects, _) = self.store.list(&resource.prefix(Some(namespace)))?;
            for object in objects {
                let name = meta_str(&object, "name").unwrap_or_default().to_owned();
                // Ignore errors of objects already gone (two versions share Events).
                let _ = self.delete(&resource, Some(namespace), &name, false);
            }
        }
        Ok(())
    }

    /// Background garbage collection: objects owned by `uid` are deleted (through their own
    /// finalizers, if any).
    pub(super) fn collect_dependents(&self, uid: &str) -> Result<(), ApiError> {
        if uid.is_empty() {
            return Ok(());
        }
        for resource in self.registry.all() {
            let (objects, _) = self.store.list(&resource.prefix(None))?;
            for object in objects {
                let owned = object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|owners| owners.iter().any(|o| o["uid"] == uid));
                if owned {
                    let name = meta_str(&object, "name").unwrap_or_default().to_owned();
                    let _ = self.delete(&resource, meta_str(&object, "namespace"), &name, false);
                }
            }
        }
        Ok(())
    }
}
