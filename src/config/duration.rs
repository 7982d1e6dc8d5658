//! Durations written with a unit, as the config file spells them: `500ms`, `30s`, `5m`, `2h`, `1d`.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A span of time read from the config file; always written with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// A duration of whole seconds, for defaults.
    pub const fn secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }

    /// The standard-library duration.
    pub fn get(self) -> StdDuration {
        self.0
    }

    /// Whether the duration is zero ("disabled" for most keys).
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Parses `"<number><unit>"`; the error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write it as e.g. \"30s\" (units: ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration: write it as e.g. \"30s\""))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}` has an unknown unit `{unit}` (units: ms, s, m, h, d)")),
    };
    n.checked_mul(millis_per_unit)
        .map(|ms| Duration(StdDuration::from_millis(ms)))
        .ok_or_else(|| format!("`{text}` is too long"))
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
        for (size, unit) in units {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        if ms == 0 {
            write!(f, "0s")
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("250ms").unwrap().get(), StdDuration::from_millis(250));
        assert_eq!(parse("30s").unwrap().get(), StdDuration::from_secs(30));
        assert_eq!(parse("5m").unwrap().get(), StdDuration::from_secs(300));
        assert_eq!(parse("2h").unwrap().get(), StdDuration::from_secs(7200));
        assert_eq!(parse("1d").unwrap().get(), StdDuration::from_secs(86400));
        assert!(parse("0s").unwrap().is_zero());
    }

    #[test]
    fn a_number_without_unit_or_with_a_strange_one_is_refused() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("30w").unwrap_err().contains("unknown unit"));
        assert!(parse("s").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["0s", "250ms", "30s", "5m", "2h", "1d", "90s"] {
            assert_eq!(parse(text).unwrap().to_string(), if text == "90s" { "90s" } else { text });
        }
    }
}
