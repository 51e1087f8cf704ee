//! `--where` and `--where-hmac`: conditions on a record's fields, read with the pipeline's
//! field extractor (one parse, no tree).

use crate::fields::Fields;

/// Why a condition cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhereError {
    #[error("--where {0:?}: write field=value, field!=value, field~prefix or field?")]
    Syntax(String),
    #[error("--where-hmac {0:?}: write field=VALUE")]
    HmacSyntax(String),
    #[error("--where-hmac {field}: the masking profile {profile:?} has no hmac rule or detector, so the archive holds no pseudonym to find")]
    NoHmac { field: String, profile: String },
    #[error("--where-hmac needs the masking profile of the sink's sources; they use {0}")]
    Profile(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    Ne(String),
    Prefix(String),
    Exists,
    /// Equal to any of these pseudonyms.
    AnyOf(Vec<String>),
}

#[derive(Debug, Clone)]
struct Cond {
    slot: usize,
    op: Op,
}

/// The conditions of one export, and the extractor that reads their fields (and the record's
/// time) out of each record.
#[derive(Clone)]
pub struct Filter {
    conds: Vec<Cond>,
    fields: Fields,
    /// The time fields' slots and formats.
    time_slots: Vec<(usize, Option<String>)>,
    /// What the receipt records: each condition as given (`--where-hmac` as its field and
    /// pseudonyms, never the value asked for).
    pub described: Vec<String>,
}

impl Filter {
    /// `where_` as given; `hmac` as (field, pseudonyms of the value) pairs.
    pub fn new(
        where_: &[String],
        hmac: &[(String, Vec<String>)],
        timestamp_field: Option<&str>,
        timestamp_format: Option<&str>,
    ) -> Result<Filter, WhereError> {
        let times: Vec<(String, Option<String>)> = timestamp_field
            .map(|f| (f.to_string(), timestamp_format.map(str::to_string)))
            .into_iter()
            .collect();
        Self::with_tenants(where_, hmac, None, &times)
    }

    /// As [`Self::new`], and the record's `field` must be one of `tenants` (two tenants
    /// whose names clean to the same path are told apart by their records).
    pub fn with_tenants(
        where_: &[String],
        hmac: &[(String, Vec<String>)],
        tenants: Option<(&str, &[String])>,
        times: &[(String, Option<String>)],
    ) -> Result<Filter, WhereError> {
        let mut paths: Vec<String> = Vec::new();
        let mut slot_of = |p: &str| match paths.iter().position(|x| x == p) {
            Some(i) => i,
            None => {
                paths.push(p.to_string());
                paths.len() - 1
            }
        };
        let mut conds = Vec::new();
        let mut described = Vec::new();
        for w in where_ {
            let (field, op) = parse(w).ok_or_else(|| WhereError::Syntax(w.clone()))?;
            conds.push(Cond {
                slot: slot_of(field),
                op,
            });
            described.push(w.clone());
        }
        for (field, pseudonyms) in hmac {
            conds.push(Cond {
                slot: slot_of(field),
                op: Op::AnyOf(pseudonyms.clone()),
            });
            described.push(format!("{field}=hmac:{}", pseudonyms.join("|")));
        }
        if let Some((field, values)) = tenants.filter(|(_, v)| !v.is_empty()) {
            conds.push(Cond {
                slot: slot_of(field),
                op: Op::AnyOf(values.to_vec()),
            });
        }
        // Each source's time field, in order: the first a record has and that reads is its time.
        let time_slots: Vec<(usize, Option<String>)> = times
            .iter()
            .map(|(f, fmt)| (slot_of(f), fmt.clone()))
            .collect();
        let fields = Fields::new(&paths, None);
        Ok(Filter {
            conds,
            fields,
            time_slots,
            described,
        })
    }

    /// Whether conditions must be read out of each record.
    pub fn has_conditions(&self) -> bool {
        !self.conds.is_empty()
    }

    /// Reads `record`'s fields; then [`Self::matches`] and [`Self::time`] answer for it.
    pub fn read(&mut self, record: &[u8]) {
        self.fields.extract(record);
    }

    pub fn matches(&self) -> bool {
        let v = self.fields.values();
        self.conds.iter().all(|c| {
            let got = v.get(c.slot);
            match &c.op {
                Op::Eq(x) => got == Some(x.as_str()),
                Op::Ne(x) => got != Some(x.as_str()),
                Op::Prefix(x) => got.is_some_and(|g| g.starts_with(x.as_str())),
                Op::Exists => v.present(c.slot),
                Op::AnyOf(xs) => got.is_some_and(|g| xs.iter().any(|x| x == g)),
            }
        })
    }

    /// The record's own time, when it has one that reads.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let v = self.fields.values();
        self.time_slots.iter().find_map(|(slot, fmt)| {
            let text = v.get(*slot)?;
            fmt.as_deref()
                .and_then(|f| crate::timefmt::parse_with(text, f))
                .or_else(|| crate::timefmt::parse_time(text))
        })
    }
}

/// `field=value`, `field!=value`, `field~prefix`, `field?`.
fn parse(w: &str) -> Option<(&str, Op)> {
    let ok = |f: &str| {
        !f.is_empty() && !f.split('.').any(str::is_empty) && !f.contains(['=', '~', '!', '?'])
    };
    // An operator first: `status=failed?` asks for the value `failed?`.
    let Some(at) = w.find(['=', '~', '!']) else {
        let f = w.strip_suffix('?')?;
        return ok(f).then_some((f, Op::Exists));
    };
    let (f, rest) = w.split_at(at);
    let op = if let Some(v) = rest.strip_prefix("!=") {
        Op::Ne(v.to_string())
    } else if let Some(v) = rest.strip_prefix('=') {
        Op::Eq(v.to_string())
    } else if let Some(v) = rest.strip_prefix('~') {
        Op::Prefix(v.to_string())
    } else {
        return None;
    };
    ok(f).then_some((f, op))
}

/// `field=VALUE` of `--where-hmac`.
pub fn split_hmac(w: &str) -> Result<(&str, &str), WhereError> {
    match w.split_once('=') {
        Some((f, v)) if !f.is_empty() && !f.split('.').any(str::is_empty) => Ok((f, v)),
        _ => Err(WhereError::HmacSyntax(w.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(w: &[&str], rec: &str) -> bool {
        let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
        let mut f = Filter::new(&w, &[], None, None).unwrap();
        f.read(rec.as_bytes());
        f.matches()
    }

    #[test]
    fn conditions_on_strings_numbers_booleans_and_paths() {
        let r = r#"{"status":"failed","recipe_id":4711,"ok":false,"context":{"user":"u-1","x":null,"o":{}}}"#;
        assert!(check(&["status=failed"], r));
        assert!(!check(&["status=succeeded"], r));
        assert!(check(&["status!=succeeded"], r));
        assert!(check(&["recipe_id=4711", "ok=false"], r));
        assert!(check(&["context.user~u-"], r));
        // A `?` after an operator is part of the value.
        assert!(!check(&["status=failed?"], r));
        assert!(check(&["status!=failed?"], r));
        assert!(check(&["context.user?", "context.x?", "context.o?"], r));
        assert!(!check(&["context.missing?"], r));
        assert!(check(&["context.missing!=1"], r));
        assert!(!check(&["context.user=u-1", "status=other"], r));
        // Not a JSON object: no field matches.
        assert!(!check(&["status=failed"], "not json"));
    }

    #[test]
    fn malformed_conditions_are_named() {
        for bad in ["status", "=x", "a..b=1", "?", ".a?", "a!b", "a?b"] {
            let e = Filter::new(&[bad.to_string()], &[], None, None)
                .err()
                .unwrap();
            assert_eq!(e, WhereError::Syntax(bad.to_string()));
        }
        assert!(split_hmac("user").is_err());
        assert_eq!(split_hmac("a.b=x=y").unwrap(), ("a.b", "x=y"));
    }
}
