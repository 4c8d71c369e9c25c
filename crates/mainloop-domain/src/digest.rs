//! The temporal pyramid's calendar: the user's time zone, the days, weeks (from Monday)
//! and months it divides time into, which of them are due a digest, and which digests a
//! main-thread context carries. What a digest says is in [`compose`].

pub mod compose;
pub mod context;
#[cfg(test)]
mod tests;

use crate::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

pub use compose::{
    Asked, DayRecords, Decided, Digest, DigestFacts, TaskLine, Transition, compose_day, merge,
    render,
};
pub use context::{digest_tokens, memory_section, pyramid};

/// The length of time one digest covers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub const ALL: [Self; 3] = [Self::Day, Self::Week, Self::Month];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown period '{s}': expected day, week or month"))
    }
}

/// A time zone by its IANA name (`Europe/Paris`, `UTC`), from the database compiled
/// into the binary, so every machine divides days alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// The zone named `name`.
    ///
    /// # Errors
    /// When no zone has that name (the message says what was given).
    pub fn parse(name: &str) -> Result<Self, String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.contains('\0') {
            return Err("a time zone is an IANA name such as Europe/Paris or UTC".to_owned());
        }
        let tz = TimeZone::get(name).map_err(|_| {
            format!("unknown time zone '{name}': use an IANA name such as Europe/Paris or UTC")
        })?;
        let name = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Self { name, tz })
    }

    #[must_use]
    pub fn utc() -> Self {
        Self {
            name: "UTC".to_owned(),
            tz: TimeZone::UTC,
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local date at `at`.
    #[must_use]
    pub fn date(&self, at: Timestamp) -> Date {
        jiff::Timestamp::from_millisecond(at.as_millis())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(self.tz.clone())
            .date()
    }

    /// The first instant of `date` here (after a gap, when midnight does not exist).
    #[must_use]
    pub fn start_of(&self, date: Date) -> Timestamp {
        date.to_zoned_datetime(self.tz.clone()).map_or_else(
            |_| Timestamp::from_millis(0),
            |z| Timestamp::from_millis(z.timestamp().as_millisecond()),
        )
    }
}

/// A user's time zone as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimeZoneSetting {
    /// An IANA name (`Europe/Paris`).
    pub time_zone: String,
    /// The configured default (`chat.time_zone`), not one the user set.
    pub default: bool,
}

/// The body of `PUT /api/settings/time-zone`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeZone {
    /// An IANA name; `null` goes back to the configured default.
    pub time_zone: Option<String>,
}

/// One period: its length and the local date it starts on (a Monday for a week, the
/// first for a month). The same dates mean the same span in any zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub period: Period,
    pub start: Date,
}

impl Span {
    /// The span of `period` that `date` falls in.
    #[must_use]
    pub fn containing(period: Period, date: Date) -> Self {
        let start = match period {
            Period::Day => date,
            Period::Week => {
                let back = i64::from(date.weekday().to_monday_zero_offset());
                date.checked_sub(jiff::Span::new().days(back))
                    .unwrap_or(date)
            }
            Period::Month => date.first_of_month(),
        };
        Self { period, start }
    }

    /// The local date after the span's last (the next span's start).
    #[must_use]
    pub fn end(self) -> Date {
        let step = match self.period {
            Period::Day => jiff::Span::new().days(1),
            Period::Week => jiff::Span::new().weeks(1),
            Period::Month => jiff::Span::new().months(1),
        };
        self.start.checked_add(step).unwrap_or(Date::MAX)
    }

    /// The span after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self {
            period: self.period,
            start: self.end(),
        }
    }

    /// Its first instant and the first instant after it, in `zone`.
    #[must_use]
    pub fn bounds(self, zone: &Zone) -> (Timestamp, Timestamp) {
        (zone.start_of(self.start), zone.start_of(self.end()))
    }

    #[must_use]
    pub fn contains(self, date: Date) -> bool {
        self.start <= date && date < self.end()
    }

    /// How people name it: "Tuesday 3 November 2026", "Week of 2 November 2026",
    /// "November 2026".
    #[must_use]
    pub fn title(self) -> String {
        let d = self.start;
        match self.period {
            Period::Day => format!(
                "{} {} {} {}",
                weekday_name(d.weekday()),
                d.day(),
                month_name(d.month()),
                d.year()
            ),
            Period::Week => format!("Week of {} {} {}", d.day(), month_name(d.month()), d.year()),
            Period::Month => format!("{} {}", month_name(d.month()), d.year()),
        }
    }
}

fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "Monday",
        Weekday::Tuesday => "Tuesday",
        Weekday::Wednesday => "Wednesday",
        Weekday::Thursday => "Thursday",
        Weekday::Friday => "Friday",
        Weekday::Saturday => "Saturday",
        Weekday::Sunday => "Sunday",
    }
}

fn month_name(m: i8) -> &'static str {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    usize::try_from(m - 1)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("?")
}

/// The spans due a digest at `now`: every day, week and month that began on or after
/// the one holding `since` (the user's first day), has ended in `zone`, and is not in
/// `made` — days first, then weeks, then months, each oldest first, so that a week is
/// made after its days and a month after its weeks. A restart, a late start or days of
/// downtime therefore catch up every missing span, and a made one is never due again.
#[must_use]
pub fn due(zone: &Zone, since: Timestamp, made: &HashSet<Span>, now: Timestamp) -> Vec<Span> {
    let first = zone.date(since);
    let today = zone.date(now);
    let mut out = Vec::new();
    for period in Period::ALL {
        let mut span = Span::containing(period, first);
        while span.end() <= today && zone.start_of(span.end()) <= now {
            if !made.contains(&span) {
                out.push(span);
            }
            span = span.next();
        }
    }
    out
}

/// When the next span ends after `now` in `zone` (the next local midnight): the earliest
/// moment a new digest can be due.
#[must_use]
pub fn next_due(zone: &Zone, now: Timestamp) -> Timestamp {
    zone.start_of(Span::containing(Period::Day, zone.date(now)).end())
}

/// Parses a stored or given local date (`YYYY-MM-DD`).
///
/// # Errors
/// When `s` is not a date.
pub fn parse_date(s: &str) -> Result<Date, String> {
    s.trim()
        .parse::<Date>()
        .map_err(|_| format!("'{s}' is not a date (YYYY-MM-DD)"))
}
