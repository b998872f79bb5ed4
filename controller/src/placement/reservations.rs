//! Decisions LXD does not show yet. A reservation holds a container's member and request from
//! the decision until its instance shows up in LXD (or its create fails, or it is deleted);
//! applied to a snapshot, it counts as if the instance were there.

use std::collections::{BTreeMap, HashSet};

use super::model::{Placed, Request, Resources, Snapshot};

#[derive(Debug, Clone, PartialEq)]
struct Reservation {
    member: String,
    resources: Resources,
    placed: Placed,
}

/// The reservations of one cluster, by container uid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservations {
    by_uid: BTreeMap<String, Reservation>,
}

impl Reservations {
    /// Holds `member` for the container `uid`.
    pub fn reserve(&mut self, uid: &str, member: &str, request: &Request) {
        let placed = Placed {
            namespace: request.namespace.clone(),
            name: request.name.clone(),
            labels: request.labels.clone(),
            member: member.to_owned(),
        };
        self.by_uid.insert(
            uid.to_owned(),
            Reservation {
                member: member.to_owned(),
                resources: request.resources,
                placed,
            },
        );
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
    /// into `snapshot`: their resources as allocated, one instance each, and their container
    /// as placed (for affinity and spreading).
    pub fn apply(&mut self, snapshot: &mut Snapshot, visible: &HashSet<String>) {
        self.by_uid.retain(|uid, _| !visible.contains(uid));
        for reservation in self.by_uid.values() {
            if let Some(member) = snapshot
                .members
                .iter_mut()
                .find(|m| m.name == reservation.member)
            {
                member.allocated = member.allocated.plus(reservation.resources);
                member.instances += 1;
                member.unlimited.0 += u32::from(reservation.resources.cpu <= 0.0);
                member.unlimited.1 += u32::from(reservation.resources.memory <= 0.0);
            }
            snapshot.placed.push(reservation.placed.clone());
        }
    }
}
