//! A span tree of a JSON text: where every value starts and ends, and the keys of objects,
//! without copying or allocating a string. Field rules find their targets in it and edit the
//! original bytes, so a rule costs about what a scan costs, not a `serde_json::Value` round trip.

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Obj,
    Arr,
    Str { escaped: bool },
    Other,
}

/// Offsets are `u32`: records are at most `max_record_bytes` (1 GiB), and a tree of a 40 MB
/// record has millions of nodes, so their size is the masker's memory.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    start: u32,
    end: u32,
    pub kind: Kind,
    /// Children: `members[first..first + len]`.
    first: u32,
    len: u32,
}

impl Node {
    pub fn start(&self) -> usize {
        self.start as usize
    }
    pub fn end(&self) -> usize {
        self.end as usize
    }
}

/// An object member or array element.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Key content (between the quotes) for object members; `NO_KEY` for array elements.
    key: (u32, u32),
    /// Where the member starts: its key's opening quote, or the element's first byte.
    start: u32,
    node: u32,
}

const NO_KEY: (u32, u32) = (u32::MAX, u32::MAX);

impl Member {
    pub fn key(&self) -> Option<(usize, usize)> {
        (self.key != NO_KEY).then_some((self.key.0 as usize, self.key.1 as usize))
    }
    pub fn start(&self) -> usize {
        self.start as usize
    }
    pub fn node(&self) -> usize {
        self.node as usize
    }
}

pub struct Tree<'a> {
    pub src: &'a [u8],
    pub nodes: Vec<Node>,
    members: Vec<Member>,
    stack: Vec<Member>,
}

const MAX_DEPTH: usize = 256;

impl<'a> Tree<'a> {
    pub fn parse(src: &'a [u8]) -> Result<Tree<'a>, &'static str> {
        if src.len() >= u32::MAX as usize {
            return Err("record too large for the masker");
        }
        let mut t = Tree {
            src,
            nodes: Vec::with_capacity(64),
            members: Vec::with_capacity(64),
            stack: Vec::with_capacity(64),
        };
        let i = t.ws(0);
        let (_, end) = t.value(i, 0)?;
        if t.ws(end) != src.len() {
            return Err("trailing characters");
        }
        Ok(t)
    }

    pub fn root(&self) -> usize {
        // Nodes are pushed when they end; the root ends last.
        self.nodes.len() - 1
    }

    pub fn children(&self, node: usize) -> &[Member] {
        let n = &self.nodes[node];
        &self.members[n.first as usize..(n.first + n.len) as usize]
    }

    pub fn text(&self, node: usize) -> &'a [u8] {
        let n = &self.nodes[node];
        &self.src[n.start()..n.end()]
    }

    /// The decoded text of a string node.
    pub fn string(&self, node: usize) -> Option<std::borrow::Cow<'a, str>> {
        let n = self.nodes[node];
        match n.kind {
            Kind::Str { escaped: false } => {
                std::str::from_utf8(&self.src[n.start() + 1..n.end() - 1])
                    .ok()
                    .map(std::borrow::Cow::Borrowed)
            }
            Kind::Str { escaped: true } => {
                let raw = std::str::from_utf8(&self.src[n.start() + 1..n.end() - 1]).ok()?;
                let mut s = String::new();
                super::scan::unescape(raw, &mut s);
                Some(std::borrow::Cow::Owned(s))
            }
            _ => None,
        }
    }

    pub fn key_is(&self, m: &Member, key: &str) -> bool {
        let Some((a, b)) = m.key() else { return false };
        let raw = &self.src[a..b];
        if memchr::memchr(b'\\', raw).is_none() {
            return raw == key.as_bytes();
        }
        let mut k = String::new();
        std::str::from_utf8(raw).is_ok_and(|raw| {
            super::scan::unescape(raw, &mut k);
            k == key
        })
    }

    fn ws(&self, mut i: usize) -> usize {
        while i < self.src.len() && matches!(self.src[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }

    fn string_end(&self, i: usize) -> Result<(usize, bool), &'static str> {
        let mut j = i + 1;
        let mut escaped = false;
        loop {
            let k =
                super::scan::quote_or_backslash(self.src.get(j..).ok_or("unterminated string")?)
                    .ok_or("unterminated string")?;
            j += k;
            if self.src[j] == b'\\' {
                escaped = true;
                j += 2;
            } else {
                return Ok((j + 1, escaped));
            }
        }
    }

    /// Parses the value at `i`; returns its node index and the offset after it.
    fn value(&mut self, i: usize, depth: usize) -> Result<(usize, usize), &'static str> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply");
        }
        let c = *self.src.get(i).ok_or("unexpected end")?;
        let (kind, end, first, len) = match c {
            b'{' | b'[' => {
                let obj = c == b'{';
                let close = if obj { b'}' } else { b']' };
                let base = self.stack.len();
                let mut j = self.ws(i + 1);
                if self.src.get(j) == Some(&close) {
                    j += 1;
                } else {
                    loop {
                        let start = j;
                        let key = if obj {
                            if self.src.get(j) != Some(&b'"') {
                                return Err("expected a key");
                            }
                            let (kend, _) = self.string_end(j)?;
                            j = self.ws(kend);
                            if self.src.get(j) != Some(&b':') {
                                return Err("expected a colon");
                            }
                            j = self.ws(j + 1);
                            ((start + 1) as u32, (kend - 1) as u32)
                        } else {
                            NO_KEY
                        };
                        let (node, after) = self.value(j, depth + 1)?;
                        self.stack.push(Member {
                            key,
                            start: start as u32,
                            node: node as u32,
                        });
                        j = self.ws(after);
                        match self.src.get(j) {
                            Some(b',') => j = self.ws(j + 1),
                            Some(x) if *x == close => {
                                j += 1;
                                break;
                            }
                            _ => return Err("expected a comma or a closing bracket"),
                        }
                    }
                }
                let first = self.members.len();
                let len = self.stack.len() - base;
                self.members.extend(self.stack.drain(base..));
                (if obj { Kind::Obj } else { Kind::Arr }, j, first, len)
            }
            b'"' => {
                let (end, escaped) = self.string_end(i)?;
                (Kind::Str { escaped }, end, 0, 0)
            }
            _ => {
                let mut j = i;
                while j < self.src.len()
                    && !matches!(
                        self.src[j],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    j += 1;
                }
                if j == i {
                    return Err("expected a value");
                }
                (Kind::Other, j, 0, 0)
            }
        };
        self.nodes.push(Node {
            start: i as u32,
            end: end as u32,
            kind,
            first: first as u32,
            len: len as u32,
        });
        Ok((self.nodes.len() - 1, end))
    }
}

/// A change to the text: bytes `start..end` become `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub with: Vec<u8>,
}

/// Applies edits to `src` into `out`. Edits inside another edit are dropped (the outer one
/// already replaced them).
pub fn apply(src: &[u8], edits: &mut [Edit], out: &mut Vec<u8>) {
    edits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    out.clear();
    let mut pos = 0;
    for e in edits.iter() {
        if e.start < pos {
            continue;
        }
        out.extend_from_slice(&src[pos..e.start]);
        out.extend_from_slice(&e.with);
        pos = e.end;
    }
    out.extend_from_slice(&src[pos..]);
}

/// The span that removes member `i` of a container with the comma that goes with it, given
/// which of its siblings go too: a member takes its following comma; the last takes the comma
/// after the last sibling that stays (the spans of siblings removed in between fall inside it).
pub fn removal(
    t: &Tree<'_>,
    parent: usize,
    i: usize,
    removed: &dyn Fn(usize) -> bool,
) -> (usize, usize) {
    let ms = t.children(parent);
    let end_of = |k: usize| t.nodes[ms[k].node()].end();
    if i + 1 < ms.len() {
        return (ms[i].start(), ms[i + 1].start());
    }
    match (0..i).rev().find(|k| !removed(*k)) {
        Some(kept) => (end_of(kept), end_of(i)),
        None => (ms[i].start(), end_of(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_keys() {
        let src = br#" {"a": [1, {"b\u0041":"x\"y"}], "c":null} "#;
        let t = Tree::parse(src).unwrap();
        let root = t.root();
        let ms = t.children(root).to_vec();
        assert_eq!(ms.len(), 2);
        assert!(t.key_is(&ms[0], "a"));
        assert_eq!(t.text(ms[1].node()), b"null");
        let arr = t.children(ms[0].node()).to_vec();
        let inner = t.children(arr[1].node()).to_vec();
        assert!(t.key_is(&inner[0], "bA"));
        assert_eq!(t.string(inner[0].node()).unwrap(), "x\"y");
    }

    #[test]
    fn removing_first_middle_last_and_only_members() {
        let src = br#"{"a":1,"b":2,"c":3}"#;
        let t = Tree::parse(src).unwrap();
        let r = t.root();
        for (i, want) in [
            (0, r#"{"b":2,"c":3}"#),
            (1, r#"{"a":1,"c":3}"#),
            (2, r#"{"a":1,"b":2}"#),
        ] {
            let (s, e) = removal(&t, r, i, &|k| k == i);
            let mut out = Vec::new();
            apply(
                src,
                &mut [Edit {
                    start: s,
                    end: e,
                    with: vec![],
                }],
                &mut out,
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        let src = br#"{"only":[1]}"#;
        let t = Tree::parse(src).unwrap();
        let (s, e) = removal(&t, t.root(), 0, &|k| k == 0);
        let mut out = Vec::new();
        apply(
            src,
            &mut [Edit {
                start: s,
                end: e,
                with: vec![],
            }],
            &mut out,
        );
        assert_eq!(out, b"{}");
    }

    #[test]
    fn rejects_what_is_not_json() {
        assert!(Tree::parse(b"{\"a\":}").is_err());
        assert!(Tree::parse(b"{\"a\":1").is_err());
        assert!(Tree::parse(b"{\"a\":1} x").is_err());
    }
}
