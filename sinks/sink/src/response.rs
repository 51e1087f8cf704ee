//! How destinations' answers become [`Outcome`]s, in one place for every sink: the status
//! table, `Retry-After` (seconds or an HTTP date), and the excerpt of an error body that goes
//! into a reason. Each sink adds its special cases (a service's error codes) before the table.

use std::time::Duration;

use crate::Outcome;

/// How much of an error body a reason keeps: enough for a service's message, never a page.
const EXCERPT_CHARS: usize = 300;

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 section 10.2.3). Zero, or a
/// date in the past, is no wait at all: `None`, so the sink's own backoff applies (a server
/// answering `Retry-After: 0` again and again would otherwise get a request storm).
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    (!d.is_zero()).then_some(d)
}

/// The start of an error body on one line: whitespace runs folded, control characters
/// dropped, cut at a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_CHARS * 4)]);
    let mut out = String::new();
    let mut space = false;
    for c in text.trim().chars() {
        if out.chars().count() >= EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() {
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

/// The common table from an HTTP status to an outcome: 2xx delivered; 429 throttled; 408 and
/// 5xx retried; 413 too large; anything else a permanent refusal.
pub fn from_status(status: u16, after: Option<Duration>, reason: String) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        429 => Outcome::Throttled { after, reason },
        408 | 500..=599 => Outcome::Retry { after, reason },
        413 => Outcome::TooLarge { reason },
        _ => Outcome::Rejected { reason },
    }
}

/// An error with its causes (reqwest's top line alone says little: "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Outcome {
    /// What went wrong, for logs and dead letters; `None` when delivered.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retry { reason, .. }
            | Outcome::Throttled { reason, .. }
            | Outcome::TooLarge { reason }
            | Outcome::Rejected { reason }
            | Outcome::Parked { reason, .. } => Some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let d = retry_after(&in_a_minute).unwrap();
        assert!(
            d > Duration::from_secs(55) && d <= Duration::from_secs(60),
            "{d:?}"
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            None,
            "a date in the past: the sink's own backoff"
        );
        assert_eq!(retry_after("0"), None, "zero: the sink's own backoff");
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn the_status_table() {
        let r = || "x".to_string();
        assert_eq!(from_status(204, None, r()), Outcome::Delivered);
        assert!(matches!(
            from_status(429, None, r()),
            Outcome::Throttled { .. }
        ));
        assert!(matches!(from_status(408, None, r()), Outcome::Retry { .. }));
        assert!(matches!(from_status(503, None, r()), Outcome::Retry { .. }));
        assert!(matches!(
            from_status(413, None, r()),
            Outcome::TooLarge { .. }
        ));
        assert!(matches!(
            from_status(403, None, r()),
            Outcome::Rejected { .. }
        ));
        assert_eq!(from_status(400, None, r()).reason(), Some("x"));
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(
            excerpt(b"  {\"error\":\n  \"bad\"}\r\n"),
            "{\"error\": \"bad\"}"
        );
        let long = "a".repeat(1000);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
    }
}
