//! Record times in the spellings real logs use, and the shape of one that is not understood.
//!
//! Accepted: RFC 3339 with `T` or a space and `Z`, `UTC`, `+0000` or `-07:00`; the platform's
//! audit events `YYYY-MM-DD HH:MM:SS[.fff] UTC` (and with `-0700`); RFC 2822; epoch numbers or
//! numeric strings, whose unit is told by magnitude: below 10^11 seconds, below 10^14
//! milliseconds, below 10^17 microseconds, else nanoseconds.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// A record time, or `None` when `v` is no time logferry understands.
pub fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    let b = v.as_bytes();
    if b.first().is_some_and(u8::is_ascii_digit) && b.len() >= 19 && b.get(4) == Some(&b'-') {
        return parse_datetime(v);
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(v) {
        return Some(t.with_timezone(&Utc));
    }
    epoch(v)
}

/// A record time in a source's own `timestamp_format` (chrono's strftime): with a zone
/// (`%z`, `%:z`) it is honoured, without one the time is UTC; a date alone is its midnight.
pub fn parse_with(v: &str, format: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(t) = DateTime::parse_from_str(v, format) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(v, format) {
        return Some(Utc.from_utc_datetime(&t));
    }
    chrono::NaiveDate::parse_from_str(v, format)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Utc.from_utc_datetime(&t))
}

/// Why a `timestamp_format` is refused (the pattern as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{0:?} is not a strftime pattern (chrono's %-specifiers)")]
    NotStrftime(String),
    #[error("{0:?} reads no year (%Y, %F, %s, ...)")]
    NoYear(String),
}

/// Whether `format` is a strftime pattern chrono can use, and a useful one (it must read at
/// least a date).
pub fn check_format(format: &str) -> Result<(), FormatError> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(FormatError::NotStrftime(format.to_string()));
    }
    let has = |s: &str| format.contains(s);
    if !(has("%Y") || has("%F") || has("%s") || has("%+") || has("%c") || has("%y")) {
        return Err(FormatError::NoYear(format.to_string()));
    }
    Ok(())
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.f]` followed by a zone: `Z`, `UTC`, `+hh:mm`, `+hhmm`, with or
/// without a space before it.
fn parse_datetime(v: &str) -> Option<DateTime<Utc>> {
    // Read by position: this runs once per record, and strftime parsing (with the string it
    // needs) cost half the decode stage.
    let b = v.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut n = 0u32;
        for &c in &b[r] {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + u32::from(d);
        }
        Some(n)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, mut sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &v[19..];
    let mut nanos = 0u32;
    let zone = match rest.strip_prefix('.') {
        Some(f) => {
            let digits = f.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            const SCALE: [u32; 9] = [
                100_000_000,
                10_000_000,
                1_000_000,
                100_000,
                10_000,
                1_000,
                100,
                10,
                1,
            ];
            for (c, scale) in f.bytes().zip(SCALE).take(digits) {
                nanos += u32::from(c - b'0') * scale;
            }
            &f[digits..]
        }
        None => rest,
    };
    if sec == 60 {
        // A leap second, as chrono keeps it.
        sec = 59;
        nanos += 1_000_000_000;
    }
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let zone = zone.trim_start();
    let offset_secs: i64 = match zone {
        "Z" | "z" | "UTC" | "GMT" => 0,
        z => {
            let zb = z.as_bytes();
            let sign = match zb.first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            // hh:mm or hhmm
            let (hh, mm) = match zb.len() {
                6 if zb[3] == b':' => (&zb[1..3], &zb[4..6]),
                5 => (&zb[1..3], &zb[3..5]),
                _ => return None,
            };
            let two = |p: &[u8]| -> Option<i64> {
                (p[0].is_ascii_digit() && p[1].is_ascii_digit())
                    .then(|| i64::from(p[0] - b'0') * 10 + i64::from(p[1] - b'0'))
            };
            let (oh, om) = (two(hh)?, two(mm)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    // Built from its parts (chrono keeps dates as year and ordinal: no division here); the
    // offset is applied only when there is one.
    let naive = chrono::NaiveDateTime::new(
        chrono::NaiveDate::from_ymd_opt(y as i32, mo, d)?,
        chrono::NaiveTime::from_hms_nano_opt(h, mi, sec, nanos)?,
    );
    let utc = if offset_secs == 0 {
        naive
    } else {
        naive.checked_sub_signed(chrono::TimeDelta::seconds(offset_secs))?
    };
    Some(Utc.from_utc_datetime(&utc))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn epoch(v: &str) -> Option<DateTime<Utc>> {
    let n: f64 = v.parse().ok()?;
    if !n.is_finite() {
        return None;
    }
    let a = n.abs();
    let nanos = if a < 1e11 {
        n * 1e9
    } else if a < 1e14 {
        n * 1e6
    } else if a < 1e17 {
        n * 1e3
    } else {
        n
    };
    if nanos.abs() > i64::MAX as f64 {
        return None;
    }
    Some(Utc.timestamp_nanos(nanos as i64))
}

/// The shape of a value, for a log line that must not quote it: digits become `d`, letters
/// `a`, other characters stay (`"2019-09-13 17:24:16 UTC"` -> `"dddd-dd-dd dd:dd:dd aaa"`).
/// At most 64 characters.
pub fn shape(v: &str) -> String {
    v.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_digit() {
                'd'
            } else if c.is_alphabetic() {
                'a'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(v: &str) -> String {
        parse_time(v)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn every_documented_spelling_gives_the_same_instant() {
        for v in [
            "2019-09-13T17:24:16Z",
            "2019-09-13 17:24:16Z",
            "2019-09-13T17:24:16+00:00",
            "2019-09-13T17:24:16+0000",
            "2019-09-13 17:24:16 UTC",
            "2019-09-13T10:24:16-07:00",
            "2019-09-13 10:24:16 -0700",
            "Fri, 13 Sep 2019 17:24:16 +0000",
            "1568395456",
            "1568395456000",
            "1568395456000000",
            "1568395456000000000",
            "1568395456.0",
        ] {
            assert_eq!(at(v), "2019-09-13T17:24:16.000Z", "{v}");
        }
        assert_eq!(at("2019-09-13 17:24:16.25 UTC"), "2019-09-13T17:24:16.250Z");
    }

    #[test]
    fn dates_by_position_agree_with_chrono_and_refuse_impossible_ones() {
        for v in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T12:00:00Z",
            "2024-12-31 23:59:59.999999999 UTC",
            "1899-03-01T00:00:00Z",
            "2100-03-01T00:00:00+05:30",
        ] {
            let ours = parse_time(v).unwrap();
            let theirs =
                chrono::DateTime::parse_from_rfc3339(&v.replace(" UTC", "Z").replacen(' ', "T", 1))
                    .unwrap();
            assert_eq!(ours, theirs, "{v}");
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:60:00Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn offsets_crossing_midnight_land_on_the_utc_day() {
        assert_eq!(at("2026-11-30T20:30:00-07:00"), "2026-12-01T03:30:00.000Z");
        assert_eq!(at("2026-12-01 01:00:00 +0200"), "2026-11-30T23:00:00.000Z");
    }

    #[test]
    fn a_source_s_own_format_is_read_with_or_without_a_zone() {
        let t = |v, f| parse_with(v, f).map(|t| t.to_rfc3339());
        assert_eq!(
            t("13/09/2019 17:24:16 -0700", "%d/%m/%Y %H:%M:%S %z").as_deref(),
            Some("2019-09-14T00:24:16+00:00")
        );
        assert_eq!(
            t("13.09.2019 17:24", "%d.%m.%Y %H:%M").as_deref(),
            Some("2019-09-13T17:24:00+00:00")
        );
        assert_eq!(
            t("20190913", "%Y%m%d").as_deref(),
            Some("2019-09-13T00:00:00+00:00")
        );
        assert_eq!(t("yesterday", "%Y%m%d"), None);
        assert!(check_format("%d/%m/%Y %H:%M").is_ok());
        assert!(check_format("%H:%M")
            .unwrap_err()
            .to_string()
            .contains("no year"));
        assert!(check_format("%Q %Y").is_err());
    }

    #[test]
    fn what_is_not_a_time_is_none_and_its_shape_names_no_value() {
        for v in [
            "",
            "yesterday",
            "2019-13-45 10:00:00 UTC",
            "2019-09-13 17:24:16 XYZ",
            "NaN",
            "1e400",
        ] {
            assert_eq!(at(v), "none", "{v}");
        }
        assert_eq!(shape("2019/09/13 17h24 UTC"), "dddd/dd/dd ddadd aaa");
    }
}
