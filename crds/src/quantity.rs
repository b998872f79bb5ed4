//! Kubernetes quantities as users write them in our specs (`256Mi`, `1G`, `0.5Gi`, `1e9`, a
//! plain number), read in one place for the controller and the API server (quotas). LXD's own
//! forms are read in the controller (`controller/src/quantity.rs`).

use crate::shared::IntOrString;

/// A quantity that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a quantity of bytes: {why} (write e.g. 256Mi, 1Gi or 500M)")]
pub struct QuantityError {
    value: String,
    why: &'static str,
}

/// Splits `text` where its leading number (digits and, if `decimal`, one point) ends.
pub fn split_number(text: &str, decimal: bool) -> (&str, &str) {
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

/// The value of any Kubernetes quantity (`500m`, `2`, `1Gi`, `1e9`), or `None` for one that
/// cannot be read.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let (number, suffix) = split_number(text.trim(), true);
    let value: f64 = number.parse().ok()?;
    let multiplier = match kubernetes_multiplier(suffix) {
        Some(multiplier) => multiplier,
        None if suffix == "m" => 1e-3,
        None if suffix.starts_with(['e', 'E']) => 10f64.powi(suffix[1..].parse().ok()?),
        None => return None,
    };
    Some(value * multiplier)
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
}
