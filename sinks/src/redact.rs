//! One redaction for every message that leaves the process: log lines (logferry's and its
//! dependencies'), `/readyz` fields, dead-letter reasons and command output.
//!
//! Two passes: the configured secret values themselves (registered at load, and by the sinks
//! when they read a secret file), wherever they appear; then, in any URL, the user info and
//! every query value whose name is not known to be harmless. Both replace with `***`.

use std::borrow::Cow;
use std::sync::RwLock;

use aho_corasick::{AhoCorasick, MatchKind};

pub const MASK: &str = "***";

/// Registered values beyond this: the oldest go (a token file rotated hourly for a year).
const MAX_SECRETS: usize = 4096;

/// A value shorter than this is not registered: "abc" would blank out ordinary words; a
/// credential is never that short.
pub const MIN_SECRET_LEN: usize = 4;

struct Registry {
    values: Vec<String>,
    matcher: Option<AhoCorasick>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    values: Vec::new(),
    matcher: None,
});

/// Adds secret values to be replaced in every message from now on. Values are never removed
/// (a reload that drops one still must not print it); the set is bounded, oldest out first.
pub fn register<I, S>(values: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut g = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let mut changed = false;
    for v in values {
        let v = v.as_ref().trim();
        if v.len() < MIN_SECRET_LEN || g.values.iter().any(|x| x == v) {
            continue;
        }
        changed = true;
        for e in encodings(v) {
            if !g.values.contains(&e) {
                g.values.push(e);
            }
        }
    }
    if !changed {
        return;
    }
    if g.values.len() > MAX_SECRETS {
        let extra = g.values.len() - MAX_SECRETS;
        g.values.drain(..extra);
    }
    // Leftmost-longest: a token that contains another secret is masked whole.
    g.matcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&g.values)
        .ok();
}

/// A value as written, and as a URL (percent-encoded) or a form body
/// (`application/x-www-form-urlencoded`, where `~` is encoded too) shows it.
pub fn encodings(v: &str) -> Vec<String> {
    let url = crate::percent_encode(v);
    let form = url.replace('~', "%7E");
    let mut out = vec![v.to_string()];
    for e in [url, form] {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// `s` with every registered secret and every secret part of a URL replaced by `***`.
pub fn text(s: &str) -> Cow<'_, str> {
    let first = {
        let g = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
        match &g.matcher {
            Some(m) if m.is_match(s) => Cow::Owned(m.replace_all(s, &vec![MASK; g.values.len()])),
            _ => Cow::Borrowed(s),
        }
    };
    if !first.contains("://") && !first.contains("sig=") {
        return first;
    }
    Cow::Owned(urls(&first))
}

/// Query parameters whose values are never secret and help a reader (Azure and S3 request
/// names, SAS validity fields). Everything else is masked: unknown is treated as secret.
const HARMLESS_QUERY: &[&str] = &[
    "comp",
    "restype",
    "api-version",
    "sv",
    "ss",
    "srt",
    "sp",
    "sr",
    "spr",
    "se",
    "st",
    "prefix",
    "x-id",
    "list-type",
    "uploads",
    "partnumber",
    "tagging",
    "timeout",
];

/// Masks the user info and the query values of every URL in `s`; a bare `sig=` outside a URL
/// (a SAS token on its own) too.
fn urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        // The scheme is the run of letters before "://".
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |j| j + 1);
        out.push_str(&bare_sig(&rest[..start]));
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | ']' | '}')
            })
            .unwrap_or(tail.len());
        out.push_str(&url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(&bare_sig(rest));
    out
}

/// A SAS signature outside a URL (a token on its own): its value up to the next delimiter.
fn bare_sig(s: &str) -> Cow<'_, str> {
    if !s.contains("sig=") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str(MASK);
        let tail = &rest[i + 4..];
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace() || c == ')')
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// One URL with its user info and query values masked.
pub fn url(u: &str) -> String {
    let Some(i) = u.find("://") else {
        return u.to_string();
    };
    let (scheme, after) = u.split_at(i + 3);
    let auth_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, path) = after.split_at(auth_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("{MASK}@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let path = match path.find('?') {
        Some(q) => format!("{}?{}", &path[..q], query(&path[q + 1..])),
        None => path.to_string(),
    };
    format!("{scheme}{authority}{path}")
}

/// `k=v&k2=v2` with the values of names not known to be harmless masked (a fragment after
/// `#` is kept as it is).
fn query(q: &str) -> String {
    let (q, frag) = match q.find('#') {
        Some(i) => q.split_at(i),
        None => (q, ""),
    };
    let parts: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v))
                if !v.is_empty() && !HARMLESS_QUERY.iter().any(|h| h.eq_ignore_ascii_case(k)) =>
            {
                format!("{k}={MASK}")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{}{frag}", parts.join("&"))
}

/// Path segments of a configured URL that look like credentials: long, and mixing letters
/// with digits (a receiver token in the path), which is what an HTTP receiver URL often
/// carries. Registered at load with the query values and user info of the same URL.
pub fn url_secrets(u: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(i) = u.find("://") else {
        return out;
    };
    let after = &u[i + 3..];
    let auth_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(auth_end);
    if let Some(at) = authority.rfind('@') {
        let info = &authority[..at];
        out.push(info.to_string());
        if let Some((_, pw)) = info.split_once(':') {
            out.push(pw.to_string());
        }
    }
    let (path, q) = match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    };
    for seg in path.split('/') {
        if looks_like_token(seg) {
            out.push(seg.to_string());
        }
    }
    for kv in q.split(['&', '#']) {
        if let Some((k, v)) = kv.split_once('=') {
            if !HARMLESS_QUERY.iter().any(|h| h.eq_ignore_ascii_case(k)) {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// At least 16 characters of letters, digits and `-_.~%+=`, with both letters and digits.
fn looks_like_token(s: &str) -> bool {
    s.len() >= 16
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~%+=".contains(c))
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_masked_wherever_they_appear() {
        register(["s3cr3t-value-for-redact-test", "ab"]);
        assert_eq!(
            text("auth failed with s3cr3t-value-for-redact-test, retrying"),
            "auth failed with ***, retrying"
        );
        // Too short to register: left alone.
        assert_eq!(text("ab cd"), "ab cd");
        // Its percent-encoded form too.
        register(["tok/with+plus=="]);
        assert_eq!(text("GET /x?t=tok%2Fwith%2Bplus%3D%3D"), "GET /x?t=***");
    }

    #[test]
    fn urls_lose_user_info_and_query_values() {
        assert_eq!(
            text("error sending request for url (https://user:pw@h.example/a/b?api_key=K1&comp=block&sig=S)"),
            "error sending request for url (https://***@h.example/a/b?api_key=***&comp=block&sig=***)"
        );
        assert_eq!(text("plain text, no url"), "plain text, no url");
        assert_eq!(text("token sv=2022&sig=abc%2B"), "token sv=2022&sig=***");
        assert_eq!(url("http://h:8080/p"), "http://h:8080/p");
    }

    #[test]
    fn configured_urls_name_their_secret_parts() {
        let s = url_secrets(
            "https://u:pw1234@h/receiver/v1/http/a1b2c3d4e5f6g7h8i9/x?api_key=zz99&comp=list",
        );
        assert!(s.contains(&"pw1234".to_string()), "{s:?}");
        assert!(s.contains(&"a1b2c3d4e5f6g7h8i9".to_string()), "{s:?}");
        assert!(s.contains(&"zz99".to_string()), "{s:?}");
        assert!(!s.iter().any(|v| v == "receiver" || v == "list"), "{s:?}");
    }
}
