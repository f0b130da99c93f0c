//! Durations as the Environment writes them (`30s`, `5m`, `1h30m`).

use std::time::Duration;

/// The shortest interval the controller honours.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Parses `90s`, `5m`, `1h`, `1h30m` (Go-style durations without
/// fractions); `None` for anything else.
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
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
    }
    (number.is_empty() && total > 0).then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_interval("5"), None);
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("2d"), None);
    }
}
