//! Walks a JSON text (already validated) and offers every string value, object key and number
//! to a callback, splicing in replacements. Unchanged bytes are copied as they are, so a record
//! without secrets leaves exactly as it came.

use std::collections::HashMap;

/// The first `"` or `\\`. Most strings in records are short: a plain loop beats setting up a
/// vector search for them, which takes over beyond 32 bytes.
#[inline]
pub fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    for (i, &c) in s.iter().take(32).enumerate() {
        if c == b'"' || c == b'\\' {
            return Some(i);
        }
    }
    if s.len() <= 32 {
        return None;
    }
    memchr::memchr2(b'"', b'\\', &s[32..]).map(|i| i + 32)
}

/// A step of the path to the current value (for `--diff`).
#[derive(Debug, Clone, Copy)]
pub enum El {
    Key(usize, usize),
    Index(usize),
}

pub enum Token<'a> {
    /// A string value: its decoded text.
    Str(&'a str),
    /// An object key: its decoded text. A replacement must be a JSON string.
    Key(&'a str),
    /// A number, as written.
    Num(&'a [u8]),
}

/// What a rewrite did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Something was replaced; the result is in `out`.
    pub changed: bool,
    /// Strings with a lone surrogate or an invalid escape, replaced by U+FFFD there.
    pub bad_escapes: u32,
}

/// Decodes a JSON string's content (the text between its quotes) into `out`. A lone surrogate
/// or an invalid escape becomes U+FFFD in place, so one bad character costs that character,
/// not the record. Returns whether that happened.
pub fn unescape(raw: &str, out: &mut String) -> bool {
    out.clear();
    let b = raw.as_bytes();
    let mut bad = false;
    let mut i = 0;
    let hex4 = |at: usize| -> Option<u32> {
        let h = raw.get(at..at + 4)?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    };
    while i < b.len() {
        let Some(k) = memchr::memchr(b'\\', &b[i..]) else {
            out.push_str(&raw[i..]);
            break;
        };
        out.push_str(&raw[i..i + k]);
        i += k + 1;
        let Some(&e) = b.get(i) else {
            out.push('\u{fffd}');
            bad = true;
            break;
        };
        i += 1;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => match hex4(i) {
                Some(hi @ 0xD800..=0xDBFF) => {
                    let lo = (b.get(i + 4) == Some(&b'\\') && b.get(i + 5) == Some(&b'u'))
                        .then(|| hex4(i + 6))
                        .flatten()
                        .filter(|lo| (0xDC00..=0xDFFF).contains(lo));
                    match lo {
                        Some(lo) => {
                            i += 10;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                .unwrap_or('\u{fffd}')
                        }
                        None => {
                            i += 4;
                            bad = true;
                            '\u{fffd}'
                        }
                    }
                }
                Some(v) => {
                    i += 4;
                    char::from_u32(v).unwrap_or_else(|| {
                        bad = true;
                        '\u{fffd}'
                    })
                }
                None => {
                    bad = true;
                    '\u{fffd}'
                }
            },
            _ => {
                bad = true;
                // Keep the escaped character itself after the replacement (it may be UTF-8).
                i -= 1;
                '\u{fffd}'
            }
        };
        out.push(c);
    }
    bad
}

/// Renders a path such as `lines[1].input` from the scanner's stack.
pub fn path_string(json: &[u8], stack: &[El]) -> String {
    let mut s = String::new();
    for el in stack {
        match el {
            El::Key(a, b) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(&String::from_utf8_lossy(&json[*a..*b]));
            }
            El::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// `keyed`: this object's current key is on `path`.
#[derive(Clone, Copy, PartialEq)]
enum Frame {
    Obj { expect_key: bool, keyed: bool },
    Arr,
}

/// Scans `json`; `f(path, token)` returns the JSON text to put in place of the token, or
/// `None` to keep it. Output goes to `out` only once something changed. Keys are offered too:
/// two keys of one object replaced by the same text get `#2`, `#3`, ... so the object keeps
/// both members. A string with a bad escape is always rewritten (with U+FFFD in place).
/// `Err` on text that is not JSON (the caller fails closed).
pub fn rewrite(
    json: &[u8],
    out: &mut Vec<u8>,
    mut f: impl FnMut(&[El], Token<'_>) -> Option<String>,
) -> Result<Rewritten, &'static str> {
    let mut frames: Vec<Frame> = Vec::with_capacity(8);
    let mut path: Vec<El> = Vec::with_capacity(8);
    // Replacement keys given in open objects: how often each (object depth, JSON text) was
    // given, and the order they were first given in, to forget them when their object closes.
    let mut given: HashMap<(usize, String), u32> = HashMap::new();
    let mut renamed: Vec<(usize, String)> = Vec::new();
    let mut copied = 0usize;
    let mut done = Rewritten::default();
    let mut unescaped = String::new();
    // Validated once; strings are then slices of it (quotes are ASCII, so always boundaries).
    let whole = std::str::from_utf8(json).map_err(|_| "invalid UTF-8")?;
    let mut i = 0;
    while i < json.len() {
        let c = json[i];
        match c {
            b'{' => {
                frames.push(Frame::Obj {
                    expect_key: true,
                    keyed: false,
                });
                i += 1;
            }
            b'[' => {
                frames.push(Frame::Arr);
                path.push(El::Index(0));
                i += 1;
            }
            b'}' | b']' => {
                let depth = frames.len();
                match frames.pop() {
                    Some(Frame::Arr | Frame::Obj { keyed: true, .. }) => {
                        path.pop();
                    }
                    Some(_) => {}
                    None => return Err("unbalanced brackets"),
                }
                while renamed.last().is_some_and(|(d, _)| *d == depth) {
                    if let Some(k) = renamed.pop() {
                        given.remove(&k);
                    }
                }
                i += 1;
            }
            b',' => {
                match frames.last_mut() {
                    Some(Frame::Obj { expect_key, keyed }) => {
                        *expect_key = true;
                        if *keyed {
                            *keyed = false;
                            path.pop();
                        }
                    }
                    Some(Frame::Arr) => {
                        if let Some(El::Index(n)) = path.last_mut() {
                            *n += 1;
                        }
                    }
                    None => return Err("unexpected comma"),
                }
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                let mut escaped = false;
                loop {
                    let k = quote_or_backslash(&json[j..]).ok_or("unterminated string")?;
                    j += k;
                    if json[j] == b'\\' {
                        escaped = true;
                        j += 2;
                        if j > json.len() {
                            return Err("unterminated escape");
                        }
                    } else {
                        break;
                    }
                }
                let end = j; // closing quote
                i = end + 1;
                let raw = whole.get(start..end).ok_or("invalid UTF-8")?;
                let mut bad = false;
                let text: &str = if escaped {
                    bad = unescape(raw, &mut unescaped);
                    &unescaped
                } else {
                    raw
                };
                done.bad_escapes += bad as u32;
                let mut is_key = false;
                if let Some(Frame::Obj { expect_key, keyed }) = frames.last_mut() {
                    if *expect_key {
                        *expect_key = false;
                        *keyed = true;
                        path.push(El::Key(start, end));
                        is_key = true;
                    }
                }
                // Most keys are short words no detector can match: not even offered.
                if is_key && !bad && !crate::mask::detect::may_hold_secret(text) {
                    continue;
                }
                let tok = if is_key {
                    Token::Key(text)
                } else {
                    Token::Str(text)
                };
                let rep = f(&path, tok).or_else(|| bad.then(|| json_string(text)));
                if let Some(mut rep) = rep {
                    if is_key {
                        // Counted per object, so many colliding keys cost constant time each.
                        let depth = frames.len();
                        let n = given.entry((depth, rep.clone())).or_insert(0);
                        *n += 1;
                        if *n == 1 {
                            renamed.push((depth, rep.clone()));
                        } else {
                            rep = format!("{}#{n}\"", &rep[..rep.len() - 1]);
                        }
                    }
                    out.extend_from_slice(&json[copied..start - 1]);
                    out.extend_from_slice(rep.as_bytes());
                    copied = end + 1;
                    done.changed = true;
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if let Some(rep) = f(&path, Token::Num(&json[start..i])) {
                    out.extend_from_slice(&json[copied..start]);
                    out.extend_from_slice(rep.as_bytes());
                    copied = i;
                    done.changed = true;
                }
            }
            _ => i += 1,
        }
    }
    if !frames.is_empty() {
        return Err("unbalanced brackets");
    }
    if done.changed {
        out.extend_from_slice(&json[copied..]);
    }
    Ok(done)
}

/// `s` as a JSON string.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"[REDACTED:unprocessable]\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_values_and_keys_that_could_hold_a_secret_with_their_paths() {
        let j = br#"{"a":"x","b":[1,"y",{"c.1":"z\u0040w"}],"d":{"q":{},"e":-2.5}}"#;
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let done = rewrite(j, &mut out, |p, t| {
            let v = match t {
                Token::Str(s) => s.to_string(),
                Token::Key(k) => format!("key {k}"),
                Token::Num(n) => String::from_utf8_lossy(n).into_owned(),
            };
            seen.push((path_string(j, p), v));
            None
        })
        .unwrap();
        assert!(!done.changed && out.is_empty());
        // Keys that are short words (`a`, `b`, ...) cannot hold a secret and are not offered.
        let expect = [
            ("a", "x"),
            ("b[0]", "1"),
            ("b[1]", "y"),
            ("b[2].c.1", "key c.1"),
            ("b[2].c.1", "z@w"),
            ("d.e", "-2.5"),
        ];
        assert_eq!(seen, expect.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn splices_replacements_and_keeps_the_rest() {
        let j = br#"{"a":"secret","n":4111111111111111,"k":"keep"}"#;
        let mut out = Vec::new();
        rewrite(j, &mut out, |_, t| match t {
            Token::Str("secret") => Some("\"[X]\"".into()),
            Token::Num(_) => Some("\"[N]\"".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(out, br#"{"a":"[X]","n":"[N]","k":"keep"}"#);
    }

    #[test]
    fn colliding_key_replacements_are_numbered_per_object() {
        let j = br#"{"a@x.io":1,"b@x.io":{"c@x.io":2},"d@x.io":3}"#;
        let mut out = Vec::new();
        rewrite(j, &mut out, |_, t| match t {
            Token::Key(k) if k.contains('@') => Some("\"[E]\"".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"[E]":1,"[E]#2":{"[E]":2},"[E]#3":3}"#
        );
    }

    #[test]
    fn a_lone_surrogate_costs_one_character_not_the_record() {
        let j = br#"{"a":"x\ud800y","b":"\ud83d\ude00","c":"ok"}"#;
        let mut out = Vec::new();
        let done = rewrite(j, &mut out, |_, _| None).unwrap();
        assert_eq!(done.bad_escapes, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":\"x\u{fffd}y\",\"b\":\"\\ud83d\\ude00\",\"c\":\"ok\"}"
        );
        let mut s = String::new();
        assert!(!unescape(r"\ud83d\ude00 \n\u00e9", &mut s));
        assert_eq!(s, "\u{1f600} \n\u{e9}");
        assert!(unescape(r"\udc00\ud800", &mut s));
        assert_eq!(s, "\u{fffd}\u{fffd}");
    }
}
