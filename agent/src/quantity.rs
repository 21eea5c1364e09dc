//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1e3`, `2G`) as
//! the numbers cgroups want: CPU in millicores, memory in bytes.

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

/// Parses a quantity to its value in base units (cores, bytes) as f64.
pub fn parse(q: &str) -> Result<f64, QuantityError> {
    let bad = || QuantityError(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| bad())?;
            10f64.powi(e)
        }
        _ => return Err(bad()),
    };
    let v = value * multiplier;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(v)
}

/// CPU quantity in millicores, rounded up (Kubernetes' minimum is 1m).
pub fn cpu_millis(q: &str) -> Result<u64, QuantityError> {
    let v = (parse(q)? * 1000.0).ceil();
    to_u64(v, q)
}

/// Memory quantity in bytes, rounded up.
pub fn bytes(q: &str) -> Result<u64, QuantityError> {
    to_u64(parse(q)?.ceil(), q)
}

fn to_u64(v: f64, q: &str) -> Result<u64, QuantityError> {
    if v > u64::MAX as f64 {
        return Err(QuantityError(q.to_owned()));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked finite, non-negative and in range above"
    )]
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("1"), Ok(1000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("0.0001"), Ok(1));
        assert_eq!(cpu_millis("2e0"), Ok(2000));
    }

    #[test]
    fn memory_forms() {
        assert_eq!(bytes("128Mi"), Ok(128 * 1024 * 1024));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1e3"), Ok(1000));
        assert_eq!(bytes("12345"), Ok(12345));
        assert_eq!(bytes("1.5Ki"), Ok(1536));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Mi", "12XB", "-1", "1e", "abc"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
