//! What a rule or detector does to what it matched.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub enum Action {
    /// `[REDACTED:<label>]`.
    Redact,
    /// A fixed JSON value (a string when it replaces part of a string).
    Replace(serde_json::Value),
    /// The field goes (a matched part of a string is deleted).
    Remove,
    /// Keeps the first and last characters, masks the rest.
    Partial { first: usize, last: usize, ch: char },
    /// HMAC-SHA256 with a secret key: a stable pseudonym, so records still join.
    Hmac { key: Arc<Vec<u8>>, base64: bool },
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Redact => f.write_str("redact"),
            Action::Replace(v) => write!(f, "replace({v})"),
            Action::Remove => f.write_str("remove"),
            Action::Partial { first, last, ch } => write!(f, "partial({first},{last},{ch:?})"),
            // Never the key.
            Action::Hmac { base64, .. } => {
                write!(f, "hmac({})", if *base64 { "base64" } else { "hex" })
            }
        }
    }
}

impl Action {
    /// The text that stands in for `matched` inside a string. `label` names the detector or rule.
    pub fn replace_text(&self, matched: &str, label: &str) -> String {
        match self {
            Action::Redact => format!("[REDACTED:{label}]"),
            Action::Replace(serde_json::Value::String(s)) => s.clone(),
            Action::Replace(v) => v.to_string(),
            Action::Remove => String::new(),
            Action::Partial { first, last, ch } => partial(matched, *first, *last, *ch),
            Action::Hmac { key, base64 } => {
                hmac(key, normalise(matched, label).as_bytes(), *base64)
            }
        }
    }

    /// The value that stands in for a whole JSON value; `None` removes it.
    pub fn replace_value(&self, v: &serde_json::Value, label: &str) -> Option<serde_json::Value> {
        match self {
            Action::Remove => None,
            Action::Replace(r) => Some(r.clone()),
            Action::Redact => Some(serde_json::Value::String(format!("[REDACTED:{label}]"))),
            _ => {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some(serde_json::Value::String(self.replace_text(&text, label)))
            }
        }
    }
}

/// Cards are pseudonymised on their digits, so `4111 1111 ...` and `4111-1111-...` join.
fn normalise(matched: &str, label: &str) -> String {
    if label == "credit_card" {
        matched.chars().filter(char::is_ascii_digit).collect()
    } else {
        matched.to_string()
    }
}

pub fn hmac(key: &[u8], data: &[u8], b64: bool) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; this branch cannot be reached.
        return "[REDACTED:hmac]".to_string();
    };
    mac.update(data);
    let out = mac.finalize().into_bytes();
    if b64 {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
    } else {
        hex::encode(out)
    }
}

/// Keeps `first` and `last` characters; separators (space, dash) between them are kept too, so
/// `4111 1111 1111 1111` becomes `4111 11** **** 1111`. Too short a value is masked whole.
fn partial(s: &str, first: usize, last: usize, ch: char) -> String {
    let significant: Vec<usize> = s
        .char_indices()
        .filter(|(_, c)| *c != ' ' && *c != '-')
        .map(|(i, _)| i)
        .collect();
    let n = significant.len();
    if n <= first + last {
        return s
            .chars()
            .map(|c| if c == ' ' || c == '-' { c } else { ch })
            .collect();
    }
    let mut out = String::with_capacity(s.len());
    let mut k = 0;
    for (i, c) in s.char_indices() {
        if c == ' ' || c == '-' {
            out.push(c);
            continue;
        }
        let _ = i;
        out.push(if k < first || k >= n - last { c } else { ch });
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keeps_bin_and_last_four() {
        let a = Action::Partial {
            first: 6,
            last: 4,
            ch: '*',
        };
        assert_eq!(
            a.replace_text("4111111111111111", "credit_card"),
            "411111******1111"
        );
        assert_eq!(
            a.replace_text("4111 1111 1111 1111", "credit_card"),
            "4111 11** **** 1111"
        );
        assert_eq!(a.replace_text("12345", "x"), "*****");
    }

    #[test]
    fn hmac_is_stable_and_keyed() {
        let k = Arc::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let a = Action::Hmac {
            key: k.clone(),
            base64: false,
        };
        let x = a.replace_text("alice@example.com", "email");
        assert_eq!(x, a.replace_text("alice@example.com", "email"));
        assert_eq!(x.len(), 64);
        let other = Action::Hmac {
            key: Arc::new(b"another key of at least 16".to_vec()),
            base64: false,
        };
        assert_ne!(x, other.replace_text("alice@example.com", "email"));
        // Card pseudonyms ignore formatting.
        assert_eq!(
            a.replace_text("4111 1111 1111 1111", "credit_card"),
            a.replace_text("4111111111111111", "credit_card")
        );
        assert_eq!(format!("{a:?}"), "hmac(hex)");
    }
}
