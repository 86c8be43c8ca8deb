//! The parts of a recurring window's rule: a five-field cron schedule, a length, an IANA zone.

use std::fmt;
use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::ParseError;
use crate::text::shown;

/// A five-field cron expression (minute, hour, day of month, month, day of week) as croner reads
/// it: Vixie cron, where a restricted day of month and day of week match either, plus `L`, `W`
/// and `#`. It matches wall-clock times; [`super::Recurrence`] places them on the time line.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    // Boxed: a parsed pattern is several hundred bytes, and windows and errors carry schedules.
    cron: Box<Cron>,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, ParseError> {
        let fields: Vec<&str> = s.split_whitespace().collect();
        let refused = |why: String| ParseError(format!("invalid schedule `{}`: {why}", shown(s)));
        if fields.len() != 5 {
            return Err(refused(format!(
                "use five fields (minute hour day-of-month month day-of-week), not {}",
                fields.len()
            )));
        }
        let text = fields.join(" ");
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(&text).map_err(|e| refused(shown(&e.to_string())))?;
        Ok(Schedule {
            text,
            cron: Box::new(cron),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(super) fn cron(&self) -> &Cron {
        &self.cron
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Schedule {}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How long each occurrence of a recurring window lasts, in real time: whole minutes, from one
/// minute to 31 days. Written `90m`, `2h`, `1h30m` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Length(u32);

impl Length {
    /// The longest occurrence, in minutes (31 days).
    pub const MAX_MINUTES: u32 = 31 * 24 * 60;

    pub fn parse(s: &str) -> Result<Length, ParseError> {
        let refused = |why: &str| ParseError(format!("invalid duration `{}`: {why}", shown(s)));
        let d = humantime::parse_duration(s.trim()).map_err(|_| refused("write it like 90m, 2h or 1h30m"))?;
        if d.subsec_nanos() != 0 || d.as_secs() % 60 != 0 {
            return Err(refused("use whole minutes"));
        }
        Length::from_minutes(d.as_secs() / 60).ok_or_else(|| refused("use 1m to 31d"))
    }

    /// A length of `minutes`, when it is within bounds.
    pub fn from_minutes(minutes: u64) -> Option<Length> {
        u32::try_from(minutes)
            .ok()
            .filter(|m| (1..=Self::MAX_MINUTES).contains(m))
            .map(Length)
    }

    pub fn minutes(self) -> u32 {
        self.0
    }

    pub fn as_delta(self) -> chrono::TimeDelta {
        chrono::TimeDelta::minutes(self.0.into())
    }
}

impl fmt::Display for Length {
    /// `1d2h30m`, each unit only when it is not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d, h, m) = (self.0 / 1440, self.0 / 60 % 24, self.0 % 60);
        for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// An IANA time zone (`Europe/Berlin`); UTC when a window names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Zone(pub chrono_tz::Tz);

impl Default for Zone {
    fn default() -> Zone {
        Zone(chrono_tz::UTC)
    }
}

impl Zone {
    pub fn parse(s: &str) -> Result<Zone, ParseError> {
        chrono_tz::Tz::from_str(s).map(Zone).map_err(|_| {
            ParseError(format!(
                "unknown time zone `{}`: use an IANA name such as Europe/Berlin or UTC",
                shown(s)
            ))
        })
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// (De)serialization and schemas for the rule's parts: each is a string.
macro_rules! as_text {
    ($name:ident, $parse:expr, $what:literal, $example:literal) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = crate::domain::text(d)?;
                $parse(&text).map_err(serde::de::Error::custom)
            }
        }
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::domain::string_schema($what)
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": $what,
                    "examples": [$example],
                })
            }
        }
    };
}

as_text!(
    Schedule,
    Schedule::parse,
    "A five-field cron expression (minute hour day-of-month month day-of-week), matched on the wall clock of `timezone`.",
    "0 2 * * SUN"
);
as_text!(
    Length,
    Length::parse,
    "How long each occurrence lasts, in real time: whole minutes, up to 31 days (90m, 2h, 1h30m).",
    "2h"
);
as_text!(
    Zone,
    Zone::parse,
    "An IANA time zone name; UTC when absent.",
    "Europe/Berlin"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_has_five_fields() {
        assert_eq!(Schedule::parse(" 0  2 * * SUN ").unwrap().as_str(), "0 2 * * SUN");
        for bad in [
            "",
            "0 2 * *",
            "0 0 2 * * SUN",
            "@daily",
            "61 * * * *",
            "0 25 * * *",
            "x y z a b",
        ] {
            let e = Schedule::parse(bad).unwrap_err().0;
            assert!(e.starts_with("invalid schedule"), "{bad}: {e}");
        }
    }

    #[test]
    fn lengths_read_and_print_back() {
        for (text, minutes, shown) in [
            ("90m", 90, "1h30m"),
            ("2h", 120, "2h"),
            ("1h30m", 90, "1h30m"),
            ("1h 30m", 90, "1h30m"),
            ("1d", 1440, "1d"),
            ("31d", 44640, "31d"),
        ] {
            let l = Length::parse(text).unwrap();
            assert_eq!((l.minutes(), l.to_string().as_str()), (minutes, shown), "{text}");
            assert_eq!(Length::parse(&l.to_string()), Ok(l));
        }
        for bad in ["", "0m", "90", "30s", "1m30s", "32d", "-1h", "soon"] {
            assert!(Length::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zones_are_iana_names() {
        assert_eq!(Zone::parse("Europe/Berlin").unwrap().name(), "Europe/Berlin");
        assert_eq!(Zone::default().name(), "UTC");
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert!(Zone::parse("CEST").is_err());
    }
}
