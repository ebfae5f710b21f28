//! Event times as companies' systems write them: RFC 3339, epoch numbers
//! in four units, dates, and local wall times in a named zone.

use chrono::format::{Item, StrftimeItems};
use chrono::{LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use super::capture::Scalar;
use crate::engine::event::Ts;

/// How a `ts` value is read.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeFormat {
    /// RFC 3339 with offset.
    Rfc3339,
    /// Seconds since 1970 (fractions allowed).
    EpochS,
    /// Milliseconds since 1970.
    EpochMs,
    /// Microseconds since 1970.
    EpochUs,
    /// `YYYY-MM-DD`, at midnight of the zone.
    Date,
    /// A strftime pattern; with `%z`/`%:z` the record's offset is used,
    /// otherwise the zone's.
    Pattern {
        /// The pattern.
        pattern: String,
        /// Whether it carries an offset.
        offset: bool,
        /// Whether it has a time of day (else midnight).
        time: bool,
    },
}

impl TimeFormat {
    /// Parses a `format` setting; the error says why.
    pub fn parse(s: &str) -> Result<TimeFormat, String> {
        Ok(match s {
            "rfc3339" => TimeFormat::Rfc3339,
            "epoch_s" => TimeFormat::EpochS,
            "epoch_ms" => TimeFormat::EpochMs,
            "epoch_us" => TimeFormat::EpochUs,
            "date" => TimeFormat::Date,
            p if p.contains('%') => {
                let items: Vec<Item<'_>> = StrftimeItems::new(p).collect();
                if items.iter().any(|i| matches!(i, Item::Error)) {
                    return Err(format!("`{p}` is not a valid strftime pattern"));
                }
                let has = |spec: &[&str]| spec.iter().any(|x| p.contains(x));
                TimeFormat::Pattern {
                    pattern: p.to_string(),
                    offset: has(&["%z", "%:z", "%::z", "%#z"]),
                    time: has(&["%H", "%I", "%T", "%R", "%k", "%l", "%s"]),
                }
            }
            other => {
                return Err(format!(
                    "unknown format `{other}`: expected rfc3339, epoch_s, epoch_ms, epoch_us, date or a strftime pattern such as \"%Y-%m-%d %H:%M:%S\""
                ));
            }
        })
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        match self {
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::EpochS => "epoch_s",
            TimeFormat::EpochMs => "epoch_ms",
            TimeFormat::EpochUs => "epoch_us",
            TimeFormat::Date => "date",
            TimeFormat::Pattern { pattern, .. } => pattern,
        }
    }

    /// Reads `v`; `None` if it is not a time in this format.
    pub fn read(&self, v: &Scalar<'_>, zone: Tz) -> Option<Ts> {
        let ms = match self {
            TimeFormat::EpochS => epoch(v, 1000.0),
            TimeFormat::EpochMs => epoch(v, 1.0),
            TimeFormat::EpochUs => epoch(v, 0.001),
            _ => {
                let Scalar::Str(s) = v else { return None };
                let s = s.trim();
                match self {
                    TimeFormat::Rfc3339 => Ts::parse_rfc3339(s).map(|t| t.0),
                    TimeFormat::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| local(d.and_hms_opt(0, 0, 0)?, zone)),
                    TimeFormat::Pattern {
                        pattern,
                        offset: true,
                        ..
                    } => chrono::DateTime::parse_from_str(s, pattern)
                        .ok()
                        .map(|d| d.timestamp_millis()),
                    TimeFormat::Pattern {
                        pattern,
                        time: true,
                        ..
                    } => NaiveDateTime::parse_from_str(s, pattern)
                        .ok()
                        .and_then(|n| local(n, zone)),
                    TimeFormat::Pattern { pattern, .. } => NaiveDate::parse_from_str(s, pattern)
                        .ok()
                        .and_then(|d| local(d.and_hms_opt(0, 0, 0)?, zone)),
                    _ => None,
                }
            }
        }?;
        Some(Ts(ms)).filter(|t| t.is_event_time())
    }
}

/// An epoch number (or numeric string) times `to_ms`.
fn epoch(v: &Scalar<'_>, to_ms: f64) -> Option<i64> {
    let n = match v {
        Scalar::Int(i) => *i as f64,
        Scalar::UInt(u) => *u as f64,
        Scalar::Float(f) => *f,
        Scalar::Str(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    let ms = (n * to_ms).floor();
    (ms.is_finite() && ms.abs() < 1e17).then_some(ms as i64)
}

/// A wall time in `zone`: an ambiguous one (clocks going back) takes the
/// earlier instant; one in a gap (clocks going forward) is read with the
/// offset before the gap, which moves it forward by the gap, as most
/// calendar systems do.
fn local(n: NaiveDateTime, zone: Tz) -> Option<i64> {
    match zone.from_local_datetime(&n) {
        LocalResult::Single(d) => Some(d.timestamp_millis()),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.timestamp_millis()),
        LocalResult::None => {
            let before = zone.offset_from_utc_datetime(&(n - chrono::Duration::days(1)));
            let offset = chrono::Offset::fix(&before);
            Some(
                (n - chrono::Duration::seconds(i64::from(offset.local_minus_utc())))
                    .and_utc()
                    .timestamp_millis(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Ts {
        Ts::parse_rfc3339(s).unwrap()
    }

    fn text(s: &str) -> Scalar<'_> {
        Scalar::Str(s.into())
    }

    const UTC: Tz = chrono_tz::UTC;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn epochs_in_every_unit_from_numbers_and_strings() {
        let at = ts("2026-03-01T10:00:00.123Z");
        assert_eq!(TimeFormat::EpochMs.read(&Scalar::Int(at.0), UTC), Some(at));
        assert_eq!(
            TimeFormat::EpochUs.read(&Scalar::Int(at.0 * 1000 + 456), UTC),
            Some(at)
        );
        assert_eq!(
            TimeFormat::EpochS.read(&Scalar::Float(at.0 as f64 / 1000.0), UTC),
            Some(at)
        );
        assert_eq!(
            TimeFormat::EpochS.read(&text("1772359200"), UTC),
            Some(ts("2026-03-01T10:00:00Z"))
        );
        assert_eq!(TimeFormat::EpochMs.read(&text("abc"), UTC), None);
        assert_eq!(
            TimeFormat::EpochMs.read(&Scalar::Int(-1), UTC),
            None,
            "before 1970"
        );
        assert_eq!(TimeFormat::EpochMs.read(&Scalar::Bool(true), UTC), None);
    }

    #[test]
    fn rfc3339_needs_an_offset() {
        assert_eq!(
            TimeFormat::Rfc3339.read(&text("2026-03-01T11:00:00+01:00"), UTC),
            Some(ts("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            TimeFormat::Rfc3339.read(&text("2026-03-01T11:00:00"), UTC),
            None
        );
        assert_eq!(TimeFormat::Rfc3339.read(&Scalar::Int(5), UTC), None);
    }

    #[test]
    fn dates_are_midnight_in_the_zone() {
        assert_eq!(
            TimeFormat::Date.read(&text("2026-03-01"), UTC),
            Some(ts("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            TimeFormat::Date.read(&text("2026-07-01"), BERLIN),
            Some(ts("2026-06-30T22:00:00Z"))
        );
        assert_eq!(TimeFormat::Date.read(&text("01/03/2026"), UTC), None);
        let dmy = TimeFormat::parse("%d.%m.%Y").unwrap();
        assert_eq!(
            dmy.read(&text("01.03.2026"), BERLIN),
            Some(ts("2026-02-28T23:00:00Z"))
        );
    }

    #[test]
    fn wall_times_in_a_zone_across_dst() {
        let f = TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            f.read(&text("2026-01-15 09:30:00"), BERLIN),
            Some(ts("2026-01-15T08:30:00Z"))
        );
        assert_eq!(
            f.read(&text("2026-07-15 09:30:00"), BERLIN),
            Some(ts("2026-07-15T07:30:00Z"))
        );
        // 2026-10-25 02:30 happens twice in Berlin: the earlier (CEST) wins.
        assert_eq!(
            f.read(&text("2026-10-25 02:30:00"), BERLIN),
            Some(ts("2026-10-25T00:30:00Z"))
        );
        // 2026-03-29 02:30 does not exist: read with CET, it is 03:30 CEST.
        assert_eq!(
            f.read(&text("2026-03-29 02:30:00"), BERLIN),
            Some(ts("2026-03-29T01:30:00Z"))
        );
        assert_eq!(f.read(&text("2026-03-29"), BERLIN), None);
    }

    #[test]
    fn patterns_with_an_offset_use_it() {
        let f = TimeFormat::parse("%d/%m/%Y %H:%M %z").unwrap();
        assert_eq!(
            f.read(&text("01/03/2026 12:00 +0200"), BERLIN),
            Some(ts("2026-03-01T10:00:00Z"))
        );
    }

    #[test]
    fn bad_formats_are_refused_with_the_choices() {
        assert!(
            TimeFormat::parse("%Q")
                .unwrap_err()
                .contains("not a valid strftime")
        );
        assert!(TimeFormat::parse("iso").unwrap_err().contains("epoch_ms"));
    }
}
