//! The LXD instance name of an LxdContainer: deterministic, readable, and a valid LXD name.

use sha2::{Digest, Sha256};

/// LXD's limit on instance names.
const MAX_LENGTH: usize = 63;
/// Hex digits of the hash added when a name must be shortened.
const HASH_LENGTH: usize = 8;

/// `<namespace>-<name>` made a valid LXD instance name: only lower-case letters, digits and
/// `-` (dots become `-`), starting with a letter, at most 63 characters — shortened with a
/// hash of the full namespace/name when longer, so that two long names stay apart.
///
/// Two objects can still map to one name (`a-b`/`c` and `a`/`b-c`); the instance carries its
/// owner's uid, so such a clash is reported as a conflict, never taken over, and
/// `spec.instanceName` resolves it.
pub fn instance_name(namespace: &str, name: &str) -> String {
    let mut readable: String = format!("{namespace}-{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if !readable.starts_with(|c: char| c.is_ascii_alphabetic()) {
        readable.insert_str(0, "c-");
    }
    if readable.len() <= MAX_LENGTH {
        return readable;
    }
    let hash = hex::encode(Sha256::digest(format!("{namespace}/{name}").as_bytes()));
    let keep = MAX_LENGTH - HASH_LENGTH - 1;
    let prefix = readable[..keep].trim_end_matches('-');
    format!("{prefix}-{}", &hash[..HASH_LENGTH])
}

/// The name of the container's `incarnation`-th instance: `base` itself first, then
/// `<base>-r<incarnation>` after each reschedule (LXD keeps the old name while the failed
/// member is away), shortened to stay a valid LXD name.
pub fn incarnation_name(base: &str, incarnation: u32) -> String {
    if incarnation == 0 {
        return base.to_owned();
    }
    let suffix = format!("-r{incarnation}");
    let keep = MAX_LENGTH.saturating_sub(suffix.len()).min(base.len());
    let mut cut = keep;
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", base[..cut].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lxd_operator_crds::shared::INSTANCE_NAME_PATTERN;

    fn is_valid(name: &str) -> bool {
        regex::Regex::new(INSTANCE_NAME_PATTERN)
            .unwrap()
            .is_match(name)
    }

    #[test]
    fn short_names_read_as_namespace_dash_name() {
        assert_eq!(instance_name("default", "web-1"), "default-web-1");
        assert_eq!(instance_name("team-a", "db.primary"), "team-a-db-primary");
        assert_eq!(instance_name("1ns", "x"), "c-1ns-x");
    }

    #[test]
    fn long_names_are_shortened_with_a_hash_and_stay_distinct_and_valid() {
        let long = "a".repeat(70);
        let first = instance_name("default", &long);
        let second = instance_name("default", &format!("{long}b"));
        assert_eq!(first.len(), 63);
        assert_ne!(first, second);
        assert_eq!(first, instance_name("default", &long), "deterministic");
        for name in [
            first,
            second,
            instance_name(&"n".repeat(63), &"x-".repeat(120)),
        ] {
            assert!(is_valid(&name), "{name}");
        }
    }

    #[test]
    fn a_rescheduled_container_gets_an_incarnation_suffix_within_the_limit() {
        assert_eq!(incarnation_name("default-web-1", 0), "default-web-1");
        assert_eq!(incarnation_name("default-web-1", 2), "default-web-1-r2");
        let long = instance_name("default", &"a".repeat(70));
        let renamed = incarnation_name(&long, 12);
        assert_eq!(renamed.len(), 63);
        assert!(renamed.ends_with("-r12"));
        assert!(is_valid(&renamed), "{renamed}");
    }
}
