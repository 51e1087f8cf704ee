//! Field rules: paths with dots and `[*]`, an optional `each` and `when`, applied to a parsed
//! record. Parsing is paid only for records a rule can apply to (see [`Trigger`]).

use regex::Regex;
use serde_json::Value;

use super::action::Action;
use super::tree::{removal, Edit, Kind as TreeKind, Tree};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Any,
    Index(usize),
}

/// Why a field path is refused (`path` as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("empty segment in path {path:?}")]
    EmptySegment { path: String },
    #[error("unclosed `[` in path {path:?}")]
    Unclosed { path: String },
    #[error("`[{index}]` in path {path:?}: use [*] or an index")]
    BadIndex { index: String, path: String },
    #[error("unexpected {rest:?} in path {path:?}")]
    Unexpected { rest: String, path: String },
}

/// Parses `a.b[*].c`, `lines[0].input`, `[*].x`.
pub fn parse_path(s: &str) -> Result<Vec<Seg>, PathError> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Err(PathError::Empty);
    }
    for part in s.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && rest.is_empty() {
            return Err(PathError::EmptySegment {
                path: s.to_string(),
            });
        }
        if !name.is_empty() {
            out.push(Seg::Key(name.to_string()));
        }
        while !rest.is_empty() {
            let end = rest.find(']').ok_or_else(|| PathError::Unclosed {
                path: s.to_string(),
            })?;
            match &rest[1..end] {
                "*" => out.push(Seg::Any),
                n => out.push(Seg::Index(n.parse().map_err(|_| PathError::BadIndex {
                    index: n.to_string(),
                    path: s.to_string(),
                })?)),
            }
            rest = &rest[end + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(PathError::Unexpected {
                    rest: rest.to_string(),
                    path: s.to_string(),
                });
            }
        }
    }
    Ok(out)
}

pub enum Test {
    Equals(Value),
    Exists(bool),
    Matches(Regex),
}

pub struct When {
    pub path: Vec<Seg>,
    pub test: Test,
}

/// A value a path reached: its node, and its place in its parent (for `remove`).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub node: usize,
    pub parent: usize,
    pub index: usize,
}

/// Every value `path` reaches from `node`.
pub fn select(t: &Tree<'_>, node: usize, path: &[Seg], out: &mut Vec<Target>) {
    select_from(t, node, path, None, out)
}

fn select_from(
    t: &Tree<'_>,
    node: usize,
    path: &[Seg],
    at: Option<(usize, usize)>,
    out: &mut Vec<Target>,
) {
    let Some((first, rest)) = path.split_first() else {
        if let Some((parent, index)) = at {
            out.push(Target {
                node,
                parent,
                index,
            });
        }
        return;
    };
    let kind = t.nodes[node].kind;
    for (i, m) in t.children(node).iter().enumerate() {
        let hit = match (first, kind) {
            (Seg::Key(k), TreeKind::Obj) => t.key_is(m, k),
            (Seg::Index(n), TreeKind::Arr) => i == *n,
            (Seg::Any, TreeKind::Obj | TreeKind::Arr) => true,
            _ => false,
        };
        if hit {
            select_from(t, m.node(), rest, Some((node, i)), out);
        }
    }
}

/// Whether any value `path` reaches from `node` passes `f` (stops at the first).
fn any_at(t: &Tree<'_>, node: usize, path: &[Seg], f: &mut dyn FnMut(usize) -> bool) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return f(node);
    };
    let kind = t.nodes[node].kind;
    t.children(node).iter().enumerate().any(|(i, m)| {
        let hit = match (first, kind) {
            (Seg::Key(k), TreeKind::Obj) => t.key_is(m, k),
            (Seg::Index(n), TreeKind::Arr) => i == *n,
            (Seg::Any, TreeKind::Obj | TreeKind::Arr) => true,
            _ => false,
        };
        hit && any_at(t, m.node(), rest, f)
    })
}

impl When {
    pub fn holds(&self, t: &Tree<'_>, node: usize) -> bool {
        match &self.test {
            Test::Exists(e) => any_at(t, node, &self.path, &mut |_| true) == *e,
            Test::Equals(x) => any_at(t, node, &self.path, &mut |n| {
                serde_json::from_slice::<Value>(t.text(n)).is_ok_and(|v| v == *x)
            }),
            Test::Matches(re) => any_at(t, node, &self.path, &mut |n| {
                t.string(n).is_some_and(|s| re.is_match(&s))
            }),
        }
    }
}

/// A cheap test on the raw line that must pass for a rule to possibly apply.
pub enum Trigger {
    Contains(Box<memchr::memmem::Finder<'static>>),
    /// Any of several literals (a rule with several paths).
    AnyOf(Vec<memchr::memmem::Finder<'static>>),
    Regex(regex::bytes::Regex),
}

impl Trigger {
    pub fn holds(&self, line: &[u8]) -> bool {
        match self {
            Trigger::Contains(f) => f.find(line).is_some(),
            Trigger::AnyOf(fs) => fs.iter().any(|f| f.find(line).is_some()),
            Trigger::Regex(r) => r.is_match(line),
        }
    }
}

pub struct PathRule {
    pub label: usize,
    pub each: Option<Vec<Seg>>,
    pub when: Option<When>,
    pub paths: Vec<Vec<Seg>>,
    /// With `pattern`, only the matched parts of string values at `paths` are masked.
    pub pattern: Option<Regex>,
    pub action: Action,
    pub triggers: Vec<Trigger>,
}

impl PathRule {
    /// The edits this rule makes to the record in `t`; adds the values it masks through each
    /// path to `per_path`. Returns the total.
    pub fn edits(
        &self,
        t: &Tree<'_>,
        name: &str,
        per_path: &mut [usize],
        edits: &mut Vec<Edit>,
    ) -> usize {
        if self.paths.is_empty() {
            // A pattern over every string value of the record.
            let mut hits = 0;
            for (node, n) in t.nodes.iter().enumerate() {
                if !matches!(n.kind, TreeKind::Str { .. }) {
                    continue;
                }
                let target = Target {
                    node,
                    parent: 0,
                    index: 0,
                };
                if let Some(e) = self.edit(t, &target, name) {
                    edits.push(e);
                    hits += 1;
                }
            }
            return hits;
        }
        let mut scopes = Vec::new();
        match &self.each {
            Some(each) => select(t, t.root(), each, &mut scopes),
            None => scopes.push(Target {
                node: t.root(),
                parent: usize::MAX,
                index: 0,
            }),
        }
        let mut hits = 0;
        let mut targets = Vec::new();
        let mut removals: Vec<(usize, usize)> = Vec::new();
        for scope in scopes {
            if let Some(w) = &self.when {
                if !w.holds(t, scope.node) {
                    continue;
                }
            }
            for (i, p) in self.paths.iter().enumerate() {
                targets.clear();
                select(t, scope.node, p, &mut targets);
                let mut n = 0;
                for target in &targets {
                    if self.pattern.is_none() && matches!(self.action, Action::Remove) {
                        removals.push((target.parent, target.index));
                        n += 1;
                    } else if let Some(e) = self.edit(t, target, name) {
                        edits.push(e);
                        n += 1;
                    }
                }
                hits += n;
                if let Some(slot) = per_path.get_mut(i) {
                    *slot += n;
                }
            }
        }
        // Removals are cut knowing which siblings go too, so their spans never overlap.
        // A set: a large record can remove many members, and each cut asks about its siblings.
        let removed: std::collections::HashSet<(usize, usize)> = removals.iter().copied().collect();
        for &(parent, index) in &removals {
            let gone = |k: usize| removed.contains(&(parent, k));
            let (start, end) = removal(t, parent, index, &gone);
            edits.push(Edit {
                start,
                end,
                with: Vec::new(),
            });
        }
        hits
    }

    fn edit(&self, t: &Tree<'_>, target: &Target, name: &str) -> Option<Edit> {
        let node = t.nodes[target.node];
        let json = |s: &str| serde_json::to_vec(s).unwrap_or_else(|_| b"\"[REDACTED]\"".to_vec());
        let with = match (&self.pattern, &self.action) {
            (Some(re), action) => {
                let s = t.string(target.node)?;
                if !re.is_match(&s) {
                    return None;
                }
                let out = re.replace_all(&s, |c: &regex::Captures<'_>| {
                    action.replace_text(&c[0], name)
                });
                json(&out)
            }
            // Collected by `edits` and cut together.
            (None, Action::Remove) => return None,
            (None, Action::Replace(v)) => serde_json::to_vec(v).ok()?,
            (None, Action::Redact) => json(&format!("[REDACTED:{name}]")),
            (None, action) => {
                let text = match t.string(target.node) {
                    Some(s) => s.into_owned(),
                    None => String::from_utf8_lossy(t.text(target.node)).into_owned(),
                };
                json(&action.replace_text(&text, name))
            }
        };
        Some(Edit {
            start: node.start(),
            end: node.end(),
            with,
        })
    }
}

/// The triggers of a rule, tests on the raw line that must all pass for the rule to possibly
/// apply: the last key of `each`; one of the paths' last keys (a value at `a.b` has `"b"`
/// written before it); and for a `when` that compares to `true`, `false` or `null`, that key
/// and literal side by side. Records with a backslash skip triggers (an escape could hide a key).
pub fn triggers(each: Option<&[Seg]>, paths: &[Vec<Seg>], when: Option<&When>) -> Vec<Trigger> {
    let last_key = |p: &[Seg]| {
        p.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(format!("\"{k}\"")),
            _ => None,
        })
    };
    let mut out = Vec::new();
    if let Some(k) = each.and_then(last_key) {
        out.push(Trigger::Contains(Box::new(
            memchr::memmem::Finder::new(k.as_bytes()).into_owned(),
        )));
    }
    // A path with no key at all ([*], an index) gives no necessary literal: no trigger then.
    let keys: Option<Vec<String>> = paths.iter().map(|p| last_key(p)).collect();
    if let Some(keys) = keys.filter(|k| !k.is_empty()) {
        out.push(Trigger::AnyOf(
            keys.iter()
                .map(|k| memchr::memmem::Finder::new(k.as_bytes()).into_owned())
                .collect(),
        ));
    }
    if let Some(w) = when {
        if let (Some(Seg::Key(k)), Test::Equals(v @ (Value::Bool(_) | Value::Null))) =
            (w.path.last(), &w.test)
        {
            let pat = format!("\"{}\"\\s*:\\s*{}", regex::escape(k), v);
            if let Ok(r) = regex::bytes::Regex::new(&pat) {
                out.push(Trigger::Regex(r));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("lines[*].input").unwrap(),
            vec![Seg::Key("lines".into()), Seg::Any, Seg::Key("input".into())]
        );
        assert_eq!(
            parse_path("a[2]").unwrap(),
            vec![Seg::Key("a".into()), Seg::Index(2)]
        );
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a[*").is_err());
    }

    fn run(rule: &PathRule, src: &str) -> (String, usize) {
        let t = Tree::parse(src.as_bytes()).unwrap();
        let mut edits = Vec::new();
        let mut per = vec![0; rule.paths.len()];
        let n = rule.edits(&t, "r", &mut per, &mut edits);
        let mut out = Vec::new();
        super::super::tree::apply(src.as_bytes(), &mut edits, &mut out);
        (String::from_utf8(out).unwrap(), n)
    }

    fn rule(each: Option<&str>, when: Option<When>, paths: &[&str], action: Action) -> PathRule {
        PathRule {
            label: 0,
            each: each.map(|e| parse_path(e).unwrap()),
            when,
            paths: paths.iter().map(|p| parse_path(p).unwrap()).collect(),
            pattern: None,
            action,
            triggers: vec![],
        }
    }

    #[test]
    fn each_and_when_mask_only_flagged_steps() {
        let src = r#"{"lines":[{"masked":true,"input":{"card":1},"output":"x"},{"masked":false,"input":"keep","output":"keep"}]}"#;
        let when = When {
            path: parse_path("masked").unwrap(),
            test: Test::Equals(json!(true)),
        };
        let r = rule(
            Some("lines[*]"),
            Some(when),
            &["input", "output"],
            Action::Replace(json!({"data": "masked"})),
        );
        let (out, n) = run(&r, src);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            r#"{"lines":[{"masked":true,"input":{"data":"masked"},"output":{"data":"masked"}},{"masked":false,"input":"keep","output":"keep"}]}"#
        );
    }

    #[test]
    fn remove_keeps_key_order_of_the_rest() {
        let r = rule(None, None, &["b", "z"], Action::Remove);
        assert_eq!(
            run(&r, r#"{"a":1,"b":2,"c":3}"#),
            (r#"{"a":1,"c":3}"#.to_string(), 1)
        );
        let r = rule(None, None, &["a[*]"], Action::Remove);
        assert_eq!(run(&r, r#"{"a":[1,2,3],"k":0}"#).0, r#"{"a":[],"k":0}"#);
    }

    #[test]
    fn when_exists_and_matches_and_nested_paths() {
        let w = When {
            path: parse_path("kind").unwrap(),
            test: Test::Matches(Regex::new("^pay").unwrap()),
        };
        let r = rule(None, Some(w), &["card.number"], Action::Redact);
        assert_eq!(
            run(&r, r#"{"kind":"payment","card":{"number":"x"}}"#).0,
            r#"{"kind":"payment","card":{"number":"[REDACTED:r]"}}"#
        );
        assert_eq!(run(&r, r#"{"kind":"refund","card":{"number":"x"}}"#).1, 0);
        let w = When {
            path: parse_path("flag").unwrap(),
            test: Test::Exists(false),
        };
        let r = rule(None, Some(w), &["v"], Action::Redact);
        assert_eq!(run(&r, r#"{"v":1}"#).1, 1);
        assert_eq!(run(&r, r#"{"v":1,"flag":0}"#).1, 0);
    }
}
