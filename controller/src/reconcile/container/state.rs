//! The ChangeState step: start, stop, freeze or unfreeze the instance and wait; a graceful stop
//! that does not finish is forced, and a lost operation is settled from the instance itself.

use super::failure::Failure;
use super::{OPERATION_TIMEOUT, STOP_TIMEOUT};
use crate::lxd::types::StateAction;
use crate::lxd::{Intent, LxdClient, LxdError, Settlement};

/// What a state change came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Changed {
    /// The instance is in the state the action leads to.
    Done,
    /// It is not known to be (a lost operation): the next look decides.
    Unsure,
    /// LXD refused or the operation failed, with LXD's message ("already running" and the
    /// like pass by themselves; a start that fails every time does not).
    Refused(String),
}

/// Changes the instance's state and waits.
pub(super) async fn change_state(
    client: &LxdClient,
    name: &str,
    action: StateAction,
) -> Result<Changed, Failure> {
    let timeout = (action == StateAction::Stop).then_some(STOP_TIMEOUT);
    let handle = client.change_state(name, action, timeout, false).await?;
    match client.wait(&handle, OPERATION_TIMEOUT).await {
        Ok(_) => Ok(Changed::Done),
        Err(LxdError::OperationLost { .. }) => {
            let settled = client
                .settle_lost(&Intent::ChangeState { name, action })
                .await?;
            Ok(if matches!(settled, Settlement::Done(_)) {
                Changed::Done
            } else {
                Changed::Unsure
            })
        }
        Err(LxdError::Timeout { .. }) if action == StateAction::Stop => {
            // A graceful stop that did not finish: force it.
            let handle = client
                .change_state(name, StateAction::Stop, None, true)
                .await?;
            client.wait(&handle, OPERATION_TIMEOUT).await?;
            Ok(Changed::Done)
        }
        Err(LxdError::OperationFailed { message } | LxdError::Invalid { message }) => {
            tracing::debug!(instance = name, ?action, %message, "LXD refused the state change");
            Ok(Changed::Refused(message))
        }
        Err(error) => Err(Failure::Lxd(error)),
    }
}
