//! The embedded API server through kube-rs, as our own controller uses it: CRUD, status, the
//! finalizer helper, the event recorder, watchers, expired watches, many objects, and durability
//! across SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use lxd_operator_crds::container::DesiredState;
use lxd_operator_crds::{LxdContainer, LxdContainerStatus};
use lxd_operator_tests::operator::{Mode, Operator};
use serde_json::json;

async fn client(operator: &Operator) -> Client {
    operator.kube_client().await
}

fn container(name: &str) -> LxdContainer {
    LxdContainer::builder(name).build()
}

#[tokio::test]
async fn crud_and_status_through_kube_rs() {
    let operator = Operator::start(Mode::Apiserver);
    let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
    let created = api
        .create(&PostParams::default(), &container("c1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    let duplicate = api
        .create(&PostParams::default(), &container("c1"))
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, kube::Error::Api(ref s) if s.reason == "AlreadyExists"),
        "{duplicate:?}"
    );

    let mut changed = api.get("c1").await.unwrap();
    changed.spec.state = DesiredState::Stopped;
    let replaced = api
        .replace("c1", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    // A stale resourceVersion is a conflict.
    let stale = api
        .replace("c1", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, kube::Error::Api(ref s) if s.code == 409),
        "{stale:?}"
    );

    let status = json!({"status": LxdContainerStatus { member: Some("node2".into()), ..LxdContainerStatus::default() }});
    let patched = api
        .patch_status("c1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().member.as_deref(), Some("node2"));
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "a status write does not bump generation"
    );
    // Writes to the main resource ignore status.
    let mut with_status = api.get("c1").await.unwrap();
    with_status.status = None;
    let kept = api
        .replace("c1", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(kept.status.unwrap().member.as_deref(), Some("node2"));
    // A write that changes nothing bumps nothing.
    let again = api
        .patch_status("c1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        kept.metadata.resource_version
    );

    // A controller applies status server-side under its own field manager, forcing as
    // controllers do (the merge patch above made another manager own status.member).
    let applied_status = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
                                "status": {"member": "node3", "phase": "Running"}});
    let applied = api
        .patch_status(
            "c1",
            &PatchParams::apply("lxd-operator-controller").force(),
            &Patch::Apply(&applied_status),
        )
        .await
        .unwrap();
    let status = applied.status.clone().unwrap();
    assert_eq!(status.member.as_deref(), Some("node3"));
    let owner = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("lxd-operator-controller"))
        .unwrap();
    assert_eq!(owner.operation.as_deref(), Some("Apply"));
    assert_eq!(owner.subresource.as_deref(), Some("status"));
    // Without a field manager an apply is refused.
    let anonymous = api
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Apply(&applied_status),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(anonymous, kube::Error::Api(ref s) if s.code == 400),
        "{anonymous:?}"
    );

    api.delete("c1", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("c1").await.unwrap().is_none());
}

#[tokio::test]
async fn the_finalizer_helper_and_the_event_recorder_work() {
    let operator = Operator::start(Mode::Apiserver);
    let client = client(&operator).await;
    let api: Api<LxdContainer> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &container("f1"))
        .await
        .unwrap();
    let object = std::sync::Arc::new(api.get("f1").await.unwrap());
    finalizer(&api, "lxd-operator.dev/test", object, |event| async move {
        match event {
            Finalizer::Apply(_) => {
                Ok::<_, std::convert::Infallible>(kube::runtime::controller::Action::await_change())
            }
            Finalizer::Cleanup(_) => Ok(kube::runtime::controller::Action::await_change()),
        }
    })
    .await
    .unwrap();
    let with_finalizer = api.get("f1").await.unwrap();
    assert_eq!(with_finalizer.finalizers(), ["lxd-operator.dev/test"]);

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "lxd-operator-test".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Started".into(),
        note: Some("container started".into()),
        action: "Start".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &with_finalizer.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&event, &with_finalizer.object_ref(&()))
        .await
        .unwrap();
    let described = operator.kubectl_ok(&["describe", "lxdc", "f1"]);
    assert!(
        described.contains("Started")
            && described.contains("container started")
            && described.contains("lxd-operator-test"),
        "{described}"
    );

    api.delete("f1", &DeleteParams::default()).await.unwrap();
    let marked = std::sync::Arc::new(api.get("f1").await.unwrap());
    assert!(marked.metadata.deletion_timestamp.is_some());
    finalizer(&api, "lxd-operator.dev/test", marked, |event| async move {
        match event {
            Finalizer::Apply(_) | Finalizer::Cleanup(_) => {
                Ok::<_, std::convert::Infallible>(kube::runtime::controller::Action::await_change())
            }
        }
    })
    .await
    .unwrap();
    assert!(
        api.get_opt("f1").await.unwrap().is_none(),
        "the last finalizer removed: gone"
    );
}

#[tokio::test]
async fn a_watcher_sees_create_update_and_delete_in_order() {
    let operator = Operator::start(Mode::Apiserver);
    let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
    let stream = watcher(api.clone(), watcher::Config::default());
    let collected = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(event)) = stream.try_next().await {
            match event {
                watcher::Event::Apply(object) => {
                    seen.push(format!("apply {:?}", object.spec.state))
                }
                watcher::Event::Delete(object) => {
                    seen.push(format!("delete {}", object.name_any()));
                    break;
                }
                _ => {}
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.create(&PostParams::default(), &container("w1"))
        .await
        .unwrap();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"state": "Stopped"}})),
    )
    .await
    .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), collected)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, ["apply Running", "apply Stopped", "delete w1"]);
}

#[tokio::test]
async fn a_watcher_resuming_from_a_compacted_resource_version_relists_and_recovers() {
    let operator = Operator::start_with(Mode::Apiserver, &["--watch-history", "100"]);
    let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
    // A watcher of objects that do not change: its resourceVersion stays where it started, and
    // its one-second watches end and resume from it.
    let config = watcher::Config::default()
        .labels("group=watched")
        .timeout(1);
    let stream = watcher(api.clone(), config).touched_objects();
    let seen = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.next().await {
                Some(Ok(object)) if object.name_any() == "late" => return true,
                Some(_) => {}
                None => return false,
            }
        }
    });
    api.create(&PostParams::default(), &container("busy"))
        .await
        .unwrap();
    for i in 0..250 {
        api.patch(
            "busy",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"n": i.to_string()}}})),
        )
        .await
        .unwrap();
    }
    // Long enough for a watch to end and resume from the compacted resourceVersion (410).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut late = container("late");
    late.metadata.labels = Some([("group".to_owned(), "watched".to_owned())].into());
    api.create(&PostParams::default(), &late).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(15), seen)
            .await
            .unwrap()
            .unwrap(),
        "the watcher did not recover"
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_in_the_stream_and_a_relist_recovers() {
    let operator = Operator::start_with(Mode::Apiserver, &["--watch-history", "100"]);
    let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
    api.create(&PostParams::default(), &container("old"))
        .await
        .unwrap();
    for i in 0..250 {
        api.patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"n": i.to_string()}}})),
        )
        .await
        .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), "5")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected an in-stream 410, got {other:?}"),
    }
    // What kube-rs' watcher does next: relist, then watch from the list's resourceVersion.
    let list = api.list(&ListParams::default()).await.unwrap();
    let revision = list.metadata.resource_version.unwrap();
    let mut resumed = api
        .watch(&WatchParams::default().timeout(5), &revision)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "old",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"n": "last"}}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), resumed.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Modified(object))) => assert_eq!(object.labels()["n"], "last"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_thousand_objects_come_back_from_a_list_and_from_a_watch_at_zero() {
    let operator = Operator::start(Mode::Apiserver);
    let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
    let started = std::time::Instant::now();
    futures::stream::iter(0..1000)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &container(&format!("bulk-{i:04}")))
                    .await
                    .unwrap();
            }
        })
        .await;
    println!("1000 creates with 16 clients: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let all = api.list(&ListParams::default()).await.unwrap();
    println!("list of 1000: {:?}", started.elapsed());
    assert_eq!(all.items.len(), 1000);
    let paged = api.list(&ListParams::default().limit(300)).await.unwrap();
    assert_eq!(paged.items.len(), 300);
    assert!(paged.metadata.continue_.is_some());
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    let mut added = 0;
    while added < 1000 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(WatchEvent::Added(_))) => added += 1,
            Some(Ok(_)) => {}
            other => panic!("{other:?} after {added}"),
        }
    }
}

#[tokio::test]
async fn every_acknowledged_create_survives_sigkill() {
    let mut operator = Operator::start(Mode::Apiserver);
    let mut acknowledged = Vec::new();
    let mut last_revision = 0u64;
    for round in 0..3 {
        let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
        // The writer stops at its first failure, and also once the kill is under way: the server
        // restarts on the same port, and a writer that kept going would never end.
        let killing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let api = api.clone();
            let killing = killing.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0.. {
                    if killing.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let name = format!("durable-{round}-{i}");
                    match api.create(&PostParams::default(), &container(&name)).await {
                        Ok(created) => done.push((
                            name,
                            created.resource_version().unwrap().parse::<u64>().unwrap(),
                        )),
                        Err(_) => break,
                    }
                }
                done
            })
        };
        // Kill at a moment that differs from run to run.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        tokio::time::sleep(Duration::from_millis(200 + u64::from(nanos % 800))).await;
        killing.store(true, std::sync::atomic::Ordering::SeqCst);
        operator = operator.crash_and_restart();
        let done = writer.await.unwrap();
        assert!(
            !done.is_empty(),
            "round {round}: nothing was written before the kill"
        );
        let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
        for (name, revision) in &done {
            assert!(
                api.get_opt(name).await.unwrap().is_some(),
                "acknowledged {name} lost after SIGKILL"
            );
            assert!(*revision > last_revision);
        }
        last_revision = done.iter().map(|(_, r)| *r).max().unwrap();
        let after = api
            .create(
                &PostParams::default(),
                &container(&format!("after-{round}")),
            )
            .await
            .unwrap();
        let after_revision: u64 = after.resource_version().unwrap().parse().unwrap();
        assert!(
            after_revision > last_revision,
            "resourceVersion went back after restart"
        );
        last_revision = after_revision;
        acknowledged.extend(done);
    }
    println!("{} acknowledged creates across 3 kills", acknowledged.len());
}

#[tokio::test]
async fn concurrent_writers_lose_nothing_and_one_create_of_a_name_wins() {
    let operator = Operator::start(Mode::Apiserver);
    let api: Api<LxdContainer> = Api::namespaced(client(&operator).await, "default");
    let creates = futures::future::join_all(
        (0..8).map(|_| async { api.create(&PostParams::default(), &container("race")).await }),
    )
    .await;
    let won = creates.iter().filter(|c| c.is_ok()).count();
    assert_eq!(won, 1, "{creates:?}");
    assert!(creates.iter().all(|c| match c {
        Ok(_) => true,
        Err(kube::Error::Api(status)) => status.reason == "AlreadyExists",
        Err(_) => false,
    }));

    // Sixteen writers patch at once, none with a resourceVersion: every change stays.
    futures::future::join_all((0..16).map(|i| {
        let api = api.clone();
        async move {
            let patch = json!({"metadata": {"labels": {format!("writer-{i}"): "yes"}}});
            api.patch("race", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    }))
    .await;
    let labels = api.get("race").await.unwrap().labels().clone();
    assert_eq!(
        labels.keys().filter(|k| k.starts_with("writer-")).count(),
        16,
        "{labels:?}"
    );
}

#[tokio::test]
async fn get_patch_and_replace_scale_through_kube_rs() {
    use lxd_operator_crds::LxdContainerSet;
    use lxd_operator_crds::testing::container_set;

    let operator = Operator::start(Mode::Apiserver);
    let api: Api<LxdContainerSet> = Api::namespaced(client(&operator).await, "default");
    api.create(&PostParams::default(), &container_set("web", 2))
        .await
        .unwrap();
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(scale.status.map(|s| s.replicas), Some(0));

    let patched = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.as_ref().and_then(|s| s.replicas), Some(4));
    assert_eq!(api.get("web").await.unwrap().spec.replicas, 4);

    let mut replacing = patched.clone();
    replacing.spec = Some(kube::api::ScaleSpec { replicas: Some(6) });
    let replaced = api
        .replace_scale("web", &PostParams::default(), &replacing)
        .await
        .unwrap();
    assert_eq!(replaced.spec.and_then(|s| s.replicas), Some(6));
    // `replacing` carries the resourceVersion it was read at: now stale.
    let stale = api
        .replace_scale("web", &PostParams::default(), &replacing)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, kube::Error::Api(ref s) if s.code == 409),
        "{stale:?}"
    );
    let set = api.get("web").await.unwrap();
    assert_eq!((set.spec.replicas, set.metadata.generation), (6, Some(3)));
}

#[tokio::test]
async fn the_node_taint_is_written_under_a_resource_version_and_never_loses_kubelets_taints() {
    use k8s_openapi::api::core::v1::Node;
    use lxd_operator::kubernetes_nodes::node_figures::{LxdShare, node_patch, patch_node};
    use lxd_operator::placement::model::Resources;
    let operator = Operator::start(Mode::Apiserver);
    let client = client(&operator).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let registered: Node = serde_json::from_value(json!({
        "metadata": {"name": "node1"},
        "status": {"capacity": {"cpu": "4", "memory": "16Gi"}},
    }))
    .unwrap();
    nodes
        .create(&PostParams::default(), &registered)
        .await
        .unwrap();
    let read = nodes.get("node1").await.unwrap();
    // Its status is kubelet's registration, kept as created.
    assert_eq!(
        read.status.as_ref().unwrap().capacity.as_ref().unwrap()["memory"].0,
        "16Gi"
    );
    // kubelet taints the Node after the operator read it.
    nodes
        .patch(
            "node1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    let full = LxdShare {
        allocated: Resources {
            cpu: 1.0,
            memory: 15.0 * 1024f64.powi(3),
        },
        capacity: Resources {
            cpu: 4.0,
            memory: 16.0 * 1024f64.powi(3),
        },
    };
    let stale = node_patch(&read, "local/node1", &full, 80).unwrap();
    let conflict = patch_node(&client, "node1", &stale).await.unwrap_err();
    assert!(
        matches!(conflict, kube::Error::Api(ref s) if s.code == 409),
        "{conflict:?}"
    );
    let fresh = node_patch(&nodes.get("node1").await.unwrap(), "local/node1", &full, 80).unwrap();
    patch_node(&client, "node1", &fresh).await.unwrap();
    let tainted = nodes.get("node1").await.unwrap();
    let keys: Vec<String> = tainted
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(
        keys,
        [
            "node.kubernetes.io/disk-pressure",
            "lxd-operator.dev/lxd-pressure"
        ]
    );
    assert_eq!(
        tainted.metadata.annotations.unwrap()["lxd-operator.dev/lxd-share-percent"],
        "94"
    );
    assert!(tainted.status.unwrap().capacity.is_some());
}
