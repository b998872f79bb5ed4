//! LXD's asynchronous operations: waiting where they live, and finding out what happened when
//! they are lost.
//!
//! An operation lives on the member that runs it. LXD 3.0 answered 404 for it on every other
//! member; LXD 5.0 forwards, but members still die mid-operation, and finished operations vanish
//! after about ten seconds. So a handle remembers the endpoint that issued it and waits there
//! first; when the operation cannot be found or its member cannot be reached, the wait ends in
//! [`LxdError::OperationLost`] and [`LxdClient::settle_lost`] reads the instance to decide what
//! actually happened. Nothing is ever created twice: instances carry the uid of the custom
//! resource that owns them, and [`LxdClient::create_or_adopt`] adopts what it finds.

use std::time::{Duration, Instant};

use super::client::{Call, LxdClient};
use super::error::{LxdError, Result};
use super::types::{Instance, InstanceCreate, Operation, StateAction, Target, UID_KEY};

/// The longest single `/wait` call; longer waits are made of several.
const WAIT_CHUNK: Duration = Duration::from_secs(20);

/// An operation LXD started for a call, with the endpoint that issued it.
#[derive(Debug, Clone)]
pub struct OperationHandle {
    /// The operation's id.
    pub id: String,
    /// Index of the endpoint that issued it.
    pub endpoint: usize,
    /// The operation as first reported (its `location` is the member that runs it).
    pub operation: Operation,
}

/// What a create came to.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// This call created the instance.
    Created(Instance),
    /// An instance with the owner's uid already existed (an earlier attempt, before a crash or
    /// a lost operation); it is adopted, not created again.
    Adopted(Instance),
}

impl CreateOutcome {
    /// The instance, however it came about.
    pub fn instance(&self) -> &Instance {
        match self {
            CreateOutcome::Created(instance) | CreateOutcome::Adopted(instance) => instance,
        }
    }
}

/// What a lost operation was meant to do.
#[derive(Debug, Clone)]
pub enum Intent<'a> {
    /// Create the instance `name` for the owner `uid`.
    Create { name: &'a str, uid: &'a str },
    /// Bring `name` to the state `action` leads to.
    ChangeState { name: &'a str, action: StateAction },
    /// Delete `name`.
    Delete { name: &'a str },
}

/// What the instance says about a lost operation.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// It happened: the instance is as intended (`None` after a delete).
    Done(Option<Instance>),
    /// Another operation on the instance is still running: wait for it, then look again.
    InProgress(Operation),
    /// It did not happen: the instance is as before (`None` if it does not exist).
    NotDone(Option<Instance>),
}

impl LxdClient {
    /// Sends a call that answers with an operation, and returns its handle.
    pub(crate) async fn start_operation(&self, call: Call) -> Result<OperationHandle> {
        let answer = self.send(call).await?;
        let endpoint = answer.endpoint;
        let reference = answer.envelope.operation.clone();
        let operation: Operation = answer.metadata()?;
        let id = if operation.id.is_empty() {
            reference.rsplit('/').next().unwrap_or_default().to_owned()
        } else {
            operation.id.clone()
        };
        if id.is_empty() {
            return Err(LxdError::UnexpectedResponse {
                endpoint: self
                    .endpoint(endpoint)
                    .map(|e| e.display())
                    .unwrap_or_default(),
                status: 202,
                detail: "an asynchronous answer without an operation".to_owned(),
                body: String::new(),
            });
        }
        Ok(OperationHandle {
            id,
            endpoint,
            operation,
        })
    }

    /// Reads an operation, asking the endpoint that issued it first.
    pub async fn operation(&self, handle: &OperationHandle) -> Result<Operation> {
        self.fetch(Call::get(format!("/1.0/operations/{}", handle.id)).prefer(handle.endpoint))
            .await
    }

    /// Every operation of the cluster, with the member that runs it.
    pub async fn operations(&self) -> Result<Vec<Operation>> {
        let by_status: std::collections::BTreeMap<String, Vec<Operation>> = self
            .fetch(Call::get("/1.0/operations").query("recursion", "1"))
            .await?;
        Ok(by_status.into_values().flatten().collect())
    }

    /// Waits until the operation ends, for at most `timeout`, where it lives.
    ///
    /// - `Ok(operation)`: it succeeded.
    /// - An error classified from LXD's reason (AlreadyExists, Invalid, NotFound, or
    ///   OperationFailed): it ran and failed.
    /// - [`LxdError::OperationLost`]: it is gone or its member does not answer; use
    ///   [`LxdClient::settle_lost`].
    /// - [`LxdError::Timeout`]: it still runs.
    pub async fn wait(&self, handle: &OperationHandle, timeout: Duration) -> Result<Operation> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(LxdError::Timeout {
                    what: format!("operation {} ({})", handle.id, handle.operation.description),
                    after: timeout,
                });
            }
            let chunk = remaining.min(WAIT_CHUNK);
            let seconds = chunk.as_secs().max(1);
            let call = Call::get(format!("/1.0/operations/{}/wait", handle.id))
                .query("timeout", seconds.to_string())
                .prefer(handle.endpoint)
                .timeout(Duration::from_secs(seconds) + Duration::from_secs(10));
            match self.fetch::<Operation>(call).await {
                Ok(operation) if operation.is_done() => return operation_result(operation),
                Ok(_still_running) => continue,
                Err(LxdError::Timeout { .. }) => continue,
                Err(
                    error @ (LxdError::Untrusted { .. }
                    | LxdError::Tls { .. }
                    | LxdError::Config { .. }),
                ) => return Err(error),
                Err(error) => {
                    let location = &handle.operation.location;
                    return Err(LxdError::OperationLost {
                        id: handle.id.clone(),
                        message: format!(
                            "cannot wait for it (running on member {location:?}): {error}"
                        ),
                    });
                }
            }
        }
    }

    /// Waits for an operation on an instance and reports what it came to, reading the instance
    /// itself when the operation is lost: the caller gets the real state, never a bare
    /// "operation not found".
    pub async fn wait_or_settle(
        &self,
        handle: &OperationHandle,
        intent: &Intent<'_>,
        timeout: Duration,
    ) -> Result<Settlement> {
        match self.wait(handle, timeout).await {
            Ok(_) => match intent {
                Intent::Delete { .. } => Ok(Settlement::Done(None)),
                Intent::Create { name, .. } | Intent::ChangeState { name, .. } => {
                    Ok(Settlement::Done(Some(self.instance(name).await?.value)))
                }
            },
            Err(LxdError::OperationLost { id, message }) => {
                tracing::info!(operation = %id, %message, "operation lost; reading the instance instead");
                self.settle_lost(intent).await
            }
            Err(error) => Err(error),
        }
    }

    /// Decides from the instance itself what a lost operation did.
    pub async fn settle_lost(&self, intent: &Intent<'_>) -> Result<Settlement> {
        let name = match intent {
            Intent::Create { name, .. }
            | Intent::ChangeState { name, .. }
            | Intent::Delete { name } => *name,
        };
        let instance = match self.instance(name).await {
            Ok(found) => Some(found.value),
            Err(LxdError::NotFound { .. }) => None,
            Err(error) => return Err(error),
        };
        if let Some(running) = self.running_operation_on(name).await? {
            return Ok(Settlement::InProgress(running));
        }
        Ok(match (intent, instance) {
            (Intent::Create { uid, .. }, Some(instance)) if instance.owner_uid() == Some(uid) => {
                Settlement::Done(Some(instance))
            }
            (Intent::Create { uid, .. }, Some(instance)) => {
                return Err(LxdError::AlreadyExists {
                    message: format!(
                        "instance {name} exists but belongs to {} (config {UID_KEY}), not to {uid}",
                        instance.owner_uid().unwrap_or("nobody")
                    ),
                });
            }
            (Intent::Create { .. }, None) => Settlement::NotDone(None),
            (Intent::ChangeState { action, .. }, Some(instance))
                if instance.status == action.resulting_status() =>
            {
                Settlement::Done(Some(instance))
            }
            (Intent::ChangeState { .. }, instance) => Settlement::NotDone(instance),
            (Intent::Delete { .. }, None) => Settlement::Done(None),
            (Intent::Delete { .. }, instance) => Settlement::NotDone(instance),
        })
    }

    /// A running operation that acts on the instance `name`, if any.
    pub async fn running_operation_on(&self, name: &str) -> Result<Option<Operation>> {
        let operations = self.operations().await?;
        Ok(operations
            .into_iter()
            .find(|operation| operation.runs_on_instance(name)))
    }

    /// Creates the instance for the custom resource `uid` on `target` and waits for it, or
    /// adopts the instance an earlier attempt created. Never creates a second instance for one
    /// uid; an instance of that name owned by someone else is [`LxdError::AlreadyExists`].
    pub async fn create_or_adopt(
        &self,
        request: &InstanceCreate,
        target: &Target,
        uid: &str,
        timeout: Duration,
    ) -> Result<CreateOutcome> {
        if let Some(existing) = self.instance_by_uid(uid).await? {
            return Ok(CreateOutcome::Adopted(existing));
        }
        self.create_or_adopt_by_name(request, target, uid, timeout)
            .await
    }

    /// [`LxdClient::create_or_adopt`] for a caller that has just looked for the uid and found
    /// nothing: it skips searching the whole project (a list that grows with every instance). An
    /// instance of the same name and uid, made meanwhile, is still adopted, never duplicated.
    pub async fn create_or_adopt_by_name(
        &self,
        request: &InstanceCreate,
        target: &Target,
        uid: &str,
        timeout: Duration,
    ) -> Result<CreateOutcome> {
        let mut request = request.clone();
        request.config.insert(UID_KEY.to_owned(), uid.to_owned());
        let intent = Intent::Create {
            name: &request.name,
            uid,
        };
        let outcome = {
            // Sent to the target member itself, in its turn: see `pacing` and `routes`.
            let (client, _turn) = match target {
                Target::Member(member) => {
                    let asked = Instant::now();
                    let turn = self.inner.create_slots.turn(member).await;
                    if let Some(observer) = &self.inner.config.observer {
                        observer.observe_create_turn(asked.elapsed());
                    }
                    (self.on_member(member), Some(turn))
                }
                _ => (self.clone(), None),
            };
            match client.create_instance(&request, target).await {
                Ok(handle) => client.wait(&handle, timeout).await.map(|_| ()),
                Err(error) => Err(error),
            }
        };
        match outcome {
            Ok(()) => Ok(CreateOutcome::Created(match target {
                // The member is known: the instance is what was asked for, and a read would
                // only add LXD's own keys, at a cost to a busy cluster.
                Target::Member(member) => request.as_created(member),
                _ => self.instance(&request.name).await?.value,
            })),
            Err(LxdError::AlreadyExists { message }) => match self.settle_lost(&intent).await? {
                // Our own earlier create won a race with this one.
                Settlement::Done(Some(instance)) => Ok(CreateOutcome::Adopted(instance)),
                _ => Err(LxdError::AlreadyExists { message }),
            },
            Err(LxdError::OperationLost { id, message }) => {
                match self.settle_lost(&intent).await? {
                    Settlement::Done(Some(instance)) => Ok(CreateOutcome::Created(instance)),
                    Settlement::InProgress(operation) => Err(LxdError::OperationLost {
                        id,
                        message: format!(
                            "{message}; operation {} on the instance still runs",
                            operation.id
                        ),
                    }),
                    Settlement::Done(None) | Settlement::NotDone(_) => {
                        Err(LxdError::OperationLost { id, message })
                    }
                }
            }
            Err(error) => Err(error),
        }
    }
}

/// The result of an operation that ended.
fn operation_result(operation: Operation) -> Result<Operation> {
    match operation.status.as_str() {
        "Success" => Ok(operation),
        "Cancelled" => Err(LxdError::OperationFailed {
            message: format!("operation {} was cancelled", operation.id),
        }),
        _ => {
            let message = if operation.err.is_empty() {
                format!(
                    "operation {} ended with status {}",
                    operation.id, operation.status
                )
            } else {
                operation.err.clone()
            };
            // A failed operation always reports 400, so only its message says what kind of
            // failure it was (code 0: classify by the message alone).
            Err(LxdError::from_lxd(0, &message))
        }
    }
}
