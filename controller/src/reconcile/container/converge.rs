//! Converging: look at the instance, let [`next_step`] (pure) say what to do, do it, and look
//! again, until the instance is as desired or the steps of one reconcile are used up.

use super::super::context::Context;
use super::create::create_instance;
use super::decide::{Step, next_step};
use super::desired::DesiredInstance;
use super::failure::Failure;
use super::husk::{remove_if_husk, remove_if_never_started};
use super::place::place_container;
use super::report::StatusWriter;
use super::rollout::Stage;
use super::state::{Changed, change_state};
use super::update::update_instance;
use crate::lxd::types::{Instance, StateAction};
use crate::lxd::{LxdClient, LxdError};

/// Steps taken in one reconcile before handing back to the queue.
const MAX_STEPS: usize = 8;

/// Takes steps until the instance is as desired, and returns it.
pub(super) async fn converge(
    desired: &DesiredInstance,
    client: &LxdClient,
    ctx: &Context,
    status: &mut StatusWriter<'_>,
) -> Result<Instance, Failure> {
    // What the last step left the instance as, when the step itself tells (a create, a state
    // change): the next step needs no read of LXD, which is busy enough during a rollout.
    let mut known: Option<Instance> = None;
    // No instance to look for: the container was never placed (its member is recorded before
    // anything is created, so an instance of ours has one), or placement just looked. A name
    // taken meanwhile makes the create fail with a conflict, which adopts our own.
    let mut known_absent =
        status.previous.member.is_none() && status.previous.instance_name.is_none();
    // The whole project is searched for the uid only when the instance may have another name
    // than the one the spec gives now; otherwise the name finds it.
    let renamed = status
        .previous
        .instance_name
        .as_ref()
        .is_some_and(|previous| *previous != desired.name);
    // Calls about the instance go to its member's own endpoint: see `crate::lxd::routes`.
    let on = |member: Option<&str>| member.map_or_else(|| client.clone(), |m| client.on_member(m));
    // The last refusal of a state change in this reconcile.
    let mut refused: Option<String> = None;
    let mut steps: Vec<&'static str> = Vec::with_capacity(MAX_STEPS);
    for _ in 0..MAX_STEPS {
        let observed = match known.take() {
            Some(instance) => Some(instance),
            None if std::mem::take(&mut known_absent) => None,
            None => {
                let client = on(status.status.member.as_deref());
                find_instance(&client, desired.uid(), &desired.name, renamed)
                    .await?
                    // An instance left behind on a failed member is not this incarnation.
                    .filter(|found| {
                        !status
                            .status
                            .left_behind
                            .iter()
                            .any(|left| left.instance_name == found.name)
                    })
            }
        };
        let member = observed
            .as_ref()
            .map(|i| i.location.clone())
            .or_else(|| status.status.member.clone());
        let client = &on(member.as_deref());
        let step = next_step(desired, observed.as_ref(), member.as_deref());
        tracing::debug!(
            instance = %desired.name,
            member = member.as_deref().unwrap_or("-"),
            observed = observed.as_ref().map_or("absent", |i| i.status.as_str()),
            step = step.label(),
            "converging"
        );
        steps.push(step.label());
        match step {
            Step::InSync => {
                return observed.ok_or_else(|| {
                    Failure::Lxd(LxdError::NotFound {
                        message: "instance vanished".to_owned(),
                    })
                });
            }
            Step::Place => {
                place_container(desired, client, ctx, status).await?;
                known_absent = true;
            }
            Step::Create { member } => {
                known = Some(create_instance(desired, &member, client, ctx, status).await?);
            }
            Step::Update(put) => update_instance(desired, &put, client, ctx, status).await?,
            Step::ChangeState(action) => {
                let changed = match change_state(client, &desired.name, action).await {
                    Err(failure) if action == StateAction::Start && failure.is_not_found() => {
                        if remove_if_husk(client, &desired.name, ctx, status).await? {
                            known_absent = true;
                            continue;
                        }
                        return Err(failure);
                    }
                    changed => changed?,
                };
                match changed {
                    Changed::Done => {
                        if action == StateAction::Start {
                            ctx.rollouts
                                .reached(desired.uid(), Stage::Started, &ctx.metrics);
                        }
                        known = observed.map(|mut instance| {
                            instance.status = action.resulting_status().to_owned();
                            instance
                        });
                    }
                    Changed::Unsure => {}
                    Changed::Refused(message) => {
                        if action == StateAction::Start
                            && remove_if_husk(client, &desired.name, ctx, status).await?
                        {
                            known_absent = true;
                            continue;
                        }
                        // Once may be a race ("already running"); twice in one reconcile is
                        // what LXD answers now, and the container says so instead of
                        // retrying in silence.
                        if refused.replace(message.clone()).is_some() {
                            if action == StateAction::Start
                                && remove_if_never_started(
                                    client,
                                    &desired.name,
                                    &message,
                                    ctx,
                                    status,
                                )
                                .await?
                            {
                                known_absent = true;
                                refused = None;
                                continue;
                            }
                            return Err(Failure::Refused {
                                reason: refusal_reason(action),
                                message,
                            });
                        }
                    }
                }
            }
            Step::NameTaken { owner } => {
                return Err(Failure::Permanent {
                    reason: "NameConflict",
                    message: format!(
                        "an LXD instance named {} already exists and belongs to {}; set spec.instanceName to use another name",
                        desired.name,
                        owner
                            .map(|uid| format!("the object with uid {uid}"))
                            .unwrap_or_else(|| "no LxdContainer".to_owned())
                    ),
                });
            }
        }
    }
    Err(Failure::Unfinished { steps })
}

/// The Ready reason of a state change LXD keeps refusing.
fn refusal_reason(action: StateAction) -> &'static str {
    match action {
        StateAction::Start => "StartFailed",
        StateAction::Stop => "StopFailed",
        StateAction::Restart => "RestartFailed",
        StateAction::Freeze => "FreezeFailed",
        StateAction::Unfreeze => "UnfreezeFailed",
    }
}

/// The instance of this container: by its name (one cheap GET), and by its owner uid across
/// the project when the name finds nothing of ours and `search_uid` says it may have another.
/// Returns whatever holds the name when it is not ours.
async fn find_instance(
    client: &LxdClient,
    uid: &str,
    name: &str,
    search_uid: bool,
) -> Result<Option<Instance>, LxdError> {
    match client.instance(name).await {
        Ok(found) if found.value.owner_uid() == Some(uid) => return Ok(Some(found.value)),
        Ok(found) => {
            return Ok(Some(
                client.instance_by_uid(uid).await?.unwrap_or(found.value),
            ));
        }
        Err(LxdError::NotFound { .. }) => {}
        Err(error) => return Err(error),
    }
    if search_uid {
        client.instance_by_uid(uid).await
    } else {
        Ok(None)
    }
}
