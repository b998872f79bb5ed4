//! Quantities, read in one place: Kubernetes' as users write them in our specs (`256Mi`, `1G`,
//! `0.5Gi`, `1e9`, a plain number) and LXD's own in the config of any instance, ours or not
//! (`limits.memory` as `6000MiB`, `1GB`, `123456` or `50%` of the host; `limits.cpu` as a count
//! or a set of cores such as `0-1,3`; `limits.cpu.allowance` as `50%` or `25ms/100ms`).
//!
//! The LXD forms are exactly those LXD 5.0 accepts (tried on a real cluster, see
//! `tests/lxd_client.rs`): whole numbers only (`1.5GiB` and `12.5%` are refused), byte suffixes
//! `B`, ` bytes`, `kB` to `EB` and `KiB` to `EiB`, no space before a suffix.

use std::collections::BTreeSet;

use lxd_operator_crds::quantity::split_number;
pub use lxd_operator_crds::quantity::{QuantityError, parse_bytes};

/// An LXD limit that cannot be read (LXD itself refuses it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}: {why}")]
pub struct LxdLimitError {
    value: String,
    what: &'static str,
    why: &'static str,
}

/// LXD's byte suffixes (`shared/units.ParseByteSizeString`), as multipliers.
fn lxd_multiplier(suffix: &str) -> Option<u64> {
    Some(match suffix {
        "" | "B" | " bytes" => 1,
        "kB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "PB" => 1000u64.pow(5),
        "EB" => 1000u64.pow(6),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        "EiB" => 1 << 60,
        _ => return None,
    })
}

/// A whole number as LXD reads one (`strconv.ParseInt`): digits only.
fn lxd_whole(text: &str, what: &'static str) -> Result<u64, LxdLimitError> {
    let error = |why| LxdLimitError {
        value: text.to_owned(),
        what,
        why,
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error("not a whole number"));
    }
    text.parse().map_err(|_| error("too large"))
}

/// An instance's `limits.memory`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// A fixed size.
    Bytes(u64),
    /// A percentage of the host's memory.
    PercentOfHost(u64),
}

impl MemoryLimit {
    /// Reads `limits.memory` as LXD does.
    pub fn parse(text: &str) -> Result<MemoryLimit, LxdLimitError> {
        const WHAT: &str = "limits.memory";
        if let Some(percent) = text.strip_suffix('%') {
            return Ok(MemoryLimit::PercentOfHost(lxd_whole(percent, WHAT)?));
        }
        let (number, suffix) = split_number(text, false);
        let error = |why| LxdLimitError {
            value: text.to_owned(),
            what: WHAT,
            why,
        };
        let multiplier = lxd_multiplier(suffix).ok_or_else(|| {
            error("its suffix is not one of B, kB, MB, GB, TB, PB, EB, KiB, MiB, GiB, TiB, PiB, EiB or %")
        })?;
        lxd_whole(number, WHAT)?
            .checked_mul(multiplier)
            .map(MemoryLimit::Bytes)
            .ok_or_else(|| error("too large"))
    }

    /// Bytes on a host with `host_bytes` of memory.
    pub fn bytes(self, host_bytes: u64) -> u64 {
        match self {
            MemoryLimit::Bytes(bytes) => bytes,
            MemoryLimit::PercentOfHost(percent) => (u128::from(host_bytes) * u128::from(percent)
                / 100)
                .try_into()
                .unwrap_or(u64::MAX),
        }
    }
}

/// An instance's `limits.cpu`: how many CPUs it may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuLimit {
    /// Any `n` CPUs of the host (LXD balances them).
    Count(u64),
    /// These CPUs (pinned): a range `0-3`, a set `1,3`, or both `0-1,3`.
    Pinned(BTreeSet<u64>),
}

impl CpuLimit {
    /// Reads `limits.cpu` as LXD does.
    pub fn parse(text: &str) -> Result<CpuLimit, LxdLimitError> {
        const WHAT: &str = "limits.cpu";
        if !text.contains([',', '-']) {
            return lxd_whole(text, WHAT).map(CpuLimit::Count);
        }
        let mut cpus = BTreeSet::new();
        for part in text.split(',') {
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (lxd_whole(first, WHAT)?, lxd_whole(last, WHAT)?);
                    if first > last || last - first > 65_536 {
                        return Err(LxdLimitError {
                            value: text.to_owned(),
                            what: WHAT,
                            why: "a range must run from a lower to a higher CPU",
                        });
                    }
                    cpus.extend(first..=last);
                }
                None => {
                    cpus.insert(lxd_whole(part, WHAT)?);
                }
            }
        }
        Ok(CpuLimit::Pinned(cpus))
    }

    /// How many CPUs that is (a count of 0 sets no limit).
    pub fn cpus(&self) -> u64 {
        match self {
            CpuLimit::Count(count) => *count,
            CpuLimit::Pinned(cpus) => cpus.len() as u64,
        }
    }
}

/// An instance's `limits.cpu.allowance`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuAllowance {
    /// A soft share of the CPUs it may use, in percent (a weight under contention, as a
    /// Kubernetes CPU request is).
    Percent(u64),
    /// A hard quota: this much CPU time in every period.
    Quota {
        /// Milliseconds of CPU time.
        quota_ms: u64,
        /// In every so many milliseconds.
        period_ms: u64,
    },
}

impl CpuAllowance {
    /// Reads `limits.cpu.allowance` as LXD does.
    pub fn parse(text: &str) -> Result<CpuAllowance, LxdLimitError> {
        const WHAT: &str = "limits.cpu.allowance";
        if let Some(percent) = text.strip_suffix('%') {
            return lxd_whole(percent, WHAT).map(CpuAllowance::Percent);
        }
        let error = |why| LxdLimitError {
            value: text.to_owned(),
            what: WHAT,
            why,
        };
        let (quota, period) = text
            .split_once('/')
            .and_then(|(q, p)| Some((q.strip_suffix("ms")?, p.strip_suffix("ms")?)))
            .ok_or_else(|| error("write a percentage (50%) or a quota (25ms/100ms)"))?;
        let (quota_ms, period_ms) = (lxd_whole(quota, WHAT)?, lxd_whole(period, WHAT)?);
        if period_ms == 0 {
            return Err(error("the period must be more than 0ms"));
        }
        Ok(CpuAllowance::Quota {
            quota_ms,
            period_ms,
        })
    }

    /// CPU cores it amounts to, out of `cpus` it may run on (never more than those).
    pub fn cores(self, cpus: f64) -> f64 {
        match self {
            CpuAllowance::Percent(percent) => percent as f64 / 100.0 * cpus,
            CpuAllowance::Quota {
                quota_ms,
                period_ms,
            } => quota_ms as f64 / period_ms as f64,
        }
        .min(cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_memory_limit_form_lxd_accepts() {
        let host = 24 << 30;
        for (text, expected) in [
            ("6000MiB", 6000 << 20),
            ("6000MB", 6_000_000_000),
            ("6GB", 6_000_000_000),
            ("6GiB", 6 << 30),
            ("1500kB", 1_500_000),
            ("1500KiB", 1500 << 10),
            ("1TB", 1_000_000_000_000),
            ("1TiB", 1 << 40),
            ("123456", 123_456),
            ("123456B", 123_456),
            ("100 bytes", 100),
            ("50%", 12 << 30),
            ("150%", 36 << 30),
        ] {
            assert_eq!(
                MemoryLimit::parse(text).map(|limit| limit.bytes(host)),
                Ok(expected),
                "{text}"
            );
        }
    }

    #[test]
    fn memory_limits_lxd_refuses_are_errors() {
        for text in [
            "1.5GiB", "12.5%", "6000M", "6Gi", " 5GiB", "5 GiB", "", "%", "GiB",
        ] {
            assert!(MemoryLimit::parse(text).is_err(), "{text:?}");
        }
        assert!(
            MemoryLimit::parse("1.5GiB")
                .unwrap_err()
                .to_string()
                .contains("limits.memory")
        );
    }

    #[test]
    fn cpu_limits_are_counts_ranges_and_sets() {
        for (text, cpus) in [
            ("2", 2),
            ("0-1", 2),
            ("1,3", 2),
            ("0-1,3", 3),
            ("0-0", 1),
            ("0-3,2", 4),
            ("0", 0),
        ] {
            assert_eq!(CpuLimit::parse(text).map(|l| l.cpus()), Ok(cpus), "{text}");
        }
        for text in ["1-", "-1", "3-1", "a", "1.5", ""] {
            assert!(CpuLimit::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn cpu_allowances_are_shares_or_quotas() {
        let cores = |text: &str, cpus: f64| CpuAllowance::parse(text).map(|a| a.cores(cpus));
        assert_eq!(cores("50%", 2.0), Ok(1.0));
        assert_eq!(cores("150%", 2.0), Ok(2.0), "no more than its CPUs");
        assert_eq!(cores("25ms/100ms", 4.0), Ok(0.25));
        assert_eq!(cores("150ms/100ms", 2.0), Ok(1.5));
        assert_eq!(cores("50ms/200ms", 1.0), Ok(0.25));
        assert_eq!(cores("400ms/100ms", 2.0), Ok(2.0), "no more than its CPUs");
        for text in ["12.5%", "1.5ms/10ms", "25ms", "25/100", "1ms/0ms"] {
            assert!(CpuAllowance::parse(text).is_err(), "{text:?}");
        }
    }
}
