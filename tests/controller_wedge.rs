//! `/healthz` on a real wedge: every member of the LXD cluster stops answering (SIGSTOP, their
//! connections left open) under a running standalone operator. Its event stream then shows no
//! life, `/healthz` turns 503 saying so (Kubernetes would restart the pod), and it is healthy
//! again once the members go on. One test, run alone: it pauses the whole cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use lxd_operator_tests::operator::{Mode, Operator, wait_for};
use lxd_operator_tests::{TestCluster, cluster_manifest, http_get};

/// The least the flag takes: well above the 10 s between the stream's pings.
const STALL_SECONDS: u64 = 30;

#[test]
fn healthz_fails_while_every_member_is_paused_and_recovers_when_they_go_on() {
    let cluster = TestCluster::get();
    let operator = Operator::start_with(
        Mode::Standalone,
        &["--stall-seconds", &STALL_SECONDS.to_string()],
    );
    operator.apply(&cluster_manifest());
    let healthz = format!("{}/healthz", operator.metrics_url.as_ref().unwrap());
    wait_for(Duration::from_secs(30), "the cluster connected", || {
        let ready = operator.kubectl_ok(&[
            "get",
            "lxdcluster",
            "local",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"EventStream\")].status}",
        ]);
        (ready == "True").then_some(())
    });
    assert_eq!(http_get(&healthz).0, 200);

    let paused: Vec<_> = (0..cluster.members.len())
        .map(|index| cluster.pause_member(index))
        .collect();
    let since = Instant::now();
    let reason = wait_for(
        Duration::from_secs(STALL_SECONDS + 20),
        "/healthz to fail",
        || {
            let (code, body) = http_get(&healthz);
            (code == 503).then_some(body)
        },
    );
    let noticed = since.elapsed();
    println!("/healthz 503 after {noticed:?}: {reason}");
    assert!(reason.contains("event stream"), "{reason}");
    assert!(
        noticed >= Duration::from_secs(STALL_SECONDS - 10),
        "failed after {noticed:?}, before the stream could have been quiet for {STALL_SECONDS} s"
    );

    drop(paused);
    let resumed = Instant::now();
    wait_for(Duration::from_secs(60), "/healthz healthy again", || {
        (http_get(&healthz).0 == 200).then_some(())
    });
    println!(
        "healthy again {:?} after the members went on",
        resumed.elapsed()
    );
}
