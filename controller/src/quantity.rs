//! Quantities, read in one place: Kubernetes' as users write them in our specs (`256Mi`, `1G`,
//! `0.5Gi`, `1e9`, a plain number) and LXD's own in the config of any instance, ours or not
//! (`limits.memory` as `6000MiB`, `1GB`, `123456` or `50%` of the host; `limits.cpu` as a count
//! or a set of cores such as `0-1,3`; `limits.cpu.allowance` as `50%` or `25ms/100ms`).
//!
//! The LXD forms are exactly those LXD 5.0 accepts (tried on a real cluster, see
//! `tests/lxd_client.rs`): whole numbers only (`1.5GiB` and `12.5%` are refused), byte suffixes
//! `B`, ` bytes`, `kB` to `EB` and `KiB` to `EiB`, no space before a suffix.

use std::collections::BTreeSet;

use lxd_operator_crds::shared::IntOrString;

/// A quantity that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a quantity of bytes: {why} (write e.g. 256Mi, 1Gi or 500M)")]
pub struct QuantityError {
    value: String,
    why: &'static str,
}

/// An LXD limit that cannot be read (LXD itself refuses it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}: {why}")]
pub struct LxdLimitError {
    value: String,
    what: &'static str,
    why: &'static str,
}

/// Splits `text` where its leading number (digits and, if `decimal`, one point) ends.
fn split_number(text: &str, decimal: bool) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || (decimal && c == '.')))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Kubernetes' suffixes (binary and decimal SI), as multipliers.
fn kubernetes_multiplier(suffix: &str) -> Option<f64> {
    Some(match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    })
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

/// Bytes of a Kubernetes memory quantity, rounded up to a whole byte. Zero and negative sizes
/// are errors.
pub fn parse_bytes(quantity: &IntOrString) -> Result<u64, QuantityError> {
    let text = quantity.to_string();
    let error = |why| QuantityError {
        value: text.clone(),
        why,
    };
    let (number, suffix) = split_number(text.trim(), true);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(error("it does not start with a number"));
    }
    let multiplier = match kubernetes_multiplier(suffix) {
        Some(multiplier) => multiplier,
        None if suffix.starts_with(['e', 'E']) => {
            let power: i32 = suffix[1..]
                .parse()
                .map_err(|_| error("its exponent is not a whole number"))?;
            10f64.powi(power)
        }
        None if suffix == "m" => return Err(error("milli-units are not whole bytes")),
        None => {
            return Err(error(
                "its suffix is not one of Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E",
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| error("it does not start with a number"))?;
    let bytes = (value * multiplier).ceil();
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(error("it is too large"));
    }
    if bytes < 1.0 {
        return Err(error("it must be more than zero"));
    }
    Ok(bytes as u64)
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

    fn bytes(text: &str) -> Result<u64, QuantityError> {
        parse_bytes(&IntOrString::String(text.to_owned()))
    }

    #[test]
    fn binary_decimal_and_plain_quantities() {
        assert_eq!(bytes("256Mi"), Ok(256 * 1024 * 1024));
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("0.5Gi"), Ok(1 << 29));
        assert_eq!(bytes("500M"), Ok(500_000_000));
        assert_eq!(bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(bytes("1.5k"), Ok(1500));
        assert_eq!(bytes("123"), Ok(123));
        assert_eq!(parse_bytes(&IntOrString::Int(268_435_456)), Ok(268_435_456));
    }

    #[test]
    fn bad_quantities_say_what_is_wrong() {
        for (text, why) in [
            ("0", "more than zero"),
            ("100m", "milli"),
            ("1GB", "suffix"),
            ("lots", "number"),
            ("1.2.3", "number"),
        ] {
            let error = bytes(text).unwrap_err().to_string();
            assert!(
                error.contains(why) && error.contains(text),
                "{text}: {error}"
            );
        }
        assert!(parse_bytes(&IntOrString::Int(-5)).is_err());
    }

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
