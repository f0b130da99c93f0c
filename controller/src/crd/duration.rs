//! Durations as the Environment writes them (`30s`, `5m`, `1h30m`), and
//! the bounds the CRD holds them to.
//!
//! Guarantees: [`parse_interval`] never panics and never returns more than
//! [`MAX_DURATION`], whatever the text (the spec is written by people, and
//! objects stored before the CRD had its bounds are read too), so adding a
//! parsed duration to an `Instant` cannot overflow.

use std::time::Duration;

/// The shortest interval the controller honours.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The longest duration the controller takes from a spec; the CRD allows
/// at most a day for any field, this is the controller's own guard.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// CEL rules of the CRD, one per duration field: what the API server
/// refuses before the controller ever reads it.
pub mod rule {
    /// `spec.interval`: 10 s to 24 h.
    pub const INTERVAL: &str =
        "self != '' && duration(self) >= duration('10s') && duration(self) <= duration('24h')";
    /// `spec.source.timeout`: 1 s to 1 h.
    pub const SOURCE_TIMEOUT: &str =
        "self != '' && duration(self) >= duration('1s') && duration(self) <= duration('1h')";
    /// `spec.healthCheck.timeout`: 1 s to 24 h.
    pub const HEALTH_TIMEOUT: &str =
        "self != '' && duration(self) >= duration('1s') && duration(self) <= duration('24h')";
    /// `spec.healthCheck.http[].period`: 1 s to 1 h.
    pub const PERIOD: &str =
        "self != '' && duration(self) >= duration('1s') && duration(self) <= duration('1h')";
}

/// Parses `90s`, `5m`, `1h`, `1h30m` (Go-style durations without
/// fractions); `None` for anything else, for zero, and for more than
/// [`MAX_DURATION`].
pub fn parse_interval(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    let fits = number.is_empty() && total > 0 && total <= MAX_DURATION.as_secs();
    fits.then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_interval("5"), None);
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("2d"), None);
        assert_eq!(parse_interval("168h"), Some(MAX_DURATION));
        assert_eq!(parse_interval("169h"), None);
    }

    /// The review's reproduction: a timeout that parses as a u64 but
    /// overflowed `Instant::now() + timeout` and aborted every replica.
    #[test]
    fn durations_too_long_to_add_are_refused_not_overflowed() {
        assert_eq!(parse_interval("9999999999999999999s"), None);
        assert_eq!(parse_interval("99999999999999999999s"), None);
        assert_eq!(parse_interval("5124095576030431h"), None);
        assert_eq!(parse_interval("1s18446744073709551615s"), None);
    }

    proptest! {
        /// Any text: no panic, and what parses fits.
        #[test]
        fn parsing_never_panics_and_stays_in_bounds(text in "[0-9hms ]{0,40}|\\PC{0,20}") {
            if let Some(d) = parse_interval(&text) {
                prop_assert!(d > Duration::ZERO && d <= MAX_DURATION);
                prop_assert!(std::time::Instant::now().checked_add(d).is_some());
            }
        }
    }
}
