//! Numbers of the spec read without failing: an Environment stored before
//! the CRD bounded a field (or written where the CRD is older) may hold a
//! number beyond the Rust type. Failing to read it would fail the watch of
//! every Environment; it is read as the nearest value the type holds, and
//! the CRD's bounds keep new ones in range.

use serde::{Deserialize, Deserializer};

/// Any JSON number, saturated into `0..=max`; fractions are dropped.
fn saturating<'de, D: Deserializer<'de>>(deserializer: D, max: u64) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    Ok(if let Some(n) = number.as_u64() {
        n.min(max)
    } else if number.as_i64().is_some() {
        0
    } else {
        let f = number.as_f64().unwrap_or(0.0);
        if f.is_nan() || f <= 0.0 {
            0
        } else if f >= max as f64 {
            max
        } else {
            f as u64
        }
    })
}

pub fn saturating_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    saturating(deserializer, u64::from(u32::MAX)).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

pub fn saturating_u16<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    saturating(deserializer, u64::from(u16::MAX)).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
}

/// Any JSON number, clamped into `0.0..=1.0` (a share of cases).
pub fn fraction<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let f = serde_json::Number::deserialize(deserializer)?
        .as_f64()
        .unwrap_or(0.0);
    Ok(if f.is_nan() { 0.0 } else { f.clamp(0.0, 1.0) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Deserialize)]
    struct Both {
        #[serde(deserialize_with = "saturating_u32")]
        wide: u32,
        #[serde(deserialize_with = "saturating_u16")]
        narrow: u16,
    }

    fn read(json: &str) -> Result<(u32, u16), serde_json::Error> {
        serde_json::from_str::<Both>(json).map(|b| (b.wide, b.narrow))
    }

    /// The review's reproduction: a successThreshold beyond u32 stopped
    /// the controller from reading any Environment.
    #[test]
    fn numbers_beyond_the_type_saturate() {
        assert_eq!(
            read(r#"{"wide": 99999999999999, "narrow": 70000}"#).unwrap(),
            (u32::MAX, u16::MAX)
        );
        assert_eq!(read(r#"{"wide": -5, "narrow": 2.5}"#).unwrap(), (0, 2));
        assert_eq!(read(r#"{"wide": 3, "narrow": 200}"#).unwrap(), (3, 200));
        assert!(read(r#"{"wide": "3", "narrow": 200}"#).is_err());
    }

    proptest! {
        #[test]
        fn any_number_reads(n in any::<f64>(), i in any::<i64>(), u in any::<u64>()) {
            let n = if n.is_finite() { n } else { 0.0 };
            let mixed = format!(r#"{{"wide": {n}, "narrow": {i}}}"#);
            let large = format!(r#"{{"wide": {u}, "narrow": {u}}}"#);
            prop_assert!(read(&mixed).is_ok(), "{}", mixed);
            prop_assert!(read(&large).is_ok(), "{}", large);
        }
    }
}
