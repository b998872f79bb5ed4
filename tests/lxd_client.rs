//! The LXD client against the real 3-member cluster: members and capacity, creates through
//! one member waited through another, operations that vanished, LXD's errors, pinning, ETags,
//! events, trust bootstrap and the unix socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use lxd_operator::lxd::events::{EventStreamItem, LifecycleAction};
use lxd_operator::lxd::types::{InstanceCreate, InstanceSource, StateAction, Target, UID_KEY};
use lxd_operator::lxd::{
    ClientConfig, ClientIdentity, Endpoint, Intent, LxdClient, LxdError, ServerTrust, Settlement,
};
use lxd_operator_tests::{TestCluster, busybox, operator_binary, unique_name};

const WAIT: Duration = Duration::from_secs(60);

async fn create(client: &LxdClient, request: &InstanceCreate, member: &str) {
    let handle = client
        .create_instance(request, &Target::Member(member.to_owned()))
        .await
        .unwrap();
    client.wait(&handle, WAIT).await.unwrap();
}

async fn delete(client: &LxdClient, name: &str) {
    if let Ok(handle) = client
        .change_state(name, StateAction::Stop, None, true)
        .await
    {
        let _ = client.wait(&handle, WAIT).await;
    }
    let handle = client.delete_instance(name).await.unwrap();
    client.wait(&handle, WAIT).await.unwrap();
}

#[tokio::test]
async fn members_their_state_and_resources_are_read_for_every_member() {
    let cluster = TestCluster::get();
    let client = cluster.client_all();
    let info = client.ensure_trusted().await.unwrap();
    assert!(info.environment.server_clustered);
    let members = client.members().await.unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.server_name.as_str()).collect();
    assert_eq!(names, cluster.members);
    for member in &members {
        assert_eq!(member.status, "Online", "{member:?}");
        assert_eq!(member.failure_domain, "default");
        assert!(!member.architecture.is_empty());
        let resources = client.member_resources(&member.server_name).await.unwrap();
        assert!(
            resources.cpu.total >= 1 && resources.memory.total > resources.memory.used,
            "{resources:?}"
        );
        let pool = client
            .storage_pool_resources("local", &member.server_name)
            .await
            .unwrap();
        assert!(pool.space.total > 0, "{pool:?}");
        // LXD 5.0.2 has no member state (501): reported as absent, not as an error.
        assert!(
            client
                .member_state(&member.server_name)
                .await
                .unwrap()
                .is_none()
        );
    }
    let groups = client.cluster_groups().await.unwrap();
    assert!(
        groups
            .iter()
            .any(|g| g.name == "default" && g.members.len() == cluster.members.len()),
        "{groups:?}"
    );
}

#[tokio::test]
async fn each_member_reports_the_usage_of_its_own_instances() {
    let cluster = TestCluster::get();
    let client = cluster.client_all();
    let name = unique_name("metrics");
    create(&client, &busybox(&name), &cluster.members[1]).await;
    let handle = client
        .change_state(&name, StateAction::Start, None, false)
        .await
        .unwrap();
    client.wait(&handle, WAIT).await.unwrap();
    // LXD caches metrics for a few seconds: a new instance shows up on a later scrape.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let on_member = client
            .member_instance_metrics(&cluster.members[1])
            .await
            .unwrap();
        if let Some(metrics) = on_member.into_iter().find(|m| m.name == name) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never showed up in member 2's metrics"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(metrics.memory_used_bytes > 0.0, "{metrics:?}");
    let elsewhere = client
        .member_instance_metrics(&cluster.members[2])
        .await
        .unwrap();
    assert!(
        elsewhere.iter().all(|m| m.name != name),
        "member 3 reported an instance of member 2"
    );
    delete(&client, &name).await;
}

/// Counts the metrics reads the client sends, by endpoint.
#[derive(Debug, Default)]
struct MetricsReads(std::sync::Mutex<Vec<String>>);

impl lxd_operator::lxd::client::RequestObserver for MetricsReads {
    fn observe(&self, endpoint: &str, _: &str, call: &str, _: Option<u16>, _: Duration) {
        if call == "metrics" {
            self.0.lock().unwrap().push(endpoint.to_owned());
        }
    }
}

#[tokio::test]
async fn usage_is_read_from_each_member_itself_and_reused_by_the_next_observation() {
    let cluster = TestCluster::get();
    let reads = std::sync::Arc::new(MetricsReads::default());
    let mut config = cluster.client_config(&[0, 1, 2]);
    config.observer = Some(reads.clone());
    let client = LxdClient::new(config).unwrap();

    let first = client.observe_members().await.unwrap();
    let second = client.observe_members().await.unwrap();

    assert_eq!(first.members.len(), 3);
    let mut read_from = reads.0.lock().unwrap().clone();
    read_from.sort();
    let mut endpoints = cluster.endpoints.clone();
    endpoints.sort();
    assert_eq!(
        read_from, endpoints,
        "each member's metrics once, from its own endpoint"
    );
    for (a, b) in first.members.iter().zip(&second.members) {
        assert_eq!(a.instance_memory_used_bytes, b.instance_memory_used_bytes);
    }
}

#[tokio::test]
async fn a_create_through_one_member_is_waited_through_the_same_or_another_member() {
    let cluster = TestCluster::get();
    // Through member 1's endpoint, placed on node3, waited through member 1.
    let via_first = cluster.client(&[0]);
    let first = unique_name("via1");
    let handle = via_first
        .create_instance(
            &busybox(&first),
            &Target::Member(cluster.members[2].clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        handle.operation.location, cluster.members[2],
        "the operation runs on the target member"
    );
    via_first.wait(&handle, WAIT).await.unwrap();
    assert_eq!(
        via_first.instance(&first).await.unwrap().value.location,
        cluster.members[2]
    );

    // Through member 2's endpoint, waited from member 3's endpoint.
    let via_second = cluster.client(&[1]);
    let via_third = cluster.client(&[2]);
    let second = unique_name("via2");
    let handle = via_second
        .create_instance(&busybox(&second), &Target::Any)
        .await
        .unwrap();
    via_third.wait(&handle, WAIT).await.unwrap();
    assert_eq!(
        via_third.instance(&second).await.unwrap().value.name,
        second
    );

    delete(&via_first, &first).await;
    delete(&via_first, &second).await;
}

#[tokio::test]
async fn a_wait_after_the_operation_vanished_ends_in_the_real_state() {
    let cluster = TestCluster::get();
    let client = cluster.client_all();
    let name = unique_name("vanished");
    let uid = format!("uid-{name}");
    let mut request = busybox(&name);
    request.config.insert(UID_KEY.into(), uid.clone());
    let handle = client
        .create_instance(&request, &Target::Member(cluster.members[0].clone()))
        .await
        .unwrap();
    // LXD forgets finished operations after about ten seconds.
    let deadline = Instant::now() + Duration::from_secs(40);
    while client.operation(&handle).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "operation {} never vanished",
            handle.id
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(matches!(
        client.wait(&handle, WAIT).await,
        Err(LxdError::OperationLost { .. })
    ));
    match client
        .wait_or_settle(
            &handle,
            &Intent::Create {
                name: &name,
                uid: &uid,
            },
            WAIT,
        )
        .await
        .unwrap()
    {
        Settlement::Done(Some(instance)) => {
            assert_eq!(instance.status, "Stopped");
            assert_eq!(instance.location, cluster.members[0]);
        }
        other => panic!("expected the created instance, got {other:?}"),
    }
    // An instance of that name with another owner is never taken for ours.
    match client
        .settle_lost(&Intent::Create {
            name: &name,
            uid: "someone-else",
        })
        .await
    {
        Err(LxdError::AlreadyExists { message }) => assert!(message.contains(&uid), "{message}"),
        other => panic!("{other:?}"),
    }
    delete(&client, &name).await;
}

#[tokio::test]
async fn a_failed_operation_is_an_error_with_lxds_reason_and_each_mistake_has_its_variant() {
    let cluster = TestCluster::get();
    let client = cluster.client_all();
    let member = Target::Member(cluster.members[1].clone());

    // Refused at once.
    let mut unknown_image = busybox(&unique_name("noimage"));
    unknown_image.source = InstanceSource::alias("no-such-image");
    match client.create_instance(&unknown_image, &member).await {
        Err(LxdError::NotFound { message }) => assert_eq!(message, "Image alias not found"),
        other => panic!("{other:?}"),
    }
    match client
        .create_instance(
            &busybox(&unique_name("nomember")),
            &Target::Member("node99".into()),
        )
        .await
    {
        Err(LxdError::NotFound { message }) => assert_eq!(message, "Cluster member not found"),
        other => panic!("{other:?}"),
    }
    match client.create_instance(&busybox("bad_name"), &member).await {
        Err(LxdError::Invalid { message }) => {
            assert!(message.contains("Invalid instance name"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // Refused inside the operation (LXD answers 200 with status Failure).
    let mut bad_key = busybox(&unique_name("badkey"));
    bad_key.config.insert("no.such.key".into(), "1".into());
    let handle = client.create_instance(&bad_key, &member).await.unwrap();
    match client.wait(&handle, WAIT).await {
        Err(LxdError::Invalid { message }) => assert!(
            message.contains("Unknown configuration key: no.such.key"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let mut bad_memory = busybox(&unique_name("badmem"));
    bad_memory
        .config
        .insert("limits.memory".into(), "lots".into());
    let handle = client.create_instance(&bad_memory, &member).await.unwrap();
    match client.wait(&handle, WAIT).await {
        Err(LxdError::Invalid { message }) => assert!(message.contains("lots"), "{message}"),
        other => panic!("{other:?}"),
    }
    for name in [&bad_key.name, &bad_memory.name] {
        assert!(
            matches!(client.instance(name).await, Err(LxdError::NotFound { .. })),
            "{name} was half-created"
        );
    }

    let name = unique_name("dup");
    create(&client, &busybox(&name), &cluster.members[0]).await;
    let handle = client
        .create_instance(&busybox(&name), &member)
        .await
        .unwrap();
    match client.wait(&handle, WAIT).await {
        Err(LxdError::AlreadyExists { message }) => {
            assert!(message.contains("already exists"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    delete(&client, &name).await;
}

#[tokio::test]
async fn create_or_adopt_never_creates_twice_and_never_takes_a_strangers_instance() {
    let cluster = TestCluster::get();
    let client = cluster.client_all();
    let name = unique_name("adopt");
    let uid = format!("uid-{name}");
    let target = Target::Member(cluster.members[2].clone());
    let first = client
        .create_or_adopt(&busybox(&name), &target, &uid, WAIT)
        .await
        .unwrap();
    assert!(matches!(
        first,
        lxd_operator::lxd::CreateOutcome::Created(_)
    ));
    assert_eq!(first.instance().config.get(UID_KEY), Some(&uid));
    // A retry (after a crash, say) finds the instance by its uid.
    let again = client
        .create_or_adopt(&busybox(&name), &target, &uid, WAIT)
        .await
        .unwrap();
    assert!(matches!(
        again,
        lxd_operator::lxd::CreateOutcome::Adopted(_)
    ));
    assert_eq!(
        client
            .instances_with_config(UID_KEY, &uid)
            .await
            .unwrap()
            .len(),
        1
    );
    // Another owner asking for the same name is refused.
    match client
        .create_or_adopt(&busybox(&name), &target, "someone-else", WAIT)
        .await
    {
        Err(LxdError::AlreadyExists { message }) => assert!(message.contains(&uid), "{message}"),
        other => panic!("{other:?}"),
    }
    delete(&client, &name).await;
}

#[tokio::test]
async fn every_member_passes_the_pin_and_a_wrong_pin_fails_the_handshake() {
    let cluster = TestCluster::get();
    let identity = ClientIdentity::from_pem(
        &std::fs::read(&cluster.client_cert).unwrap(),
        &std::fs::read(&cluster.client_key).unwrap(),
    )
    .unwrap();
    let pem_pin =
        ServerTrust::from_certificate_pem(&std::fs::read(&cluster.server_cert).unwrap()).unwrap();
    assert_eq!(
        pem_pin,
        ServerTrust::from_fingerprint(&cluster.server_fingerprint).unwrap()
    );
    let wrong_pin = ServerTrust::from_fingerprint(&"ab".repeat(32)).unwrap();
    for endpoint in &cluster.endpoints {
        let endpoints = vec![Endpoint::parse(endpoint).unwrap()];
        let pinned = LxdClient::new(ClientConfig::new(
            endpoints.clone(),
            Some(identity.clone()),
            pem_pin.clone(),
        ))
        .unwrap();
        assert!(
            pinned.server_info().await.unwrap().is_trusted(),
            "{endpoint}"
        );
        let wrong = LxdClient::new(ClientConfig::new(
            endpoints,
            Some(identity.clone()),
            wrong_pin.clone(),
        ))
        .unwrap();
        match wrong.server_info().await {
            Err(LxdError::Tls { message, .. }) => {
                assert!(message.to_lowercase().contains("certificate"), "{message}")
            }
            other => panic!("{endpoint}: a wrong pin must fail the handshake: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_update_with_a_stale_etag_is_a_conflict() {
    let cluster = TestCluster::get();
    let client = cluster.client_all();
    let name = unique_name("etag");
    create(&client, &busybox(&name), &cluster.members[0]).await;
    let read = client.instance(&name).await.unwrap();
    let stale = read.etag.clone().expect("LXD sends an ETag");
    let mut put = read.value.to_put();
    put.config.insert("user.note".into(), "first".into());
    let handle = client
        .update_instance(&name, &put, Some(&stale))
        .await
        .unwrap();
    client.wait(&handle, WAIT).await.unwrap();
    put.config.insert("user.note".into(), "second".into());
    match client.update_instance(&name, &put, Some(&stale)).await {
        Err(LxdError::Conflict { message }) => assert!(message.contains("ETag"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client
            .instance(&name)
            .await
            .unwrap()
            .value
            .config
            .get("user.note")
            .map(String::as_str),
        Some("first")
    );
    delete(&client, &name).await;
}

#[tokio::test]
async fn the_event_stream_reports_create_start_stop_and_delete_on_each_member_within_a_second() {
    let cluster = TestCluster::get();
    let client = cluster.client(&[0]);
    let mut events = client.events(&["lifecycle", "operation"]);
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Some(EventStreamItem::Connected { .. })) => {}
        other => panic!("no connection: {other:?}"),
    }
    for member in &cluster.members {
        let name = unique_name(&format!("ev-{member}"));
        let steps: [(&str, &[LifecycleAction]); 4] = [
            ("create", &[LifecycleAction::InstanceCreated]),
            ("start", &[LifecycleAction::InstanceStarted]),
            (
                "stop",
                &[
                    LifecycleAction::InstanceStopped,
                    LifecycleAction::InstanceShutdown,
                ],
            ),
            ("delete", &[LifecycleAction::InstanceDeleted]),
        ];
        for (step, expected) in steps {
            let handle = match step {
                "create" => {
                    client
                        .create_instance(&busybox(&name), &Target::Member(member.clone()))
                        .await
                }
                "start" => {
                    client
                        .change_state(&name, StateAction::Start, None, false)
                        .await
                }
                "stop" => {
                    client
                        .change_state(&name, StateAction::Stop, None, true)
                        .await
                }
                _ => client.delete_instance(&name).await,
            }
            .unwrap();
            client.wait(&handle, WAIT).await.unwrap();
            let done = Instant::now();
            loop {
                let left = Duration::from_secs(1).saturating_sub(done.elapsed());
                let item = tokio::time::timeout(left, events.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("no {step} event for {name} on {member} within a second")
                    });
                let Some(EventStreamItem::Event(event)) = item else {
                    continue;
                };
                if let Some(lifecycle) = event.lifecycle()
                    && event.instance_name().as_deref() == Some(name.as_str())
                    && expected.contains(&lifecycle.action)
                {
                    assert_eq!(&event.location, member, "{step} of {name}");
                    break;
                }
            }
        }
    }
}

#[tokio::test]
async fn an_untrusted_client_is_told_so_and_works_after_redeeming_a_token() {
    let cluster = TestCluster::get();
    let dir = std::env::temp_dir().join(unique_name("untrusted"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=untrusted-test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let identity = ClientIdentity::from_pem(
        &std::fs::read(&cert).unwrap(),
        &std::fs::read(&key).unwrap(),
    )
    .unwrap();
    let trust = ServerTrust::from_fingerprint(&cluster.server_fingerprint).unwrap();
    let endpoints = vec![Endpoint::parse(&cluster.endpoints[1]).unwrap()];
    let client =
        LxdClient::new(ClientConfig::new(endpoints, Some(identity.clone()), trust)).unwrap();
    match client.ensure_trusted().await {
        Err(LxdError::Untrusted { message }) => {
            assert!(message.contains("does not trust"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.members().await,
        Err(LxdError::Untrusted { .. })
    ));

    // A token issued by member 2, redeemed there with the CLI.
    let issued = cluster.lxc_on(
        1,
        &[
            "config",
            "trust",
            "add",
            "--name",
            "untrusted-test",
            "--quiet",
        ],
    );
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let token = String::from_utf8_lossy(&issued.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let output = std::process::Command::new(operator_binary())
        .args([
            "lxd",
            "trust",
            "--endpoint",
            &cluster.endpoints[1],
            "--token",
            &token,
        ])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lxd trust failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("is now trusted"));
    assert_eq!(client.members().await.unwrap().len(), cluster.members.len());

    cluster.lxc(&["config", "trust", "remove", &identity.fingerprint()]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_unix_socket_endpoint_is_trusted_without_certificates() {
    let cluster = TestCluster::get();
    let socket = cluster.lxd_dirs[0].join("unix.socket");
    let endpoint = Endpoint::parse(&format!("unix://{}", socket.display())).unwrap();
    let client = LxdClient::new(ClientConfig::new(
        vec![endpoint],
        None,
        ServerTrust::InsecureSkipVerify,
    ))
    .unwrap();
    assert!(client.ensure_trusted().await.is_ok());
    assert_eq!(client.members().await.unwrap().len(), cluster.members.len());
    let mut events = client.events(&["lifecycle"]);
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await,
        Ok(Some(EventStreamItem::Connected { .. }))
    ));
}

#[tokio::test]
async fn every_limit_form_lxd_accepts_is_counted_as_what_it_holds_on_its_member() {
    let cluster = TestCluster::get();
    let client = cluster.client_all();
    let prefix = unique_name("limits");
    let host = client.member_resources("node2").await.unwrap();
    let (cpus, memory) = (f64::from(host.cpu.total), host.memory.total);
    // (config a user gives `lxc init`, CPU cores and memory bytes it holds)
    let forms: Vec<(Vec<&str>, Option<f64>, Option<u64>)> = vec![
        (vec!["limits.memory=6000MiB"], None, Some(6000 << 20)),
        (vec!["limits.memory=6000MB"], None, Some(6_000_000_000)),
        (vec!["limits.memory=6GB"], None, Some(6_000_000_000)),
        (vec!["limits.memory=2GiB"], None, Some(2 << 30)),
        (vec!["limits.memory=1500kB"], None, Some(1_500_000)),
        (vec!["limits.memory=1500KiB"], None, Some(1500 << 10)),
        (vec!["limits.memory=1TB"], None, Some(1_000_000_000_000)),
        (vec!["limits.memory=1TiB"], None, Some(1 << 40)),
        (vec!["limits.memory=268435456"], None, Some(268_435_456)),
        (vec!["limits.memory=268435456B"], None, Some(268_435_456)),
        (vec!["limits.memory=100 bytes"], None, Some(100)),
        (vec!["limits.memory=50%"], None, Some(memory / 2)),
        (vec!["limits.cpu=2"], Some(2.0), None),
        (vec!["limits.cpu=0-1"], Some(2.0), None),
        (vec!["limits.cpu=1,3"], Some(2.0), None),
        (vec!["limits.cpu=0-1,3"], Some(3.0), None),
        (vec!["limits.cpu=0-0"], Some(1.0), None),
        (
            vec!["limits.cpu=2", "limits.cpu.allowance=50ms/100ms"],
            Some(0.5),
            None,
        ),
        (
            vec!["limits.cpu=2", "limits.cpu.allowance=150ms/100ms"],
            Some(1.5),
            None,
        ),
        (vec!["limits.cpu.allowance=50%"], Some(cpus / 2.0), None),
        (
            vec!["limits.cpu=2", "limits.cpu.allowance=50%"],
            Some(1.0),
            None,
        ),
    ];
    let mut names = Vec::new();
    for (index, (config, _, _)) in forms.iter().enumerate() {
        let name = format!("{prefix}-{index}");
        let mut args = vec!["init", "busybox", name.as_str(), "--target", "node2"];
        for pair in config {
            args.extend(["-c", pair]);
        }
        cluster.lxc(&args);
        names.push(name);
    }
    // A profile's limit counts too (the instance's own config does not have it).
    let profile = format!("{prefix}-profile");
    cluster.lxc(&["profile", "create", &profile]);
    cluster.lxc(&["profile", "set", &profile, "limits.memory", "3GiB"]);
    let from_profile = format!("{prefix}-p");
    cluster.lxc(&[
        "init",
        "busybox",
        &from_profile,
        "--target",
        "node2",
        "-p",
        "default",
        "-p",
        &profile,
    ]);

    let instances = client.instances().await.unwrap();
    let limits_of = |name: &str| {
        instances
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .limits(Some(&host))
    };
    for ((config, cpu, memory_bytes), name) in forms.iter().zip(&names) {
        let limits = limits_of(name);
        assert_eq!(
            (limits.cpu, limits.memory_bytes),
            (*cpu, *memory_bytes),
            "{config:?}"
        );
    }
    assert_eq!(limits_of(&from_profile).memory_bytes, Some(3 << 30));

    // The observation placement and the cluster status are made from holds them all.
    let observation = client.observe_members().await.unwrap();
    let node2 = observation
        .members
        .iter()
        .find(|m| m.member.server_name == "node2")
        .unwrap();
    let ours: u64 = forms.iter().filter_map(|(_, _, m)| *m).sum::<u64>() + (3 << 30);
    assert!(
        node2.allocated.memory_bytes >= ours,
        "node2 allocated {} bytes, the test's instances alone hold {ours}",
        node2.allocated.memory_bytes
    );

    for name in names.iter().chain([&from_profile]) {
        cluster.lxc(&["delete", "--force", name]);
    }
    cluster.lxc(&["profile", "delete", &profile]);
}
