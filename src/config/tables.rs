//! Tables deserialized with every problem reported: unknown keys (with a "did you mean") and
//! values of the wrong form, each at its key path.

use serde::de::DeserializeOwned;

use super::Collector;

/// `prefix.key`, or `key` at the top.
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Deserializes `table` into `T`, reporting every unknown key: each one is recorded with a
/// suggestion, removed, and the rest deserialized again.
pub(super) fn typed<T: DeserializeOwned>(
    mut table: toml::Table,
    prefix: &str,
    also_known: &[&str],
    c: &mut Collector,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..100 {
        let err = match serde_path_to_error::deserialize::<_, T>(table.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let segs: Vec<String> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                _ => None,
            })
            .collect();
        let rel = segs.join(".").replace(".[", "[");
        let path = join(prefix, &rel);
        let msg = err.inner().to_string();
        let msg = msg.lines().next().unwrap_or_default().to_string();
        if let Some(unknown) = msg.strip_prefix("unknown field `") {
            let name = unknown.split('`').next().unwrap_or_default().to_string();
            let mut known: Vec<String> = msg
                .split('`')
                .skip(3)
                .step_by(2)
                .map(str::to_string)
                .collect();
            if segs.len() == 1 {
                known.extend(also_known.iter().map(|s| s.to_string()));
            }
            c.add(path, unknown_message(&name, &known));
            if !remove_path(&mut table, &segs) {
                return None;
            }
            continue;
        }
        if let Some(field) = msg.strip_prefix("missing field `") {
            // A field we removed for a bad value is not missing as well.
            let field = field.split('`').next().unwrap_or_default();
            if removed.contains(&join(&rel, field)) {
                return None;
            }
        }
        c.add(path, msg);
        // Keep going past a bad value so that every problem of the table is listed.
        if segs.is_empty() || !remove_path(&mut table, &segs) {
            return None;
        }
        removed.push(rel);
    }
    None
}

/// The candidate closest to a mistyped `name`, if any is close enough to suggest.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn unknown_message(name: &str, known: &[String]) -> String {
    match closest(name, known.iter().map(String::as_str)) {
        Some(k) => format!("unknown key `{name}`; did you mean `{k}`?"),
        None if known.is_empty() => format!("unknown key `{name}`"),
        None => format!(
            "unknown key `{name}`; expected one of: {}",
            known.join(", ")
        ),
    }
}

fn remove_path(table: &mut toml::Table, segs: &[String]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = table;
    for s in parents {
        match cur.get_mut(s) {
            Some(toml::Value::Table(t)) => cur = t,
            _ => return false,
        }
    }
    cur.remove(last).is_some()
}
