//! The LXD client under faults a real cluster cannot produce on demand, against the fake LXD of
//! `lxd_operator_tests::fake_lxd` (a unix socket; no real cluster is used here): a 500 while
//! waiting on a create is settled from the instance itself and never creates twice; a member
//! that hangs costs a bounded time, never a hung call; a slow member's answer is waited for and
//! holds up no other call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use lxd_operator::lxd::types::{Target, UID_KEY};
use lxd_operator::lxd::{ClientConfig, CreateOutcome, LxdClient, LxdError, ServerTrust};
use lxd_operator_tests::busybox;
use lxd_operator_tests::fake_lxd::{FakeLxd, Reply, error, operation_created, sync};
use serde_json::json;

fn client_of(fake: &FakeLxd, request_timeout: Duration) -> LxdClient {
    let mut config =
        ClientConfig::new(vec![fake.endpoint()], None, ServerTrust::InsecureSkipVerify);
    config.request_timeout = request_timeout;
    LxdClient::new(config).unwrap()
}

/// The instance `web` as LXD shows it once a create of ours made it.
fn created_instance() -> Reply {
    sync(
        json!({"name": "web", "status": "Stopped", "status_code": 102, "location": "none",
        "type": "container", "config": {UID_KEY: "uid-1"}}),
    )
}

/// A create answered with an operation whose wait fails with a 500, as a member whose
/// database hiccups mid-operation does; `instance` is what LXD then shows of it.
fn create_lost_to_a_500(instance: Reply) -> FakeLxd {
    FakeLxd::start(move |method, path| match (method, path) {
        ("POST", p) if p.starts_with("/1.0/instances") => {
            operation_created("op-create", "Creating instance", "web")
        }
        ("GET", p) if p.starts_with("/1.0/operations/op-create/wait") => error(
            500,
            "Failed to begin transaction: context deadline exceeded",
        ),
        ("GET", p) if p.starts_with("/1.0/instances/web") => instance.clone(),
        ("GET", p) if p.starts_with("/1.0/operations") => sync(json!({})),
        _ => error(404, "not found"),
    })
}

/// Creates (or adopts) the instance `web` for uid `uid-1` through `fake`.
async fn create_web(fake: &FakeLxd) -> Result<CreateOutcome, LxdError> {
    client_of(fake, Duration::from_secs(5))
        .create_or_adopt_by_name(
            &busybox("web"),
            &Target::Any,
            "uid-1",
            Duration::from_secs(5),
        )
        .await
}

#[tokio::test]
async fn a_500_while_waiting_on_a_create_is_settled_from_the_instance_and_never_creates_twice() {
    let fake = create_lost_to_a_500(created_instance());
    let outcome = create_web(&fake).await;
    match outcome {
        Ok(CreateOutcome::Created(instance)) => assert_eq!(instance.name, "web"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests_to("POST /1.0/instances").len(), 1);

    // Nothing was made: the loss is reported as such (the reconciler creates again later),
    // and this call did not create a second time on its own.
    let fake = create_lost_to_a_500(error(404, "Instance not found"));
    let outcome = create_web(&fake).await;
    assert!(
        matches!(outcome, Err(LxdError::OperationLost { .. })),
        "{outcome:?}"
    );
    assert_eq!(fake.requests_to("POST /1.0/instances").len(), 1);
}

#[tokio::test]
async fn a_member_that_hangs_costs_a_bounded_time_never_a_hung_call() {
    let fake = FakeLxd::start(|method, path| match (method, path) {
        ("GET", "/1.0/instances/silent") => Reply::Hang,
        ("GET", "/1.0/instances/half") => Reply::HeadThenHang,
        ("PUT", p) if p.starts_with("/1.0/instances/web/state") => {
            operation_created("op-start", "Starting instance", "web")
        }
        ("GET", p) if p.starts_with("/1.0/operations/op-start/wait") => Reply::Hang,
        _ => error(404, "not found"),
    });
    let client = client_of(&fake, Duration::from_secs(1));
    for name in ["silent", "half"] {
        let asked = Instant::now();
        let answer = client.instance(name).await;
        let took = asked.elapsed();
        // With no other endpoint to try, the timeout says the member is unavailable.
        assert!(
            matches!(&answer, Err(LxdError::Timeout { .. }))
                || matches!(&answer, Err(LxdError::Unavailable { message }) if message.contains("timed out")),
            "{name}: {answer:?}"
        );
        assert!(took < Duration::from_secs(3), "{name}: {took:?}");
    }

    // A wait on an operation of a hung member ends at its timeout, plus the grace a busy
    // member's own wait gets (10 s).
    let handle = client
        .change_state(
            "web",
            lxd_operator::lxd::types::StateAction::Start,
            None,
            false,
        )
        .await
        .unwrap();
    let asked = Instant::now();
    let waited = client.wait(&handle, Duration::from_secs(1)).await;
    let took = asked.elapsed();
    assert!(
        matches!(
            waited,
            Err(LxdError::Timeout { .. } | LxdError::OperationLost { .. })
        ),
        "{waited:?}"
    );
    assert!(took < Duration::from_secs(13), "{took:?}");
    println!("a hung wait ended after {took:?}");
}

#[tokio::test]
async fn a_slow_members_answer_is_waited_for_and_holds_up_no_other_call() {
    let fake = FakeLxd::start(|method, path| match (method, path) {
        ("GET", "/1.0/instances/slow") => {
            sync(json!({"name": "slow", "status": "Running"})).after(Duration::from_secs(3))
        }
        ("GET", "/1.0/instances/fast") => sync(json!({"name": "fast", "status": "Running"})),
        _ => error(404, "not found"),
    });
    let client = client_of(&fake, Duration::from_secs(10));
    let started = Instant::now();
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { (client.instance("slow").await, started.elapsed()) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let fast = client.instance("fast").await.unwrap();
        assert_eq!(fast.value.name, "fast");
    }
    let fast_done = started.elapsed();
    assert!(fast_done < Duration::from_secs(2), "{fast_done:?}");
    let (slow, slow_done) = slow.await.unwrap();
    assert_eq!(slow.unwrap().value.name, "slow");
    assert!(slow_done >= Duration::from_secs(3), "{slow_done:?}");
    println!("5 fast calls done at {fast_done:?} while the slow one took {slow_done:?}");
}
