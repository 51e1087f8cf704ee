//! Detectors: find sensitive values inside a string, and validate them so that look-alikes
//! (order ids, timestamps, version strings) are left alone.
//!
//! Each string first goes through a byte scan that says which detectors could match at all
//! (an `@` for e-mail, a long enough digit run for cards, `AKIA` for AWS keys, ...); only those
//! run their regex. The regexes are the `regex` crate's, which run in linear time.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;

use super::card;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    CreditCard,
    Email,
    UsSsn,
    Iban,
    AwsAccessKey,
    Jwt,
    PrivateKey,
    BearerToken,
    UrlCredentials,
    Ipv4,
    Ipv6,
    Phone,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::CreditCard,
        Kind::Email,
        Kind::UsSsn,
        Kind::Iban,
        Kind::AwsAccessKey,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::BearerToken,
        Kind::UrlCredentials,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Phone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::CreditCard => "credit_card",
            Kind::Email => "email",
            Kind::UsSsn => "us_ssn",
            Kind::Iban => "iban",
            Kind::AwsAccessKey => "aws_access_key",
            Kind::Jwt => "jwt",
            Kind::PrivateKey => "private_key",
            Kind::BearerToken => "bearer_token",
            Kind::UrlCredentials => "url_credentials",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::Phone => "phone",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A match: byte range in the string and what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

fn re(p: &str) -> Regex {
    // The patterns are constants checked by the tests; a failure here is a bug in this file.
    Regex::new(p).unwrap_or_else(|e| panic!("built-in pattern {p:?}: {e}"))
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
    )
});
// No capture groups in these: a search without captures stays on the fast engines, and the
// parts are found by position in the match.
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"\d{3}[\- .]\d{2}[\- .]\d{4}"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"));
static AWS: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}"));
static JWT: LazyLock<Regex> =
    LazyLock::new(|| re(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"));
static PEM: LazyLock<Regex> = LazyLock::new(|| {
    re(r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z ]*PRIVATE KEY-----|\z)")
});
static BEARER: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?-u:\b)bearer[ \t\r\n]+[A-Za-z0-9\-._~+/]+=*"));
static URL_CRED: LazyLock<Regex> =
    LazyLock::new(|| re(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:[^\s@/]+@"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\d{1,3}(?:\.\d{1,3}){3}"));
static IPV6: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*"));
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| re(r"\+[1-9]\d{7,14}|\+?\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}"));

/// Which detectors could match `s`, as a bit set, from one pass over its bytes.
fn candidates(s: &str, enabled: u16) -> u16 {
    let b = s.as_bytes();
    let (mut digits, mut at, mut colons, mut dots, mut upper) =
        (0usize, false, 0usize, 0usize, 0usize);
    // Most digits in one run of digit groups and separators (cards, SSNs, phones).
    let (mut run, mut max_run) = (0usize, 0usize);
    let (mut double_colon, mut plus_digit, mut prev, mut prev2) = (false, false, 0u8, 0u8);
    // Literal anchors seen on the way: `eyJ` (JWT), `://` (URL), `--B` (PEM), `b`/`B` (bearer).
    let (mut eyj, mut scheme, mut pem, mut b_at) = (false, false, false, false);
    for &c in b {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                run += 1;
                max_run = max_run.max(run);
                plus_digit |= prev == b'+';
            }
            // Cards take runs of spaces, dashes or dots between their groups.
            b' ' | b'-' | b'.' if run > 0 => dots += (c == b'.') as usize,
            _ => {
                run = 0;
                match c {
                    b'@' => at = true,
                    b':' => {
                        colons += 1;
                        double_colon |= prev == b':';
                    }
                    b'.' => dots += 1,
                    b'A'..=b'Z' => {
                        upper += 1;
                        eyj |= c == b'J' && prev == b'y' && prev2 == b'e';
                        pem |= c == b'B' && prev == b'-' && prev2 == b'-';
                        b_at |= c == b'B';
                    }
                    b'/' => scheme |= prev == b'/' && prev2 == b':',
                    b'b' => b_at = true,
                    _ => {}
                }
            }
        }
        prev2 = prev;
        prev = c;
    }
    let mut m = 0u16;
    if max_run >= 13 {
        m |= Kind::CreditCard.bit();
    }
    if at {
        m |= Kind::Email.bit();
    }
    if max_run >= 9 {
        m |= Kind::UsSsn.bit();
    }
    if digits >= 2
        && upper >= 2
        && b.len() >= 15
        && b.windows(4).any(|w| {
            w[0].is_ascii_uppercase()
                && w[1].is_ascii_uppercase()
                && w[2].is_ascii_digit()
                && w[3].is_ascii_digit()
        })
    {
        m |= Kind::Iban.bit();
    }
    if digits >= 4 && dots >= 3 {
        m |= Kind::Ipv4.bit();
    }
    // A valid IPv6 address has seven colons or a `::`.
    if double_colon || colons >= 7 {
        m |= Kind::Ipv6.bit();
    }
    if plus_digit || max_run >= 10 {
        m |= Kind::Phone.bit();
    }
    // Anchored detectors: cheap literal checks decide whether their regex runs.
    if upper >= 4 && b.len() >= 20 {
        m |= Kind::AwsAccessKey.bit();
    }
    if eyj && b.len() >= 12 {
        m |= Kind::Jwt.bit();
    }
    if pem && b.len() >= 20 {
        m |= Kind::PrivateKey.bit();
    }
    if b_at
        && b.len() >= 8
        && memchr::memchr2_iter(b'b', b'B', b).any(|i| {
            b.get(i + 1..i + 6)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"earer"))
        })
    {
        m |= Kind::BearerToken.bit();
    }
    if scheme {
        m |= Kind::UrlCredentials.bit();
    }
    m & enabled
}

fn iban_valid(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for &c in tail.iter().chain(head) {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn_valid(area: &str, group: &str, serial: &str) -> bool {
    let a: u32 = area.parse().unwrap_or(0);
    a != 0 && a != 666 && a < 900 && group != "00" && serial != "0000"
}

fn boundary_ok(s: &str, start: usize, end: usize, word: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    (start == 0 || !word(b[start - 1])) && (end == b.len() || !word(b[end]))
}

fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn upper_or_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

fn digit_or_dot(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.'
}

fn cards(s: &str, out: &mut Vec<Found>) {
    let mut spans = Vec::new();
    card::find(s.as_bytes(), &mut spans);
    out.extend(spans.into_iter().map(|(start, end)| Found {
        start,
        end,
        kind: Kind::CreditCard,
    }));
}

/// Finds every enabled detector's matches in `s`, without overlaps (earliest, then longest).
pub fn find(s: &str, enabled: u16, out: &mut Vec<Found>) {
    out.clear();
    let cand = candidates(s, enabled);
    if cand == 0 {
        return;
    }
    let has = |k: Kind| cand & k.bit() != 0;
    let push = |out: &mut Vec<Found>, start, end, kind| out.push(Found { start, end, kind });
    if has(Kind::PrivateKey) {
        for m in PEM.find_iter(s) {
            push(out, m.start(), m.end(), Kind::PrivateKey);
        }
    }
    if has(Kind::Jwt) {
        for m in JWT.find_iter(s) {
            push(out, m.start(), m.end(), Kind::Jwt);
        }
    }
    if has(Kind::BearerToken) {
        for m in BEARER.find_iter(s) {
            // The token starts after the word and its white space.
            let t = m.as_str()[6..].trim_start();
            push(out, m.end() - t.len(), m.end(), Kind::BearerToken);
        }
    }
    if has(Kind::UrlCredentials) {
        for m in URL_CRED.find_iter(s) {
            // `scheme://user:password@`: the password lies between the first `:` after `//`
            // and the closing `@`.
            let t = m.as_str();
            let after = t.find("://").map_or(0, |i| i + 3);
            if let Some(c) = t[after..].find(':') {
                push(
                    out,
                    m.start() + after + c + 1,
                    m.end() - 1,
                    Kind::UrlCredentials,
                );
            }
        }
    }
    if has(Kind::AwsAccessKey) {
        for m in AWS.find_iter(s) {
            // The 20 characters must be the whole upper-case run; a lower-case word may touch it
            // (`keyAKIA...`).
            if boundary_ok(s, m.start(), m.end(), upper_or_digit) {
                push(out, m.start(), m.end(), Kind::AwsAccessKey);
            }
        }
    }
    if has(Kind::Email) {
        for m in EMAIL.find_iter(s) {
            push(out, m.start(), m.end(), Kind::Email);
        }
    }
    if has(Kind::Iban) {
        for m in IBAN.find_iter(s) {
            if boundary_ok(s, m.start(), m.end(), alnum) && iban_valid(m.as_str()) {
                push(out, m.start(), m.end(), Kind::Iban);
            }
        }
    }
    if has(Kind::CreditCard) {
        cards(s, out);
    }
    if has(Kind::UsSsn) {
        for m in SSN.find_iter(s) {
            let t = m.as_str().as_bytes();
            let (area, group, serial) = (&m.as_str()[0..3], &m.as_str()[4..6], &m.as_str()[7..11]);
            // Bounded by digits only: `ssn123-45-6789` is an SSN, `1123-45-6789` is not.
            if t[3] == t[6]
                && boundary_ok(s, m.start(), m.end(), |c| c.is_ascii_digit())
                && ssn_valid(area, group, serial)
            {
                push(out, m.start(), m.end(), Kind::UsSsn);
            }
        }
    }
    if has(Kind::Ipv4) {
        for m in IPV4.find_iter(s) {
            if boundary_ok(s, m.start(), m.end(), digit_or_dot)
                && m.as_str().parse::<Ipv4Addr>().is_ok()
            {
                push(out, m.start(), m.end(), Kind::Ipv4);
            }
        }
    }
    if has(Kind::Ipv6) {
        for m in IPV6.find_iter(s) {
            let t = m.as_str().trim_end_matches('.');
            if t.matches(':').count() >= 2 && t.parse::<Ipv6Addr>().is_ok() {
                push(out, m.start(), m.start() + t.len(), Kind::Ipv6);
            }
        }
    }
    if has(Kind::Phone) {
        for m in PHONE.find_iter(s) {
            if boundary_ok(s, m.start(), m.end(), |c| c.is_ascii_digit()) {
                push(out, m.start(), m.end(), Kind::Phone);
            }
        }
    }
    if out.len() > 1 {
        out.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut keep: Vec<Found> = Vec::with_capacity(out.len());
        for f in out.drain(..) {
            match keep.last() {
                Some(l) if f.start < l.end => {}
                _ => keep.push(f),
            }
        }
        *out = keep;
    }
}

/// A JSON number that is a card number, in any spelling (see [`card::number_is_card`]).
pub fn number_is_card(token: &[u8]) -> bool {
    card::number_is_card(token)
}

/// False for text no detector can match: under 20 bytes (the shortest AWS key) of letters,
/// `_` and `-` only. Every other detector needs a digit, `@`, `:`, `.` or white space.
pub fn may_hold_secret(s: &str) -> bool {
    s.len() >= 20
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphabetic() || c == b'_' || c == b'-')
}

pub fn mask_of(kinds: &[Kind]) -> u16 {
    kinds.iter().fold(0, |m, k| m | k.bit())
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
