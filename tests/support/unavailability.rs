//! How many of a set's children were not Ready at once, watched while something disrupts them
//! (a rolling update, a drain, a rebalance): the figure a set's `maxUnavailable` bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;
use lxd_operator_crds::LxdContainer;

use crate::operator::Operator;

/// Watches the LxdContainers of `namespace` that `label_selector` selects (all when empty) and
/// records the most of `replicas` that were not Ready at once (one not there yet counts as not
/// Ready), until dropped or asked for [`Unavailability::most`].
#[derive(Debug)]
pub struct Unavailability {
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Unavailability {
    pub fn watch(
        operator: &Operator,
        namespace: &str,
        label_selector: &str,
        replicas: usize,
    ) -> Unavailability {
        let most = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime.block_on(operator.kube_client());
        let api: Api<LxdContainer> = Api::namespaced(client, namespace);
        let mut config = watcher::Config::default();
        if !label_selector.is_empty() {
            config = config.labels(label_selector);
        }
        let (most_seen, stopped) = (most.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let mut ready: BTreeMap<String, bool> = BTreeMap::new();
                // The initial listing arrives one object at a time: count once it is whole.
                let mut listed = false;
                let mut events = watcher::watcher(api, config).boxed();
                while !stopped.load(Ordering::SeqCst) {
                    let Ok(Some(event)) =
                        tokio::time::timeout(Duration::from_millis(200), events.next()).await
                    else {
                        continue;
                    };
                    match event {
                        Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                            ready.insert(c.metadata.name.clone().unwrap(), is_ready(&c));
                        }
                        Ok(watcher::Event::Delete(c)) => {
                            ready.remove(c.metadata.name.as_deref().unwrap());
                        }
                        Ok(watcher::Event::InitDone) => listed = true,
                        _ => continue,
                    }
                    if !listed {
                        continue;
                    }
                    let up = ready.values().filter(|r| **r).count();
                    most_seen.fetch_max(replicas.saturating_sub(up), Ordering::SeqCst);
                }
            });
        });
        Unavailability {
            most,
            stop,
            thread: Some(thread),
        }
    }

    /// The most not Ready at once so far.
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

impl Drop for Unavailability {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a container counts as available: Ready, not being deleted, not being moved.
pub fn is_ready(container: &LxdContainer) -> bool {
    container.metadata.deletion_timestamp.is_none()
        && container.status.as_ref().is_some_and(|s| {
            s.moving.is_none()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
