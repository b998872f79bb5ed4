//! Random spread for retry delays, so that many waiters that failed together do not come back
//! together.

use std::time::Duration;

/// `base` times a random factor from `1 - spread` to `1 + spread` (`spread` 0.2: ±20%).
pub fn jittered(base: Duration, spread: f64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per process and per instance: enough for a jitter, with no
    // random number crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
    base.mul_f64(1.0 - spread + 2.0 * spread * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_spread_within_the_bounds_and_differ() {
        let base = Duration::from_secs(2);
        let delays: Vec<Duration> = (0..50).map(|_| jittered(base, 0.5)).collect();
        assert!(delays.iter().all(|d| *d >= base / 2 && *d <= base * 3 / 2));
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
    }
}
