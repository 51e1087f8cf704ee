//! A JSON record over `max_record_bytes`: never shipped as raw text, never held whole.
//!
//! While the line streams past, its bytes are hashed and a small scanner keeps the top-level
//! scalar members (`"account_id": 42`, `"ts": "..."`), which keys, partitions and timestamps
//! need. At the line's end it becomes a stand-in record that goes through masking like any other:
//! `{"_logferry_oversize":{"bytes":N,"sha256":"..."},"message":"[REDACTED:oversize]",<members>}`.
//! Memory is bounded by [`MAX_KEPT`], whatever the line's length.

use sha2::{Digest, Sha256};

/// The most bytes of top-level members kept for the stand-in record.
pub const MAX_KEPT: usize = 64 * 1024;
/// A member whose key or value is longer than this is left out (it is not a key field).
const MAX_MEMBER: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// Before the opening `{`.
    Start,
    /// Inside the top-level object, before a key (or `}`).
    Key,
    InKey,
    Colon,
    Value,
    InStr,
    /// A number, `true`, `false` or `null`.
    InScalar,
    /// Inside a nested object or array: skipped, brackets counted outside strings.
    Nested,
    /// After a value, before `,` or `}`.
    After,
    /// The end of the object, or not an object at all: nothing more is kept.
    Done,
}

/// Digest and top-level scalar members of a record seen in pieces.
pub struct Streamed {
    hasher: Sha256,
    bytes: u64,
    st: St,
    escape: bool,
    nested_in_str: bool,
    depth: usize,
    /// The member being read: `"key":value` as written.
    cur: Vec<u8>,
    cur_too_long: bool,
    /// Whole members kept so far, each followed by a comma.
    kept: Vec<u8>,
}

impl Default for Streamed {
    fn default() -> Self {
        Streamed {
            hasher: Sha256::new(),
            bytes: 0,
            st: St::Start,
            escape: false,
            nested_in_str: false,
            depth: 0,
            cur: Vec::new(),
            cur_too_long: false,
            kept: Vec::new(),
        }
    }
}

impl Streamed {
    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn feed(&mut self, piece: &[u8]) {
        self.hasher.update(piece);
        self.bytes += piece.len() as u64;
        let mut i = 0;
        while i < piece.len() {
            let c = piece[i];
            match self.st {
                St::Done => return,
                St::Start => match c {
                    b'{' => self.st = St::Key,
                    b' ' | b'\t' | b'\r' => {}
                    // A byte-order mark or anything else: not an object we can read members of.
                    _ => self.st = St::Done,
                },
                St::Key => match c {
                    b'"' => {
                        self.cur.clear();
                        self.cur_too_long = false;
                        self.push(c);
                        self.st = St::InKey;
                    }
                    b'}' => self.st = St::Done,
                    _ => {}
                },
                St::InKey => {
                    self.push(c);
                    if closes(&mut self.escape, c) {
                        self.st = St::Colon;
                    }
                }
                St::Colon => {
                    if c == b':' {
                        self.push(c);
                        self.st = St::Value;
                    }
                }
                St::Value => match c {
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    b'"' => {
                        self.push(c);
                        self.st = St::InStr;
                    }
                    b'{' | b'[' => {
                        self.depth = 1;
                        self.nested_in_str = false;
                        self.st = St::Nested;
                    }
                    _ => {
                        self.push(c);
                        self.st = St::InScalar;
                    }
                },
                St::InStr => {
                    self.push(c);
                    if closes(&mut self.escape, c) {
                        self.keep();
                        self.st = St::After;
                    }
                }
                St::InScalar => match c {
                    b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n' => {
                        self.keep();
                        self.st = St::After;
                        continue; // the delimiter is read in `After`
                    }
                    _ => self.push(c),
                },
                St::Nested => {
                    if self.nested_in_str {
                        self.nested_in_str = !closes(&mut self.escape, c);
                    } else {
                        match c {
                            b'"' => self.nested_in_str = true,
                            b'{' | b'[' => self.depth += 1,
                            b'}' | b']' => {
                                self.depth -= 1;
                                if self.depth == 0 {
                                    self.st = St::After;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                St::After => match c {
                    b',' => self.st = St::Key,
                    b'}' => self.st = St::Done,
                    _ => {}
                },
            }
            i += 1;
        }
    }

    fn push(&mut self, c: u8) {
        if self.cur.len() < MAX_MEMBER {
            self.cur.push(c);
        } else {
            self.cur_too_long = true;
        }
    }

    fn keep(&mut self) {
        if !self.cur_too_long && self.kept.len() + self.cur.len() < MAX_KEPT {
            self.kept.extend_from_slice(&self.cur);
            self.kept.push(b',');
        }
        self.cur.clear();
    }

    /// The stand-in record, with the kept members as written (masked next like any record's).
    pub fn finish(self, out: &mut Vec<u8>) {
        let digest = self.hasher.finalize();
        out.clear();
        out.extend_from_slice(b"{\"_logferry_oversize\":{\"bytes\":");
        out.extend_from_slice(self.bytes.to_string().as_bytes());
        out.extend_from_slice(b",\"sha256\":\"");
        out.extend_from_slice(hex::encode(digest).as_bytes());
        out.extend_from_slice(b"\"},\"message\":\"[REDACTED:oversize]\"");
        // Only members that are whole, valid JSON on their own are kept: the stand-in must
        // parse, whatever the original held.
        let mut rest = &self.kept[..];
        while !rest.is_empty() {
            let end = member_end(rest);
            let m = &rest[..end];
            if valid_member(m) {
                out.push(b',');
                out.extend_from_slice(m);
            }
            rest = &rest[(end + 1).min(rest.len())..];
        }
        out.push(b'}');
    }
}

/// Inside a string: whether `c` is its closing quote (`escape` carries a backslash over).
fn closes(escape: &mut bool, c: u8) -> bool {
    if *escape {
        *escape = false;
        false
    } else if c == b'\\' {
        *escape = true;
        false
    } else {
        c == b'"'
    }
}

/// Where the member at the start of `kept` ends (its comma), skipping commas inside its strings.
fn member_end(kept: &[u8]) -> usize {
    let (mut in_str, mut esc) = (false, false);
    for (i, &c) in kept.iter().enumerate() {
        if in_str {
            in_str = !closes(&mut esc, c);
        } else if c == b'"' {
            in_str = true;
        } else if c == b',' {
            return i;
        }
    }
    kept.len()
}

fn valid_member(m: &[u8]) -> bool {
    let mut obj = Vec::with_capacity(m.len() + 2);
    obj.push(b'{');
    obj.extend_from_slice(m);
    obj.push(b'}');
    serde_json::from_slice::<serde::de::IgnoredAny>(&obj).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standin(line: &[u8], piece: usize) -> serde_json::Value {
        let mut s = Streamed::default();
        for p in line.chunks(piece) {
            s.feed(p);
        }
        let mut out = Vec::new();
        s.finish(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn keeps_top_level_scalars_and_hashes_every_byte() {
        let line = br#"{"ts":"2026-11-23 10:00:00 UTC","account_id":42,"lines":[{"input":{"password":"p,w\"}"}}],"ok":true,"job":"j-1","n":null}"#;
        for piece in [1, 3, 7, 1000] {
            let v = standin(line, piece);
            assert_eq!(v["message"], "[REDACTED:oversize]");
            assert_eq!(v["_logferry_oversize"]["bytes"], line.len());
            assert_eq!(
                v["_logferry_oversize"]["sha256"],
                hex::encode(Sha256::digest(line))
            );
            assert_eq!(v["ts"], "2026-11-23 10:00:00 UTC");
            assert_eq!(v["account_id"], 42);
            assert_eq!(v["ok"], true);
            assert_eq!(v["job"], "j-1");
            assert!(v.get("lines").is_none());
            assert!(!v.to_string().contains("p,w"), "{v}");
        }
    }

    #[test]
    fn not_an_object_or_cut_members_leave_only_the_stub() {
        let v = standin(b"[1,2,3]", 2);
        assert_eq!(v.as_object().unwrap().len(), 2);
        let v = standin(br#"{"a":"unterminated"#, 4);
        assert!(v.get("a").is_none());
        let long = format!(r#"{{"big":"{}","k":1}}"#, "x".repeat(MAX_MEMBER * 2));
        let v = standin(long.as_bytes(), 512);
        assert!(v.get("big").is_none());
        assert_eq!(v["k"], 1);
    }
}
