//! The LXD client when members die: calls move on to the members that answer, an operation on
//! a dead member is reported lost and settled from the instance once the member is back, and the
//! event stream resumes after its daemon restarts, and leaves a member that stops answering
//! without closing the connection (its daemon paused). One test, run alone: it stops members.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use lxd_operator::lxd::events::{EventStreamItem, LifecycleAction};
use lxd_operator::lxd::types::{StateAction, Target};
use lxd_operator::lxd::{Intent, LxdClient, LxdError, Settlement};
use lxd_operator_tests::{TestCluster, busybox, unique_name};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_client_survives_members_that_die() {
    let cluster = TestCluster::get();
    calls_move_on_when_the_first_member_is_down(cluster).await;
    cluster.wait_all_online(Duration::from_secs(60));
    an_operation_on_a_dead_member_is_lost_then_settled_when_it_is_back(cluster).await;
    cluster.wait_all_online(Duration::from_secs(60));
    the_event_stream_resumes_after_its_daemon_restarts(cluster).await;
    cluster.wait_all_online(Duration::from_secs(60));
    an_event_stream_whose_member_stops_answering_moves_to_another_member(cluster).await;
    cluster.wait_all_online(Duration::from_secs(60));
}

async fn an_event_stream_whose_member_stops_answering_moves_to_another_member(
    cluster: &TestCluster,
) {
    let mut config = cluster.client_config(&[0, 1, 2]);
    config.events_idle_timeout = Duration::from_secs(3);
    let client = LxdClient::new(config).unwrap();
    let mut events = client.events(&["lifecycle"]);
    let first = match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
        Some(EventStreamItem::Connected { endpoint }) => endpoint,
        other => panic!("{other:?}"),
    };
    let index = cluster.endpoints.iter().position(|e| *e == first).unwrap();
    // A quiet, healthy stream lives past the idle timeout: LXD answers the client's pings.
    let quiet_until = std::time::Instant::now() + Duration::from_secs(7);
    while let Ok(item) = tokio::time::timeout_at(quiet_until.into(), events.recv()).await {
        assert!(
            matches!(
                item,
                Some(EventStreamItem::Event(_) | EventStreamItem::Alive)
            ),
            "a healthy stream broke: {item:?}"
        );
    }

    // The member's daemon stops answering; its TCP connection stays up (no FIN, no RST).
    let paused = cluster.pause_member(index);
    let started = std::time::Instant::now();
    let broke = loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(EventStreamItem::Disconnected { endpoint, error })) => break (endpoint, error),
            Ok(Some(EventStreamItem::Event(_) | EventStreamItem::Alive)) => continue,
            other => panic!("the stream hung on a paused member: {other:?}"),
        }
    };
    let waited = started.elapsed();
    drop(paused);
    assert_eq!(broke.0, first);
    assert!(broke.1.contains("no frame from LXD"), "{}", broke.1);
    assert!(
        waited < Duration::from_secs(8),
        "noticed after {waited:?}, not at the 3 s idle timeout"
    );
    let next = loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
            Some(EventStreamItem::Connected { endpoint }) => break endpoint,
            Some(_) => continue,
            None => panic!("the stream ended"),
        }
    };
    assert_ne!(
        next, first,
        "reconnected to the member that stopped answering"
    );
}

async fn calls_move_on_when_the_first_member_is_down(cluster: &TestCluster) {
    let client = cluster.client_all();
    cluster.script(&["stop-member", "1"]);
    let members = client
        .members()
        .await
        .expect("members through the other endpoints");
    assert_eq!(members.len(), cluster.members.len());
    assert_eq!(
        client.endpoint_order().last(),
        Some(&0),
        "the dead endpoint is tried last"
    );
    // A second call goes straight to a healthy member.
    let started = std::time::Instant::now();
    client.server_info().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    cluster.script(&["start-member", "1"]);
}

async fn an_operation_on_a_dead_member_is_lost_then_settled_when_it_is_back(cluster: &TestCluster) {
    let client = cluster.client_all();
    let name = unique_name("lost");
    let node2 = Target::Member(cluster.members[1].clone());
    let handle = client
        .create_instance(&busybox(&name), &node2)
        .await
        .unwrap();
    client.wait(&handle, WAIT).await.unwrap();
    let handle = client
        .change_state(&name, StateAction::Start, None, false)
        .await
        .unwrap();
    client.wait(&handle, WAIT).await.unwrap();

    // A graceful stop of busybox takes about 2.7 s: kill the member's daemon while it runs.
    let handle = client
        .change_state(
            &name,
            StateAction::Stop,
            Some(Duration::from_secs(30)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(handle.operation.location, cluster.members[1]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.script(&["stop-member", "2"]);
    match client.wait(&handle, WAIT).await {
        Err(LxdError::OperationLost { id, message }) => assert_eq!(id, handle.id, "{message}"),
        other => panic!("expected OperationLost, got {other:?}"),
    }

    cluster.script(&["start-member", "2"]);
    let intent = Intent::ChangeState {
        name: &name,
        action: StateAction::Stop,
    };
    // Right after its restart the member may still say it is unavailable: retry, as the
    // controller does with backoff.
    // Right after its restart the member may still say it is unavailable, or report its
    // instances' state as Error for a moment: ask again, as the controller does with backoff,
    // until LXD and the settlement agree on a real state.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let settled = match client.settle_lost(&intent).await {
            Err(error) if error.is_transient() && std::time::Instant::now() < deadline => None,
            other => Some(other.unwrap()),
        };
        let real = cluster
            .lxc(&["list", &name, "--format", "csv", "--columns", "s"])
            .trim()
            .to_owned();
        let agreed = match &settled {
            Some(Settlement::Done(Some(instance))) => {
                instance.status == "Stopped" && real == "STOPPED"
            }
            Some(Settlement::NotDone(Some(instance))) => {
                instance.status.to_uppercase() == real && real != "ERROR"
            }
            _ => false,
        };
        if agreed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "settlement {settled:?} never matched lxc ({real})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let handle = client
        .change_state(&name, StateAction::Stop, None, true)
        .await
        .unwrap();
    let _ = client.wait(&handle, WAIT).await;
    let handle = client.delete_instance(&name).await.unwrap();
    client.wait(&handle, WAIT).await.unwrap();
}

async fn the_event_stream_resumes_after_its_daemon_restarts(cluster: &TestCluster) {
    let client = cluster.client(&[2]);
    let mut events = client.events(&["lifecycle"]);
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await,
        Ok(Some(EventStreamItem::Connected { .. }))
    ));
    cluster.script(&["stop-member", "3"]);
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("no disconnect noticed")
        {
            Some(EventStreamItem::Disconnected { .. }) => break,
            Some(_) => continue,
            None => panic!("stream ended"),
        }
    }
    cluster.script(&["start-member", "3"]);
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("no reconnect")
        {
            Some(EventStreamItem::Connected { .. }) => break,
            Some(_) => continue,
            None => panic!("stream ended"),
        }
    }
    // The restarted member relays the other members' events once it has rejoined their event
    // hubs, a few seconds after it answers: create instances until one is reported.
    let writer = cluster.client(&[0]);
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let name = unique_name("resumed");
        let handle = writer
            .create_instance(&busybox(&name), &Target::Member(cluster.members[0].clone()))
            .await
            .unwrap();
        writer.wait(&handle, WAIT).await.unwrap();
        let reported = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(item) = events.recv().await {
                if let EventStreamItem::Event(event) = item
                    && event.instance_name().as_deref() == Some(name.as_str())
                    && event
                        .lifecycle()
                        .is_some_and(|l| l.action == LifecycleAction::InstanceCreated)
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let handle = writer.delete_instance(&name).await.unwrap();
        writer.wait(&handle, WAIT).await.unwrap();
        if reported {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event through the restarted member within 45 s"
        );
    }
}
