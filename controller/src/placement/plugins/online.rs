//! Filter `online`: only members LXD reports Online (not Offline, Evacuated, Blocked, ...).

use super::{Args, Context, Filter, no_args};
use crate::placement::model::Member;

#[derive(Debug)]
struct Online;

pub fn new(args: &Args) -> Result<Box<dyn Filter>, String> {
    no_args("online", args)?;
    Ok(Box::new(Online))
}

impl Filter for Online {
    fn name(&self) -> &'static str {
        "online"
    }

    fn filter(&self, _: &Context<'_>, member: &Member) -> Option<String> {
        (member.status != "Online").then(|| member.status.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn offline_and_evacuated_members_are_left_out_with_their_status() {
        let mut offline = member("node2", "default", 4.0, 8.0);
        offline.status = "Offline".into();
        let snapshot = snapshot(vec![]);
        let context = Context {
            request: &request(1.0, 1.0),
            snapshot: &snapshot,
            overcommit: Default::default(),
        };
        let filter = new(&Args::new()).unwrap();
        assert_eq!(
            filter.filter(&context, &member("node1", "default", 4.0, 8.0)),
            None
        );
        assert_eq!(
            filter.filter(&context, &offline).as_deref(),
            Some("offline")
        );
    }
}
