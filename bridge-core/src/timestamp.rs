//! Event timestamps: every form a sensor may send, turned into Unix epoch milliseconds.
//!
//! Milliseconds are the unit of Kafka timestamps and of the tutorial's window bounds, so finer
//! digits are truncated (as the tutorial's `int(datetime.timestamp() * 1000)` does).

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a numeric `ts` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochUnit {
    /// By magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds,
    /// else nanoseconds. Unambiguous for any date between 1973 and 5138.
    #[default]
    Auto,
    Seconds,
    Millis,
    Micros,
    Nanos,
}

/// Why a timestamp was refused. The text is what an operator reads in the dead-letter header.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TimestampError {
    #[error("timestamp {0:?} is neither ISO 8601 / RFC 3339 nor epoch seconds or milliseconds")]
    Unparseable(String),
    #[error("timestamp {0} ms is before 1970-01-01, which Kafka cannot store")]
    BeforeEpoch(i64),
    #[error("timestamp {0} is out of the representable range")]
    OutOfRange(String),
}

/// Parses a textual timestamp: ISO 8601 / RFC 3339 with `T` or a space between date and time,
/// with or without fractional seconds, with or without an offset (none means UTC). A string of
/// digits is read as an epoch number, as some firmware quotes it.
pub fn parse_text(text: &str, unit: EpochUnit) -> Result<i64, TimestampError> {
    let bytes = text.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        let n: f64 = text
            .parse()
            .map_err(|_| TimestampError::Unparseable(text.to_owned()))?;
        return from_epoch_f64(n, unit);
    }
    let ms = if has_offset(bytes) {
        DateTime::parse_from_rfc3339(text)
            .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%z"))
            .map(|d| d.timestamp_millis())
    } else {
        parse_naive_as_utc(text)
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
            .map(|d| d.and_utc().timestamp_millis())
    }
    .map_err(|_| TimestampError::Unparseable(text.to_owned()))?;
    check_epoch(ms)
}

/// Like [`parse_text`], except that a date and time without an offset is a local time in `zone`
/// (Tasmota's `"Time": "2024-12-02T18:00:00"`). At daylight-saving changes, as `java.time` does:
/// a time in the repeated hour is its first occurrence (the earlier instant, still on summer
/// time), and a time in the skipped hour, which a correct clock never shows, is read with the
/// offset in force before the change (02:30 on a spring-forward night in Berlin is 01:30 UTC,
/// the instant the clocks would show as 03:30).
pub fn parse_text_in(text: &str, unit: EpochUnit, zone: Tz) -> Result<i64, TimestampError> {
    let bytes = text.as_bytes();
    if zone == Tz::UTC
        || has_offset(bytes)
        || bytes.iter().all(|b| b.is_ascii_digit() || *b == b'.')
    {
        return parse_text(text, unit);
    }
    let naive = text
        .parse::<NaiveDateTime>()
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .map_err(|_| TimestampError::Unparseable(text.to_owned()))?;
    let ms = match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
        LocalResult::None => {
            // In a gap: the offset in force just before it. Gaps last at most a few hours, and
            // two changes are never a day apart.
            let before = naive - chrono::Duration::hours(24);
            let offset = match zone.from_local_datetime(&before) {
                LocalResult::Single(t) | LocalResult::Ambiguous(_, t) => t.offset().fix(),
                LocalResult::None => return Err(TimestampError::Unparseable(text.to_owned())),
            };
            (naive - offset).and_utc().timestamp_millis()
        }
    };
    check_epoch(ms)
}

/// A timestamp without offset means UTC, which is RFC 3339 with a `Z`. chrono's RFC 3339 parser
/// is hand-written and about four times faster than its general ISO 8601 one, and the tutorial's
/// `isoformat()` timestamps are the common case on the hot path, so try it first, with the `Z`
/// appended in a stack buffer; anything it refuses goes to the general parser.
fn parse_naive_as_utc(text: &str) -> Result<NaiveDateTime, chrono::ParseError> {
    let mut buf = [0u8; 48];
    let n = text.len();
    if n < buf.len() {
        buf[..n].copy_from_slice(text.as_bytes());
        buf[n] = b'Z';
        if let Ok(with_z) = std::str::from_utf8(&buf[..=n]) {
            if let Ok(d) = DateTime::parse_from_rfc3339(with_z) {
                return Ok(d.naive_utc());
            }
        }
    }
    text.parse::<NaiveDateTime>()
}

/// Whether an ISO 8601 text ends in a UTC designator or a numeric offset after the time.
fn has_offset(b: &[u8]) -> bool {
    match b.last() {
        Some(b'Z' | b'z') => true,
        // The date part has '-' too, so only look after the time separator.
        _ => b.len() > 10 && b[10..].iter().any(|c| *c == b'+' || *c == b'-'),
    }
}

/// Reads an integer epoch timestamp.
pub fn from_epoch_i64(n: i64, unit: EpochUnit) -> Result<i64, TimestampError> {
    if n < 0 {
        return Err(TimestampError::BeforeEpoch(n));
    }
    let ms = match resolve(n.unsigned_abs() as f64, unit) {
        EpochUnit::Seconds => n
            .checked_mul(1000)
            .ok_or_else(|| TimestampError::OutOfRange(n.to_string()))?,
        EpochUnit::Millis => n,
        EpochUnit::Micros => n / 1_000,
        EpochUnit::Nanos | EpochUnit::Auto => n / 1_000_000,
    };
    check_epoch(ms)
}

/// Reads a fractional epoch timestamp (`1718000000.25` seconds).
pub fn from_epoch_f64(n: f64, unit: EpochUnit) -> Result<i64, TimestampError> {
    if !n.is_finite() {
        return Err(TimestampError::OutOfRange(n.to_string()));
    }
    if n < 0.0 {
        return Err(TimestampError::BeforeEpoch(n as i64));
    }
    let scale = match resolve(n, unit) {
        EpochUnit::Seconds => 1e3,
        EpochUnit::Millis => 1.0,
        EpochUnit::Micros => 1e-3,
        EpochUnit::Nanos | EpochUnit::Auto => 1e-6,
    };
    let ms = (n * scale).floor();
    // Beyond year ~292 million chrono and Kafka give up long before i64 does.
    if ms > MAX_MS as f64 {
        return Err(TimestampError::OutOfRange(n.to_string()));
    }
    check_epoch(ms as i64)
}

/// The latest timestamp accepted at all (year 9999), far beyond any skew guard.
const MAX_MS: i64 = 253_402_300_799_999;

fn resolve(magnitude: f64, unit: EpochUnit) -> EpochUnit {
    match unit {
        EpochUnit::Auto if magnitude < 1e11 => EpochUnit::Seconds,
        EpochUnit::Auto if magnitude < 1e14 => EpochUnit::Millis,
        EpochUnit::Auto if magnitude < 1e17 => EpochUnit::Micros,
        EpochUnit::Auto => EpochUnit::Nanos,
        other => other,
    }
}

fn check_epoch(ms: i64) -> Result<i64, TimestampError> {
    if ms < 0 {
        Err(TimestampError::BeforeEpoch(ms))
    } else if ms > MAX_MS {
        Err(TimestampError::OutOfRange(format!("{ms} ms")))
    } else {
        Ok(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_in_a_zone() {
        let a = EpochUnit::Auto;
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // Summer: UTC+2; winter: UTC+1.
        assert_eq!(parse_text_in("2024-06-10T08:13:20", a, berlin), Ok(T));
        assert_eq!(
            parse_text_in("2024-06-10 08:13:20.5", a, berlin),
            Ok(T + 500)
        );
        assert_eq!(
            parse_text_in("2024-12-02T19:00:00", a, berlin),
            parse_text("2024-12-02T18:00:00Z", a)
        );
        // An offset or an epoch number is not local time.
        assert_eq!(parse_text_in("2024-06-10T06:13:20Z", a, berlin), Ok(T));
        assert_eq!(parse_text_in("2024-06-10T07:13:20+01:00", a, berlin), Ok(T));
        assert_eq!(parse_text_in("1718000000", a, berlin), Ok(T));
        assert_eq!(parse_text_in("2024-06-10T06:13:20", a, Tz::UTC), Ok(T));
        assert!(matches!(
            parse_text_in("tomorrow", a, berlin),
            Err(TimestampError::Unparseable(_))
        ));
    }

    #[test]
    fn the_repeated_hour_is_its_first_occurrence() {
        // 2024-10-27 in Berlin: 03:00 summer time became 02:00 winter time, so 02:30 happened
        // at 00:30 UTC and again at 01:30 UTC.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let a = EpochUnit::Auto;
        assert_eq!(
            parse_text_in("2024-10-27T02:30:00", a, berlin),
            parse_text("2024-10-27T00:30:00Z", a)
        );
        // Just outside it on both sides: unambiguous.
        assert_eq!(
            parse_text_in("2024-10-27T01:59:59", a, berlin),
            parse_text("2024-10-26T23:59:59Z", a)
        );
        assert_eq!(
            parse_text_in("2024-10-27T03:00:00", a, berlin),
            parse_text("2024-10-27T02:00:00Z", a)
        );
    }

    #[test]
    fn the_skipped_hour_reads_with_the_offset_before_it() {
        // 2024-03-31 in Berlin: 02:00 winter time became 03:00 summer time; 02:30 never
        // showed on a correct clock. Read with +01:00, it is 01:30 UTC (shown as 03:30).
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let a = EpochUnit::Auto;
        assert_eq!(
            parse_text_in("2024-03-31T02:30:00", a, berlin),
            parse_text("2024-03-31T01:30:00Z", a)
        );
        assert_eq!(
            parse_text_in("2024-03-31T03:30:00", a, berlin),
            parse_text("2024-03-31T01:30:00Z", a)
        );
        assert_eq!(
            parse_text_in("2024-03-31T01:59:59", a, berlin),
            parse_text("2024-03-31T00:59:59Z", a)
        );
        // New York skips 02:00-03:00 at UTC-5.
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            parse_text_in("2024-03-10T02:15:00", a, ny),
            parse_text("2024-03-10T07:15:00Z", a)
        );
    }

    const T: i64 = 1_718_000_000_000; // 2024-06-10T06:13:20Z

    #[test]
    fn iso_forms() {
        let a = EpochUnit::Auto;
        assert_eq!(parse_text("2024-06-10T06:13:20", a), Ok(T));
        assert_eq!(parse_text("2024-06-10 06:13:20", a), Ok(T));
        assert_eq!(parse_text("2024-06-10T06:13:20.123456", a), Ok(T + 123));
        assert_eq!(parse_text("2024-06-10T06:13:20.5", a), Ok(T + 500));
        assert_eq!(parse_text("2024-06-10T06:13:20Z", a), Ok(T));
        assert_eq!(parse_text("2024-06-10T06:13:20.999z", a), Ok(T + 999));
        assert_eq!(parse_text("2024-06-10T08:13:20+02:00", a), Ok(T));
        assert_eq!(parse_text("2024-06-10T08:13:20.250+02:00", a), Ok(T + 250));
        assert_eq!(parse_text("2024-06-10T01:13:20-05:00", a), Ok(T));
        assert_eq!(parse_text("2024-06-10T08:13:20+0200", a), Ok(T));
        assert_eq!(parse_text("2024-06-10 08:13:20+02:00", a), Ok(T));
        assert_eq!(parse_text("2024-06-10T06:13:20.123456789Z", a), Ok(T + 123));
    }

    #[test]
    fn iso_rejections() {
        for bad in [
            "",
            "yesterday",
            "2024-06-10",
            "2024-13-10T06:13:20",
            "2024-06-10T25:13:20",
            "2024-06-10T06:13:20+25:00",
            "06:13:20",
            "1.2.3",
        ] {
            assert!(
                matches!(
                    parse_text(bad, EpochUnit::Auto),
                    Err(TimestampError::Unparseable(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_text("1969-12-31T23:59:59Z", EpochUnit::Auto),
            Err(TimestampError::BeforeEpoch(-1000))
        ));
    }

    #[test]
    fn epoch_numbers_by_magnitude() {
        let a = EpochUnit::Auto;
        assert_eq!(from_epoch_i64(1_718_000_000, a), Ok(T));
        assert_eq!(from_epoch_i64(T, a), Ok(T));
        assert_eq!(from_epoch_i64(T * 1000 + 7, a), Ok(T));
        assert_eq!(from_epoch_i64(T * 1_000_000 + 7, a), Ok(T));
        assert_eq!(from_epoch_f64(1_718_000_000.25, a), Ok(T + 250));
        assert_eq!(from_epoch_f64(1_718_000_000_250.9, a), Ok(T + 250));
        assert_eq!(parse_text("1718000000", a), Ok(T));
        assert_eq!(parse_text("1718000000.5", a), Ok(T + 500));
        assert_eq!(from_epoch_i64(0, a), Ok(0));
    }

    #[test]
    fn epoch_numbers_with_explicit_unit() {
        assert_eq!(from_epoch_i64(5, EpochUnit::Seconds), Ok(5000));
        assert_eq!(from_epoch_i64(5, EpochUnit::Millis), Ok(5));
        assert_eq!(from_epoch_i64(5_000, EpochUnit::Micros), Ok(5));
        assert_eq!(from_epoch_i64(5_000_000, EpochUnit::Nanos), Ok(5));
        assert_eq!(from_epoch_f64(1.5, EpochUnit::Seconds), Ok(1500));
    }

    #[test]
    fn epoch_rejections() {
        let a = EpochUnit::Auto;
        assert_eq!(from_epoch_i64(-5, a), Err(TimestampError::BeforeEpoch(-5)));
        assert!(matches!(
            from_epoch_f64(-0.5, a),
            Err(TimestampError::BeforeEpoch(_))
        ));
        assert!(matches!(
            from_epoch_i64(i64::MAX, EpochUnit::Seconds),
            Err(TimestampError::OutOfRange(_))
        ));
        assert!(matches!(
            from_epoch_f64(f64::INFINITY, a),
            Err(TimestampError::OutOfRange(_))
        ));
        assert!(matches!(
            from_epoch_f64(1e30, EpochUnit::Seconds),
            Err(TimestampError::OutOfRange(_))
        ));
    }
}
