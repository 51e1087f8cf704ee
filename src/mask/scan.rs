//! Walks a JSON text (already validated) and offers every string value and number to a
//! callback, splicing in replacements. Unchanged bytes are copied as they are, so a record
//! without secrets leaves exactly as it came.

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
    /// A number, as written.
    Num(&'a [u8]),
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
/// `None` to keep it. Output goes to `out` only once something changed; returns whether it did.
/// `Err` on text that is not JSON (the caller fails closed).
pub fn rewrite(
    json: &[u8],
    out: &mut Vec<u8>,
    mut f: impl FnMut(&[El], Token<'_>) -> Option<String>,
) -> Result<bool, &'static str> {
    let mut frames: Vec<Frame> = Vec::with_capacity(8);
    let mut path: Vec<El> = Vec::with_capacity(8);
    let mut copied = 0usize;
    let mut changed = false;
    let mut unescaped: String;
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
                match frames.pop() {
                    Some(Frame::Arr | Frame::Obj { keyed: true, .. }) => {
                        path.pop();
                    }
                    Some(_) => {}
                    None => return Err("unbalanced brackets"),
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
                if let Some(Frame::Obj { expect_key, keyed }) = frames.last_mut() {
                    if *expect_key {
                        *expect_key = false;
                        *keyed = true;
                        path.push(El::Key(start, end));
                        continue;
                    }
                }
                let text: &str = if escaped {
                    unescaped = serde_json::from_slice::<String>(&json[start - 1..=end])
                        .map_err(|_| "bad string escape")?;
                    &unescaped
                } else {
                    whole.get(start..end).ok_or("invalid UTF-8")?
                };
                if let Some(rep) = f(&path, Token::Str(text)) {
                    out.extend_from_slice(&json[copied..start - 1]);
                    out.extend_from_slice(rep.as_bytes());
                    copied = end + 1;
                    changed = true;
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
                    changed = true;
                }
            }
            _ => i += 1,
        }
    }
    if !frames.is_empty() {
        return Err("unbalanced brackets");
    }
    if changed {
        out.extend_from_slice(&json[copied..]);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_values_not_keys_with_their_paths() {
        let j = br#"{"a":"x","b":[1,"y",{"c":"z\u0040w"}],"d":{"q":{},"e":-2.5}}"#;
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let changed = rewrite(j, &mut out, |p, t| {
            let v = match t {
                Token::Str(s) => s.to_string(),
                Token::Num(n) => String::from_utf8_lossy(n).into_owned(),
            };
            seen.push((path_string(j, p), v));
            None
        })
        .unwrap();
        assert!(!changed && out.is_empty());
        let expect = [
            ("a", "x"),
            ("b[0]", "1"),
            ("b[1]", "y"),
            ("b[2].c", "z@w"),
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
}
