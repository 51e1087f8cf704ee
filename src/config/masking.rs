//! Checks and compiles `[masking.<name>]` profiles. Anything a profile cannot do is an error
//! here (fail closed): a bad regex, an unknown detector, a missing HMAC key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;

use super::{closest, typed, Collector};
use crate::mask::detect::{self, Kind};
use crate::mask::rules::{self, PathRule, Test, When};
use crate::mask::{Action, Profile};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    detectors: Vec<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    detector: BTreeMap<String, RawAction>,
    unparsable: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    each: Option<String>,
    when: Option<RawWhen>,
    pattern: Option<String>,
    action: Option<String>,
    value: Option<toml::Value>,
    keep_first: Option<usize>,
    keep_last: Option<usize>,
    mask_char: Option<char>,
    key_env: Option<String>,
    key_file: Option<String>,
    encoding: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAction {
    action: Option<String>,
    value: Option<toml::Value>,
    keep_first: Option<usize>,
    keep_last: Option<usize>,
    mask_char: Option<char>,
    key_env: Option<String>,
    key_file: Option<String>,
    encoding: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    path: String,
    equals: Option<toml::Value>,
    exists: Option<bool>,
    matches: Option<String>,
}

/// Where `${VAR}` and `key_env` values come from.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

const ACTIONS: &[&str] = &["redact", "replace", "remove", "partial", "hmac"];
/// The shortest HMAC key accepted: a short key makes pseudonyms guessable.
const MIN_KEY_BYTES: usize = 16;

pub(super) fn build(
    name: &str,
    table: toml::Table,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector,
) -> Option<Profile> {
    let p = format!("masking.{name}");
    let before = c.list.len();
    let raw: RawProfile = typed(table, &p, &[], c)?;
    let mut labels = Vec::new();
    let mut path_rules = Vec::new();
    let mut pattern_rules = Vec::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        let rp = format!("{p}.rules[{i}]");
        let label = labels.len();
        labels.push(r.name.clone().unwrap_or_else(|| format!("rule{}", i + 1)));
        let act = RawAction {
            action: r.action,
            value: r.value,
            keep_first: r.keep_first,
            keep_last: r.keep_last,
            mask_char: r.mask_char,
            key_env: r.key_env,
            key_file: r.key_file,
            encoding: r.encoding,
        };
        let pattern = r.pattern.as_deref().and_then(|pat| match Regex::new(pat) {
            Ok(re) => Some(re),
            Err(e) => {
                c.add(format!("{rp}.pattern"), format!("invalid regex: {e}"));
                None
            }
        });
        let action = action(
            &rp,
            act,
            false,
            pattern.is_some() && r.paths.is_empty(),
            (base, env),
            c,
        );
        if r.paths.is_empty() && r.pattern.is_none() {
            c.add(&rp, "a rule needs `paths`, a `pattern`, or both");
            continue;
        }
        let mut paths = Vec::new();
        for (j, s) in r.paths.iter().enumerate() {
            match rules::parse_path(s) {
                Ok(v) => paths.push(v),
                Err(e) => c.add(format!("{rp}.paths[{j}]"), e),
            }
        }
        let each = r.each.as_deref().and_then(|s| match rules::parse_path(s) {
            Ok(v) => Some(v),
            Err(e) => {
                c.add(format!("{rp}.each"), e);
                None
            }
        });
        let when = r.when.and_then(|w| when(&rp, w, c));
        let Some(action) = action else { continue };
        if r.paths.is_empty() {
            if each.is_some() || when.is_some() {
                c.add(&rp, "`each` and `when` need `paths` to apply to");
            }
            if let Some(re) = pattern {
                // A rule over every string value: it runs with the field rules (on the parsed
                // record) while a field rule comes after it, so that rules keep their order.
                path_rules.push(PathRule {
                    label,
                    each: None,
                    when: None,
                    paths: Vec::new(),
                    pattern: Some(re),
                    action,
                    triggers: Vec::new(),
                });
            }
            continue;
        }
        let triggers = rules::triggers(each.as_deref(), &paths, when.as_ref());
        path_rules.push(PathRule {
            label,
            each,
            when,
            paths,
            pattern,
            action,
            triggers,
        });
    }
    let mut detectors: Vec<Option<(Action, usize)>> = vec![None; Kind::ALL.len()];
    let mut names = Vec::new();
    let mut kinds = Vec::new();
    for (i, d) in raw.detectors.iter().enumerate() {
        let Some(kind) = Kind::parse(d) else {
            let all = Kind::ALL.map(Kind::name);
            let hint = match closest(d, all) {
                Some(k) => format!("; did you mean `{k}`?"),
                None => format!("; known: {}", all.join(", ")),
            };
            c.add(
                format!("{p}.detectors[{i}]"),
                format!("unknown detector `{d}`{hint}"),
            );
            continue;
        };
        let over = raw.detector.get(d);
        let act = over.map(|o| RawAction {
            action: o.action.clone(),
            value: o.value.clone(),
            keep_first: o.keep_first,
            keep_last: o.keep_last,
            mask_char: o.mask_char,
            key_env: o.key_env.clone(),
            key_file: o.key_file.clone(),
            encoding: o.encoding.clone(),
        });
        let dp = format!("{p}.detector.{d}");
        let Some(action) = action(
            &dp,
            act.unwrap_or_default(),
            kind == Kind::CreditCard,
            true,
            (base, env),
            c,
        ) else {
            continue;
        };
        let label = labels.len();
        labels.push(d.clone());
        detectors[kind as usize] = Some((action, label));
        names.push(kind.name());
        kinds.push(kind);
    }
    // Pattern rules after the last field rule need no parsed record: they run in the scan with
    // the detectors, in their order, before them.
    while path_rules
        .last()
        .is_some_and(|r: &PathRule| r.paths.is_empty())
    {
        if let Some(r) = path_rules.pop() {
            if let Some(re) = r.pattern {
                pattern_rules.insert(0, (r.label, re, r.action));
            }
        }
    }
    for k in raw.detector.keys() {
        if !raw.detectors.contains(k) {
            c.add(
                format!("{p}.detector.{k}"),
                format!("configures `{k}`, which is not in this profile's `detectors` list"),
            );
        }
    }
    let redact_unparsable = match raw.unparsable.as_deref() {
        None | Some("redact") => true,
        Some("detectors") => false,
        Some(o) => {
            c.add(
                format!("{p}.unparsable"),
                format!("unknown choice {o:?}: \"redact\" (default) or \"detectors\""),
            );
            false
        }
    };
    if c.list.len() > before {
        return None;
    }
    labels.push("invalid_escape".into());
    labels.push("unprocessable".into());
    // Field rules cannot see into a line that is not a JSON object: redacting it whole is the
    // only way such a line cannot carry a ruled field out.
    let has_field_rules = path_rules.iter().any(|r| !r.paths.is_empty());
    Some(Profile {
        redact_unparsable: redact_unparsable && has_field_rules,
        name: name.to_string(),
        labels,
        path_rules,
        pattern_rules,
        enabled: detect::mask_of(&kinds),
        detectors,
        detector_names: names,
    })
}

fn when(rp: &str, w: RawWhen, c: &mut Collector) -> Option<When> {
    let path = match rules::parse_path(&w.path) {
        Ok(p) => p,
        Err(e) => {
            c.add(format!("{rp}.when.path"), e);
            return None;
        }
    };
    let test = match (w.equals, w.exists, w.matches) {
        (Some(v), None, None) => Test::Equals(serde_json::to_value(v).ok()?),
        (None, Some(e), None) => Test::Exists(e),
        (None, None, Some(m)) => match Regex::new(&m) {
            Ok(re) => Test::Matches(re),
            Err(e) => {
                c.add(format!("{rp}.when.matches"), format!("invalid regex: {e}"));
                return None;
            }
        },
        _ => {
            c.add(
                format!("{rp}.when"),
                "needs exactly one of `equals`, `exists` or `matches`",
            );
            return None;
        }
    };
    Some(When { path, test })
}

/// Builds an action. `card` gives `partial` its PCI default (first 6, last 4); `in_text` means
/// the action replaces a part of a string, so a `replace` value must be text. `key_file` is
/// resolved against `base`, the config file's directory.
fn action(
    p: &str,
    a: RawAction,
    card: bool,
    in_text: bool,
    (base, env): (&Path, Env<'_>),
    c: &mut Collector,
) -> Option<Action> {
    let name = a.action.as_deref().unwrap_or("redact");
    let out = match name {
        "redact" => Action::Redact,
        "remove" => Action::Remove,
        "replace" => match a.value {
            None => {
                c.add(
                    format!("{p}.value"),
                    "`replace` needs a `value` (any TOML value, e.g. { data = \"masked\" })",
                );
                return None;
            }
            Some(v) => {
                let j = serde_json::to_value(v).ok()?;
                if in_text && !j.is_string() {
                    c.add(
                        format!("{p}.value"),
                        "replaces text inside a string, so it must be a string",
                    );
                    return None;
                }
                Action::Replace(j)
            }
        },
        "partial" => Action::Partial {
            first: a.keep_first.unwrap_or(if card { 6 } else { 0 }),
            last: a.keep_last.unwrap_or(4),
            ch: a.mask_char.unwrap_or('*'),
        },
        "hmac" => {
            // A key is bytes: a file is read raw (binary keys keep every bit), an environment
            // variable as its UTF-8 bytes.
            let key = match (&a.key_env, &a.key_file) {
                (Some(var), None) => env(var)
                    .map(String::into_bytes)
                    .ok_or_else(|| format!("key_env {var} is not set")),
                (None, Some(f)) => {
                    let path = super::resolve(base, f);
                    std::fs::read(&path).map(strip_newline).map_err(|e| {
                        format!(
                            "cannot read key_file {}: {}",
                            path.display(),
                            crate::private_fs::why(&e)
                        )
                    })
                }
                (Some(_), Some(_)) => Err("set either key_env or key_file, not both".to_string()),
                (None, None) => Err("`hmac` needs a secret key: key_env or key_file".to_string()),
            };
            let key = match key {
                Ok(k) if k.len() >= MIN_KEY_BYTES => k,
                Ok(_) => {
                    c.add(p, format!("the HMAC key is shorter than {MIN_KEY_BYTES} bytes; use a random key of 32 bytes or more"));
                    return None;
                }
                Err(e) => {
                    c.add(p, e);
                    return None;
                }
            };
            let base64 = match a.encoding.as_deref() {
                None | Some("hex") => false,
                Some("base64") => true,
                Some(o) => {
                    c.add(
                        format!("{p}.encoding"),
                        format!("unknown encoding {o:?}: hex or base64"),
                    );
                    return None;
                }
            };
            Action::Hmac {
                key: Arc::new(key),
                base64,
            }
        }
        other => {
            let hint = closest(other, ACTIONS.iter().copied())
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            c.add(
                format!("{p}.action"),
                format!(
                    "unknown action `{other}`{hint} (one of: {})",
                    ACTIONS.join(", ")
                ),
            );
            return None;
        }
    };
    Some(out)
}

/// One trailing newline (`\n` or `\r\n`) is what editors and `echo` add; it is not key material.
fn strip_newline(mut b: Vec<u8>) -> Vec<u8> {
    if b.last() == Some(&b'\n') {
        b.pop();
        if b.last() == Some(&b'\r') {
            b.pop();
        }
    }
    b
}
