//! The ChangeState step: start, stop, freeze or unfreeze the instance and wait; a graceful stop
//! that does not finish is forced, and a lost operation is settled from the instance itself.

use super::failure::Failure;
use super::{OPERATION_TIMEOUT, STOP_TIMEOUT};
use crate::lxd::types::StateAction;
use crate::lxd::{Intent, LxdClient, LxdError, Settlement};

/// Changes the instance's state and waits. `Ok(true)`: it is in the state the action leads to;
/// `Ok(false)`: it is not known to be (the next look decides).
pub(super) async fn change_state(
    client: &LxdClient,
    name: &str,
    action: StateAction,
) -> Result<bool, Failure> {
    let timeout = (action == StateAction::Stop).then_some(STOP_TIMEOUT);
    let handle = client.change_state(name, action, timeout, false).await?;
    match client.wait(&handle, OPERATION_TIMEOUT).await {
        Ok(_) => Ok(true),
        Err(LxdError::OperationLost { .. }) => {
            let settled = client
                .settle_lost(&Intent::ChangeState { name, action })
                .await?;
            Ok(matches!(settled, Settlement::Done(_)))
        }
        Err(LxdError::Timeout { .. }) if action == StateAction::Stop => {
            // A graceful stop that did not finish: force it.
            let handle = client
                .change_state(name, StateAction::Stop, None, true)
                .await?;
            client.wait(&handle, OPERATION_TIMEOUT).await?;
            Ok(true)
        }
        // "already running" and the like: the next look decides.
        Err(LxdError::OperationFailed { .. } | LxdError::Invalid { .. }) => Ok(false),
        Err(error) => Err(Failure::Lxd(error)),
    }
}
