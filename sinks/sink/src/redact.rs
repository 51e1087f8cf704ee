//! One redaction for every message that leaves the process: log lines (logferry's and its
//! dependencies'), `/readyz` fields, dead-letter reasons and command output.
//!
//! Two passes: the configured secret values themselves (registered at load, and by the sinks
//! when they read a secret file), wherever they appear and in every form a URL, a form body
//! or a JSON encoder writes them; then, in any URL, the user info and every query value whose
//! name is not known to be harmless. Both replace with `***`.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::RwLock;

use aho_corasick::{AhoCorasick, MatchKind};

mod forms;

pub use forms::encodings;

pub const MASK: &str = "***";

/// Registered values beyond this: the oldest go (a token file rotated hourly for a year).
const MAX_SECRETS: usize = 4096;

/// Patterns (the forms of the registered values, see [`encodings`]) beyond this: the oldest
/// values go, each with all its forms. Bounds the automaton rebuilt on every registration.
const MAX_PATTERNS: usize = 8192;

/// A value shorter than this is not registered: "abc" would blank out ordinary words; a
/// credential is never that short.
pub const MIN_SECRET_LEN: usize = 4;

/// One registered value and the forms of it that are searched for.
struct Secret {
    value: String,
    forms: Vec<String>,
}

/// The registered values, oldest first, and the automaton that finds any of their forms.
struct Registry {
    secrets: VecDeque<Secret>,
    /// The number of forms over all `secrets`.
    patterns: usize,
    max_secrets: usize,
    max_patterns: usize,
    matcher: Option<AhoCorasick>,
}

impl Registry {
    const fn new(max_secrets: usize, max_patterns: usize) -> Registry {
        Registry {
            secrets: VecDeque::new(),
            patterns: 0,
            max_secrets,
            max_patterns,
            matcher: None,
        }
    }

    /// Adds values (with all their [`encodings`]); returns whether the set changed. A value
    /// already registered counts as new again for eviction. Past either bound, whole values
    /// go, oldest first: never only some forms of one.
    fn add<I, S>(&mut self, values: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut changed = false;
        for v in values {
            let v = v.as_ref().trim();
            if v.len() < MIN_SECRET_LEN {
                continue;
            }
            if let Some(i) = self.secrets.iter().position(|s| s.value == v) {
                // Still in use: the last to go.
                if i + 1 != self.secrets.len() {
                    if let Some(s) = self.secrets.remove(i) {
                        self.secrets.push_back(s);
                    }
                }
                continue;
            }
            changed = true;
            let forms = encodings(v);
            self.patterns += forms.len();
            self.secrets.push_back(Secret {
                value: v.to_string(),
                forms,
            });
        }
        if !changed {
            return false;
        }
        while self.secrets.len() > 1
            && (self.secrets.len() > self.max_secrets || self.patterns > self.max_patterns)
        {
            if let Some(old) = self.secrets.pop_front() {
                self.patterns -= old.forms.len();
            }
        }
        // Two values may share a form (one is the other's percent-encoding): searched once.
        let mut seen = HashSet::new();
        let patterns = self
            .secrets
            .iter()
            .flat_map(|s| s.forms.iter())
            .filter(|f| seen.insert(f.as_str()));
        // Leftmost-longest: a token that contains another secret is masked whole.
        self.matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .ok();
        true
    }

    /// `s` with every form of every registered value replaced by `***`.
    fn mask<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(m) if m.is_match(s) => {
                let mut out = String::with_capacity(s.len());
                m.replace_all_with(s, &mut out, |_, _, dst| {
                    dst.push_str(MASK);
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(s),
        }
    }
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry::new(MAX_SECRETS, MAX_PATTERNS));

/// Adds secret values to be replaced in every message from now on. Values are never removed
/// (a reload that drops one still must not print it); the set is bounded, oldest out first.
pub fn register<I, S>(values: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    REGISTRY
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .add(values);
}

/// `s` with every registered secret and every secret part of a URL replaced by `***`.
pub fn text(s: &str) -> Cow<'_, str> {
    let first = REGISTRY.read().unwrap_or_else(|p| p.into_inner()).mask(s);
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

    #[test]
    fn json_escaped_and_lower_case_percent_forms_are_masked() {
        register(["Ab+cd/EF==redact-json-test"]);
        for sent in [
            // PHP's json_encode.
            r#"{"e":"Ab+cd\/EF==redact-json-test"}"#,
            // .NET System.Text.Json.
            r#"{"e":"Ab\u002Bcd/EF==redact-json-test"}"#,
            // Lower-case percent-encoding.
            r#"{"e":"Ab%2bcd%2fEF%3d%3dredact-json-test"}"#,
            // Upper-case percent-encoding.
            r#"{"e":"Ab%2Bcd%2FEF%3D%3Dredact-json-test"}"#,
        ] {
            assert_eq!(text(sent), r#"{"e":"***"}"#, "{sent}");
        }

        let quoted = r#"q"uo\te-secret-json"#;
        register([quoted]);
        let json = serde_json::to_string(quoted).unwrap();
        assert_ne!(json.trim_matches('"'), quoted);
        assert_eq!(
            text(&format!(r#"{{"e":{json}}}"#)),
            r#"{"e":"***"}"#,
            "{json}"
        );
    }

    #[test]
    fn encodings_are_few_and_distinct() {
        let e = encodings("a+b/c=d~e f\"g<h\u{e9}");
        assert!(e.len() <= 9, "{e:?}");
        let mut sorted = e.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), e.len(), "{e:?}");
        let has = |form: &str| e.iter().any(|f| f == form);
        assert!(has("a+b\\/c=d~e f\\\"g<h\u{e9}"), "{e:?}");
        assert!(has("a\\u002Bb/c=d~e f\\u0022g\\u003Ch\\u00E9"), "{e:?}");
        assert!(has("a+b/c=d~e f\\\"g\\u003ch\\u00e9"), "{e:?}");
        assert!(has("a%2bb%2fc%3dd%7ee%20f%22g%3ch%c3%a9"), "{e:?}");
        assert_eq!(
            encodings("plain-Token_1.2"),
            vec!["plain-Token_1.2".to_string()]
        );
        let emoji = encodings("emoji-\u{1f600}-token");
        assert!(
            emoji.contains(&"emoji-\\uD83D\\uDE00-token".to_string()),
            "{emoji:?}"
        );
        let ctl = encodings("ctl\u{1}-token\n");
        assert!(ctl.contains(&"ctl\\u0001-token\\n".to_string()), "{ctl:?}");
    }

    #[test]
    fn eviction_drops_whole_values_oldest_first() {
        let mut r = Registry::new(3, 6);
        // Four forms each: raw, %2B, %2b, \u002B.
        assert_eq!(encodings("aaaa+1111").len(), 4);
        assert!(r.add(["aaaa+1111"]));
        assert!(r.add(["bbbb+2222"]));
        // Eight patterns over six: the older value goes, every form of it.
        assert_eq!(r.secrets.len(), 1);
        assert_eq!(r.patterns, 4);
        for evicted in ["aaaa+1111", "aaaa%2B1111", "aaaa%2b1111", "aaaa\\u002B1111"] {
            assert_eq!(r.mask(evicted), evicted);
        }
        for live in ["bbbb+2222", "bbbb%2B2222", "bbbb%2b2222", "bbbb\\u002B2222"] {
            assert_eq!(r.mask(live), MASK);
        }
        assert!(r.add(["cccc-3333", "dddd-4444"]));
        assert_eq!((r.secrets.len(), r.patterns), (3, 6));
        // A fourth value over three: the oldest goes.
        assert!(r.add(["eeee-5555"]));
        assert_eq!((r.secrets.len(), r.patterns), (3, 3));
        assert_eq!(r.mask("bbbb\\u002B2222"), "bbbb\\u002B2222");
        // Registered again: the last to go; nothing to rebuild.
        assert!(!r.add(["cccc-3333", "abc"]));
        assert!(r.add(["ffff-6666"]));
        assert_eq!(
            r.mask("cccc-3333 dddd-4444 eeee-5555 ffff-6666"),
            "*** dddd-4444 *** ***"
        );
        let counted: usize = r.secrets.iter().map(|s| s.forms.len()).sum();
        assert_eq!(counted, r.patterns);
    }
}
