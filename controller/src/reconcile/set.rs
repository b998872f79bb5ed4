//! The LxdContainerSet reconciler, as a pipeline: resolve the children (read from the API, not
//! a cache, so that a child just deleted or created is seen as such), validate the template
//! once, decide the next actions ([`decide::decide`], pure), carry them out, and write the
//! set's status. The children are LxdContainers: the container reconciler places, creates,
//! updates and deletes their instances; the set only says which children exist and what they
//! are made from.

pub mod children;
pub mod decide;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use lxd_operator_crds::container::ContainerPhase;
use lxd_operator_crds::set::{CONDITION_AVAILABLE, CONDITION_PROGRESSING, SET_LABEL};
use lxd_operator_crds::shared::{CONDITION_READY, CONDITION_SCHEDULED, selector_query};
use lxd_operator_crds::{LxdContainer, LxdContainerSet, LxdContainerSetStatus};

use self::children::{child_labels, child_spec, controlled_by, new_child, observe, revision};
use self::decide::{Child, Plan, Wanted, decide};
use super::container::desired::DesiredInstance;
use super::context::{Context, Error};
use super::status::{FIELD_MANAGER, condition, set_condition, write_status};

/// Reconciles one LxdContainerSet.
#[tracing::instrument(skip_all, fields(object = %format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any())))]
pub async fn reconcile(set: Arc<LxdContainerSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        // The children go with the set, by their owner references.
        return Ok(Action::await_change());
    }
    let namespace = set.namespace().unwrap_or_else(|| "default".to_owned());
    let sets: Api<LxdContainerSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let containers: Api<LxdContainer> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = set.name_any();
    let update_revision = revision(&set);

    // Resolve.
    let listed = containers
        .list(&ListParams::default().labels(&format!("{SET_LABEL}={name}")))
        .await?;
    let owned: Vec<&LxdContainer> = listed
        .items
        .iter()
        .filter(|c| controlled_by(c, &set))
        .collect();
    let observed: Vec<Child> = owned.iter().map(|c| observe(&name, c)).collect();

    // Validate.
    if let Err(message) = validate(&set, &update_revision) {
        let status = status_of(&set, &observed, &update_revision, None, Some(&message));
        write_status(&sets, &set, set.status.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }

    // Decide.
    let replicas = u32::try_from(set.spec.replicas).unwrap_or(0);
    let spec = child_spec(&set);
    let wanted = Wanted {
        replicas,
        revision: &update_revision,
        spec: &spec,
        strategy: set.spec.update_strategy.strategy,
        max_unavailable: u32::try_from(set.spec.update_strategy.max_unavailable(set.spec.replicas))
            .unwrap_or(1),
    };
    let plan = decide(&wanted, &observed);

    // Apply.
    let refused = apply(&set, &plan, &update_revision, &containers, &ctx).await?;

    // Status.
    let unschedulable = unschedulable_children(&owned);
    let status = status_of(&set, &observed, &update_revision, Some(&plan), None);
    let mut status = with_unschedulable(status, &set, &unschedulable);
    if let Some(refusal) = refused.first() {
        let reason = if refusal.contains("exceeded quota") {
            "QuotaExceeded"
        } else {
            "ChildRefused"
        };
        progressing(
            &mut status,
            &set,
            reason,
            format!(
                "{} children refused by the API server: {refusal}",
                refused.len()
            ),
        );
    }
    write_status(&sets, &set, set.status.as_ref(), &status).await?;
    Ok(Action::requeue(ctx.resync))
}

/// Retry soon on API errors.
pub fn error_policy(set: Arc<LxdContainerSet>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(set = %format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any()), %error, "LxdContainerSet reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// What the schema cannot check: the template makes a valid LxdContainer, and the selector
/// matches the template (the API server checks it too; a Kubernetes API server without CEL
/// support would not).
fn validate(set: &LxdContainerSet, revision: &str) -> Result<(), String> {
    if set.spec.template.spec.instance_name.is_some() {
        return Err(
            "spec.template.spec.instanceName: must not be set: each child's instance is named after the child"
                .to_owned(),
        );
    }
    if !selector_matches(&set.spec.selector, &set.spec.template.metadata.labels) {
        return Err(
            "spec.selector: selector does not match the template's labels (spec.template.metadata.labels)"
                .to_owned(),
        );
    }
    let mut candidate = new_child(set, 0, revision);
    candidate.metadata.uid = Some("candidate".to_owned());
    DesiredInstance::from_container(&candidate)
        .map(|_| ())
        .map_err(|error| format!("spec.template.{error}"))
}

/// Whether `selector` selects `labels` (an empty selector selects nothing, as for a
/// StatefulSet).
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    !empty && lxd_operator_crds::shared::selector_matches(selector, labels)
}

/// Carries the plan out. Creates and deletes that find the child already there (or gone) are
/// no failure: the next reconcile sees the children as they are.
async fn apply(
    set: &LxdContainerSet,
    plan: &Plan,
    revision: &str,
    containers: &Api<LxdContainer>,
    ctx: &Context,
) -> Result<Vec<String>, Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    // Each create: whether it made the child, and why admission refused it (its cluster's
    // guardrails, 422, or its namespace's quota, 403), which the set reports.
    let created = futures::future::join_all(plan.create.iter().map(|ordinal| {
        let child = new_child(set, *ordinal, revision);
        let params = params.clone();
        async move {
            match containers.create(&params, &child).await {
                Ok(_) => Ok((true, None)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok((false, None)),
                Err(kube::Error::Api(status)) if status.code == 422 || status.code == 403 => {
                    Ok((false, Some(status.message)))
                }
                Err(error) => Err(error),
            }
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, kube::Error>>()?;
    let made = created.iter().filter(|(made, _)| *made).count();
    let refusals: Vec<String> = created.into_iter().filter_map(|(_, why)| why).collect();
    if made > 0 {
        publish(
            set,
            ctx,
            "SuccessfulCreate",
            format!("created {made} children"),
        )
        .await;
    }

    for (names, reason) in [
        (&plan.scale_down, "ScaledDown"),
        (&plan.replace, "Replacing"),
    ] {
        let deleted = futures::future::join_all(names.iter().map(|name| async move {
            match containers.delete(name, &DeleteParams::background()).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                Err(error) => Err(error),
            }
        }))
        .await;
        if count_ok(deleted)? > 0 {
            publish(set, ctx, reason, format!("deleted {}", names.join(", "))).await;
        }
    }

    let updated = futures::future::join_all(
        plan.update_in_place
            .iter()
            .map(|name| update_in_place(set, name, revision, containers)),
    )
    .await;
    let updated = count_ok(updated)?;
    if updated > 0 {
        publish(
            set,
            ctx,
            "UpdatedInPlace",
            format!("updated {updated} children in place to revision {revision}"),
        )
        .await;
    }
    Ok(refusals)
}

fn count_ok(results: Vec<Result<bool, kube::Error>>) -> Result<usize, kube::Error> {
    let mut done = 0;
    for result in results {
        done += usize::from(result?);
    }
    Ok(done)
}

/// Brings a child to the current template where it is: its spec and revision label replaced,
/// guarded by its resourceVersion (a conflict waits for the next reconcile).
async fn update_in_place(
    set: &LxdContainerSet,
    name: &str,
    revision: &str,
    containers: &Api<LxdContainer>,
) -> Result<bool, kube::Error> {
    let mut child = match containers.get(name).await {
        Ok(child) => child,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
        Err(error) => return Err(error),
    };
    if child.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    child.spec = child_spec(set);
    child.metadata.labels = Some(child_labels(set, revision));
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match containers.replace(name, &params, &child).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

async fn publish(set: &LxdContainerSet, ctx: &Context, reason: &str, note: String) {
    let event = KubeEvent {
        type_: EventType::Normal,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &set.object_ref(&())).await {
        tracing::warn!(%error, "cannot publish an Event");
    }
}

/// Children no member can take now, with what placement said.
fn unschedulable_children(children: &[&LxdContainer]) -> Vec<(String, String)> {
    children
        .iter()
        .filter_map(|child| {
            let status = child.status.as_ref()?;
            if status.phase != Some(ContainerPhase::Unschedulable) {
                return None;
            }
            let message = status
                .conditions
                .iter()
                .find(|c| c.type_ == CONDITION_SCHEDULED)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            Some((child.name_any(), message))
        })
        .collect()
}

/// The set's status from its children as read at the start of the reconcile.
fn status_of(
    set: &LxdContainerSet,
    children: &[Child],
    update_revision: &str,
    plan: Option<&Plan>,
    invalid: Option<&str>,
) -> LxdContainerSetStatus {
    let previous = set.status.clone().unwrap_or_default();
    let generation = set.metadata.generation;
    let live: Vec<&Child> = children.iter().filter(|c| !c.deleting).collect();
    let count = |f: &dyn Fn(&Child) -> bool| live.iter().filter(|c| f(c)).count() as i32;
    let replicas = live.len() as i32;
    let ready = count(&|c| c.ready);
    let updated = count(&|c| c.revision.as_deref() == Some(update_revision));
    let wanted = set.spec.replicas;
    let complete = replicas == wanted && ready == wanted && updated == wanted;
    let current_revision = if complete {
        Some(update_revision.to_owned())
    } else {
        most_common_revision(&live, update_revision).or(previous.current_revision.clone())
    };
    let max_unavailable = set.spec.update_strategy.max_unavailable(wanted);
    let mut conditions = previous.conditions.clone();
    set_condition(
        &mut conditions,
        condition(
            &previous.conditions,
            CONDITION_AVAILABLE,
            ready >= wanted - max_unavailable,
            if ready >= wanted - max_unavailable {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            format!(
                "{ready} of {wanted} children Ready (at most {max_unavailable} may be unavailable)"
            ),
            generation,
        ),
    );
    let (progressing, reason, message) = match (invalid, plan) {
        (Some(message), _) => (false, "InvalidSpec", message.to_owned()),
        _ if complete => (
            false,
            "Complete",
            format!("{wanted} children Ready on revision {update_revision}"),
        ),
        (None, plan) => (
            true,
            "Updating",
            format!(
                "{replicas} of {wanted} children, {ready} Ready, {updated} on revision {update_revision}{}",
                plan.filter(|p| p.waiting > 0)
                    .map(|p| format!(
                        "; {} wait to be replaced (maxUnavailable {max_unavailable})",
                        p.waiting
                    ))
                    .unwrap_or_default()
            ),
        ),
    };
    set_condition(
        &mut conditions,
        condition(
            &previous.conditions,
            CONDITION_PROGRESSING,
            progressing,
            reason,
            message,
            generation,
        ),
    );
    // A set has no Ready of its own: Available says it.
    conditions.retain(|c| c.type_ != CONDITION_READY);
    LxdContainerSetStatus {
        replicas,
        ready_replicas: ready,
        updated_replicas: updated,
        current_revision,
        update_revision: Some(update_revision.to_owned()),
        selector: Some(selector_query(&set.spec.selector)),
        observed_generation: generation,
        conditions,
    }
}

/// The Progressing condition names the children that cannot be placed, and why.
fn with_unschedulable(
    mut status: LxdContainerSetStatus,
    set: &LxdContainerSet,
    unschedulable: &[(String, String)],
) -> LxdContainerSetStatus {
    if unschedulable.is_empty() {
        return status;
    }
    let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (child, message) in unschedulable {
        reasons.entry(message).or_default().push(child);
    }
    let why: Vec<String> = reasons
        .iter()
        .map(|(message, children)| format!("{} ({message})", children.join(", ")))
        .collect();
    let message = format!(
        "{} of {} children cannot be placed: {}",
        unschedulable.len(),
        set.spec.replicas,
        why.join("; ")
    );
    progressing(&mut status, set, "Unschedulable", message);
    status
}

/// Sets `Progressing` True with what holds the set up.
fn progressing(
    status: &mut LxdContainerSetStatus,
    set: &LxdContainerSet,
    reason: &str,
    message: String,
) {
    let previous = set.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        condition(
            &previous.conditions,
            CONDITION_PROGRESSING,
            true,
            reason,
            message,
            set.metadata.generation,
        ),
    );
}

fn most_common_revision(children: &[&Child], update_revision: &str) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for revision in children.iter().filter_map(|c| c.revision.as_deref()) {
        if revision != update_revision {
            *counts.entry(revision).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(revision, _)| revision.to_owned())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use lxd_operator_crds::testing::{container_set, container_spec};

    use super::*;

    fn set(replicas: i32) -> LxdContainerSet {
        let mut set = container_set("web", replicas);
        set.metadata.generation = Some(3);
        set
    }

    fn child(ordinal: u32, revision: &str, ready: bool) -> Child {
        Child {
            name: format!("web-{ordinal}"),
            ordinal: Some(ordinal),
            revision: Some(revision.to_owned()),
            spec: container_spec(),
            ready,
            deleting: false,
        }
    }

    fn condition_of<'a>(status: &'a LxdContainerSetStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_set_with_every_child_ready_on_the_new_revision_is_complete_and_available() {
        let children: Vec<Child> = (0..3).map(|o| child(o, "new", true)).collect();
        let status = status_of(&set(3), &children, "new", Some(&Plan::default()), None);
        assert_eq!(
            (
                status.replicas,
                status.ready_replicas,
                status.updated_replicas
            ),
            (3, 3, 3)
        );
        assert_eq!(status.current_revision.as_deref(), Some("new"));
        assert_eq!(status.selector.as_deref(), Some("app=web"));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(condition_of(&status, CONDITION_AVAILABLE).status, "True");
        let progressing = condition_of(&status, CONDITION_PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", "Complete")
        );
    }

    #[test]
    fn an_update_under_way_keeps_the_old_revision_current_and_says_who_waits() {
        let children = vec![
            child(0, "old", true),
            child(1, "old", true),
            child(2, "new", false),
        ];
        let plan = Plan {
            waiting: 2,
            ..Plan::default()
        };
        let status = status_of(&set(3), &children, "new", Some(&plan), None);
        assert_eq!(status.current_revision.as_deref(), Some("old"));
        assert_eq!(status.updated_replicas, 1);
        assert_eq!(condition_of(&status, CONDITION_AVAILABLE).status, "True");
        let progressing = condition_of(&status, CONDITION_PROGRESSING);
        assert_eq!(progressing.status, "True");
        assert!(
            progressing
                .message
                .contains("2 wait to be replaced (maxUnavailable 1)"),
            "{}",
            progressing.message
        );
    }

    #[test]
    fn children_that_cannot_be_placed_are_counted_with_placement_s_reason() {
        let set = set(4);
        let status = status_of(&set, &[], "new", Some(&Plan::default()), None);
        let reason = "0/3 members: 3 topology spread zone".to_owned();
        let status = with_unschedulable(
            status,
            &set,
            &[("web-2".into(), reason.clone()), ("web-3".into(), reason)],
        );
        let progressing = condition_of(&status, CONDITION_PROGRESSING);
        assert_eq!(progressing.reason, "Unschedulable");
        assert_eq!(
            progressing.message,
            "2 of 4 children cannot be placed: web-2, web-3 (0/3 members: 3 topology spread zone)"
        );
    }

    #[test]
    fn a_template_the_operator_cannot_carry_out_is_refused_naming_the_field() {
        let mut named = set(1);
        named.spec.template.spec.instance_name = Some("fixed".into());
        let error = validate(&named, "r").unwrap_err();
        assert!(
            error.starts_with("spec.template.spec.instanceName"),
            "{error}"
        );

        let mut unmatched = set(1);
        unmatched.spec.template.metadata.labels.clear();
        let error = validate(&unmatched, "r").unwrap_err();
        assert!(error.starts_with("spec.selector"), "{error}");

        let mut reserved = set(1);
        reserved
            .spec
            .template
            .spec
            .config
            .insert("volatile.x".into(), "1".into());
        let error = validate(&reserved, "r").unwrap_err();
        assert!(error.starts_with("spec.template.spec.config"), "{error}");
    }
}
