//! Placement decisions per second with the default policy (`least-loaded`) on clusters of 10,
//! 100, 1,000 and 5,000 members, each member holding 20 containers. Prints the rate per size and
//! the cost per member relative to the 10-member cluster (1.0 means the cost grows linearly).
//!
//! `cargo bench -p lxd-operator --bench placement`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lxd_operator::placement::model::{Member, Placed, Request, Resources, Snapshot};
use lxd_operator::placement::{decide, policy};
use lxd_operator_crds::container::PlacementStrategy;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn cluster(members: usize) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for i in 0..members {
        let name = format!("member-{i:05}");
        snapshot.members.push(Member {
            name: name.clone(),
            status: "Online".into(),
            architecture: "x86_64".into(),
            failure_domain: format!("rack-{}", i % 20),
            capacity: Resources {
                cpu: 64.0,
                memory: 256.0 * GIB,
            },
            allocated: Resources {
                cpu: (i % 17) as f64,
                memory: ((i % 13) as f64) * 4.0 * GIB,
            },
            usage: Resources {
                cpu: 0.0,
                memory: ((i % 7) as f64) * GIB,
            },
            instances: 20,
            ..Member::default()
        });
        for c in 0..20 {
            snapshot.placed.push(Placed {
                namespace: "default".into(),
                name: format!("c-{i}-{c}"),
                labels: [("app".to_owned(), format!("app-{}", c % 5))].into(),
                member: name.clone(),
            });
        }
    }
    snapshot
}

fn request() -> Request {
    Request {
        namespace: "default".into(),
        name: "new".into(),
        labels: [("app".to_owned(), "app-1".to_owned())].into(),
        resources: Resources {
            cpu: 1.0,
            memory: GIB,
        },
        ..Request::default()
    }
}

fn rate(members: usize, budget: Duration) -> f64 {
    let policy = policy::strategy(PlacementStrategy::LeastLoaded);
    let snapshot = cluster(members);
    let request = request();
    let started = Instant::now();
    let mut decisions = 0u64;
    while started.elapsed() < budget {
        black_box(decide(&policy, &request, &snapshot, decisions).ok());
        decisions += 1;
    }
    decisions as f64 / started.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement-decision");
    for members in [10usize, 100, 1000, 5000] {
        let policy = policy::strategy(PlacementStrategy::LeastLoaded);
        let snapshot = cluster(members);
        let request = request();
        group.bench_function(format!("{members}-members"), |b| {
            b.iter(|| black_box(decide(&policy, &request, &snapshot, 0).ok()))
        });
    }
    group.finish();

    // The figures the issue asks for, measured in this run beside the 10-member baseline.
    let baseline = rate(10, Duration::from_secs(1));
    println!("\nmembers  decisions/s  cost per member vs 10 members");
    for members in [10usize, 100, 1000, 5000] {
        let per_second = rate(members, Duration::from_secs(2));
        let ratio = (baseline / per_second) / (members as f64 / 10.0);
        println!("{members:>7}  {per_second:>11.0}  {ratio:.2}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
