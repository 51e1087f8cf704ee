//! Field rules: paths with dots and `[*]`, an optional `each` and `when`, applied to a parsed
//! record. Parsing is paid only for records a rule can apply to (see [`Trigger`]).

use regex::Regex;
use serde_json::Value;

use super::action::Action;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Any,
    Index(usize),
}

/// Parses `a.b[*].c`, `lines[0].input`, `[*].x`.
pub fn parse_path(s: &str) -> Result<Vec<Seg>, String> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Err("empty path".into());
    }
    for part in s.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && rest.is_empty() {
            return Err(format!("empty segment in path {s:?}"));
        }
        if !name.is_empty() {
            out.push(Seg::Key(name.to_string()));
        }
        while !rest.is_empty() {
            let end = rest
                .find(']')
                .ok_or_else(|| format!("unclosed `[` in path {s:?}"))?;
            match &rest[1..end] {
                "*" => out.push(Seg::Any),
                n => out
                    .push(Seg::Index(n.parse().map_err(|_| {
                        format!("`[{n}]` in path {s:?}: use [*] or an index")
                    })?)),
            }
            rest = &rest[end + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("unexpected {rest:?} in path {s:?}"));
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

impl When {
    pub fn holds(&self, v: &Value) -> bool {
        let mut found = Vec::new();
        collect(v, &self.path, &mut found);
        match &self.test {
            Test::Exists(e) => found.is_empty() != *e,
            Test::Equals(x) => found.contains(&x),
            Test::Matches(re) => found
                .iter()
                .any(|f| f.as_str().is_some_and(|s| re.is_match(s))),
        }
    }
}

fn collect<'a>(v: &'a Value, path: &[Seg], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(x) = m.get(k) {
                collect(x, rest, out);
            }
        }
        (Seg::Index(i), Value::Array(a)) => {
            if let Some(x) = a.get(*i) {
                collect(x, rest, out);
            }
        }
        (Seg::Any, Value::Array(a)) => a.iter().for_each(|x| collect(x, rest, out)),
        (Seg::Any, Value::Object(m)) => m.values().for_each(|x| collect(x, rest, out)),
        _ => {}
    }
}

/// Calls `f` on every value `path` reaches.
pub fn each_mut(v: &mut Value, path: &[Seg], f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = path.split_first() else {
        f(v);
        return;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(x) = m.get_mut(k) {
                each_mut(x, rest, f);
            }
        }
        (Seg::Index(i), Value::Array(a)) => {
            if let Some(x) = a.get_mut(*i) {
                each_mut(x, rest, f);
            }
        }
        (Seg::Any, Value::Array(a)) => a.iter_mut().for_each(|x| each_mut(x, rest, f)),
        (Seg::Any, Value::Object(m)) => m.values_mut().for_each(|x| each_mut(x, rest, f)),
        _ => {}
    }
}

/// Replaces (or removes, when `f` says `None`) every value `path` reaches. Returns how many.
pub fn replace_at(
    v: &mut Value,
    path: &[Seg],
    f: &mut dyn FnMut(&Value) -> Option<Value>,
) -> usize {
    let Some((last, parents)) = path.split_last() else {
        return 0;
    };
    let mut n = 0;
    each_mut(v, parents, &mut |p| match (last, p) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(x) = m.get(k) {
                n += 1;
                match f(x) {
                    Some(new) => {
                        m.insert(k.clone(), new);
                    }
                    None => {
                        m.shift_remove(k);
                    }
                }
            }
        }
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
            n += 1;
            match f(&a[*i]) {
                Some(new) => a[*i] = new,
                None => {
                    a.remove(*i);
                }
            }
        }
        (Seg::Any, Value::Array(a)) => {
            let old = std::mem::take(a);
            for x in old {
                n += 1;
                if let Some(new) = f(&x) {
                    a.push(new);
                }
            }
        }
        (Seg::Any, Value::Object(m)) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if let Some(x) = m.get(&k) {
                    n += 1;
                    match f(x) {
                        Some(new) => {
                            m.insert(k, new);
                        }
                        None => {
                            m.shift_remove(&k);
                        }
                    }
                }
            }
        }
        _ => {}
    });
    n
}

/// A cheap test on the raw line that must pass for a rule to possibly apply.
pub enum Trigger {
    Contains(Box<memchr::memmem::Finder<'static>>),
    Regex(Regex),
}

impl Trigger {
    pub fn holds(&self, line: &[u8]) -> bool {
        match self {
            Trigger::Contains(f) => f.find(line).is_some(),
            Trigger::Regex(r) => std::str::from_utf8(line).map_or(true, |s| r.is_match(s)),
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
    /// Applies the rule; adds the values masked through each path to `per_path`. Returns the
    /// total.
    pub fn apply(&self, root: &mut Value, name: &str, per_path: &mut [usize]) -> usize {
        let mut hits = 0;
        let mut on = |target: &mut Value| {
            if let Some(w) = &self.when {
                if !w.holds(target) {
                    return;
                }
            }
            for (i, p) in self.paths.iter().enumerate() {
                let n = match &self.pattern {
                    None => replace_at(target, p, &mut |v| self.action.replace_value(v, name)),
                    Some(re) => {
                        let mut n = 0;
                        replace_at(target, p, &mut |v| match v {
                            Value::String(s) if re.is_match(s) => {
                                n += 1;
                                let out = re.replace_all(s, |c: &regex::Captures<'_>| {
                                    self.action.replace_text(&c[0], name)
                                });
                                Some(Value::String(out.into_owned()))
                            }
                            other => Some(other.clone()),
                        });
                        n
                    }
                };
                hits += n;
                if let Some(slot) = per_path.get_mut(i) {
                    *slot += n;
                }
            }
        };
        match &self.each {
            Some(each) => each_mut(root, each, &mut on),
            None => on(root),
        }
        hits
    }
}

/// The triggers of a rule: the first key of `each` (or of every path), and for a `when` that
/// compares to `true`, `false` or `null`, the key and that literal next to each other.
pub fn triggers(each: Option<&[Seg]>, paths: &[Vec<Seg>], when: Option<&When>) -> Vec<Trigger> {
    let quoted = |k: &str| {
        Trigger::Contains(Box::new(
            memchr::memmem::Finder::new(format!("\"{k}\"").as_bytes()).into_owned(),
        ))
    };
    let mut out = Vec::new();
    match each.and_then(|e| e.first()) {
        Some(Seg::Key(k)) => out.push(quoted(k)),
        Some(_) => {}
        None => {
            // Any path's first key will do; with more than one, test none (a Value parse).
            if let [p] = paths {
                if let Some(Seg::Key(k)) = p.first() {
                    out.push(quoted(k));
                }
            }
        }
    }
    if let Some(w) = when {
        if let (Some(Seg::Key(k)), Test::Equals(v @ (Value::Bool(_) | Value::Null))) =
            (w.path.last(), &w.test)
        {
            let pat = format!("\"{}\"\\s*:\\s*{}", regex::escape(k), v);
            if let Ok(r) = Regex::new(&pat) {
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

    #[test]
    fn each_and_when_mask_only_flagged_steps() {
        let mut v = json!({"lines": [
            {"masked": true, "input": {"card": 1}, "output": "x"},
            {"masked": false, "input": "keep", "output": "keep"}
        ]});
        let rule = PathRule {
            label: 0,
            each: Some(parse_path("lines[*]").unwrap()),
            when: Some(When {
                path: parse_path("masked").unwrap(),
                test: Test::Equals(json!(true)),
            }),
            paths: vec![parse_path("input").unwrap(), parse_path("output").unwrap()],
            pattern: None,
            action: Action::Replace(json!({"data": "masked"})),
            triggers: vec![],
        };
        let mut per = [0, 0];
        assert_eq!(rule.apply(&mut v, "step", &mut per), 2);
        assert_eq!(per, [1, 1]);
        assert_eq!(v["lines"][0]["input"], json!({"data": "masked"}));
        assert_eq!(v["lines"][0]["output"], json!({"data": "masked"}));
        assert_eq!(v["lines"][1]["input"], "keep");
    }

    #[test]
    fn remove_keeps_key_order_of_the_rest() {
        let mut v = json!({"a": 1, "b": 2, "c": 3});
        replace_at(&mut v, &parse_path("b").unwrap(), &mut |_| None);
        assert_eq!(v.to_string(), r#"{"a":1,"c":3}"#);
    }
}
