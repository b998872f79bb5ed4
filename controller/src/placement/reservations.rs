//! Decisions LXD does not show yet. A reservation holds a container's member and request from
//! the decision until its instance shows up in LXD (or its create fails, or it is deleted);
//! applied to a snapshot, it counts as if the instance were there.

use std::collections::{BTreeMap, HashSet};

use super::model::{Request, Snapshot};

/// The reservations of one cluster, by container uid: the member and the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservations {
    by_uid: BTreeMap<String, (String, Request)>,
}

impl Reservations {
    /// Holds `member` for the container `uid`.
    pub fn reserve(&mut self, uid: &str, member: &str, request: &Request) {
        self.by_uid
            .insert(uid.to_owned(), (member.to_owned(), request.clone()));
    }

    /// Ends the reservation of `uid` (its create failed, or it was deleted).
    pub fn release(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }

    /// Reservations held.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// Ends the reservations whose instance LXD shows (`visible` uids), and counts the others
    /// into `snapshot` as if their instance were there.
    pub fn apply(&mut self, snapshot: &mut Snapshot, visible: &HashSet<String>) {
        self.by_uid.retain(|uid, _| !visible.contains(uid));
        for (member, request) in self.by_uid.values() {
            snapshot.land(member, request);
        }
    }
}
