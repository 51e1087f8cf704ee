//! Which objects can hold a selection: the listing prefixes a key template gives for a time
//! range and tenants, and the test a listed key passes (its time unit overlaps the range, its
//! tenant is one asked for).

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use logferry_sink::{KeyContext, KeyTemplate};
use regex::Regex;

/// A `--from`/`--to` value: an RFC 3339 instant, a date (`2026-03-03`) or an hour
/// (`2026-03-03T10`), UTC, meaning its start.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Exactly `YYYY-MM-DD` (chrono alone would take `2026-3-3`).
    let date = |d: &str| {
        (d.len() == 10)
            .then(|| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .flatten()
    };
    if let Some(d) = date(s) {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    let (day, hour) = s.split_once('T')?;
    let d = date(day)?;
    if hour.len() != 2 || !hour.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    d.and_hms_opt(hour.parse().ok()?, 0, 0).map(|t| t.and_utc())
}

/// Ranges longer than this are listed by their days instead of their hours.
const MAX_HOURLY: i64 = 72;
/// More prefixes than this are listed by days, then from the key's static prefix.
const MAX_PREFIXES: usize = 20_000;

/// What a listed key can hold.
pub struct KeyMatch {
    pub tenant: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

pub struct Plan {
    pub prefixes: Vec<String>,
    /// The template has no time part: every object is listed and read.
    pub no_time: bool,
    /// Where the tenant's folders are, when no tenant was given and the key has the tenant
    /// in a segment of its own after a fixed prefix: (that prefix, the segment's text before
    /// and after the value). Listing those folders gives the tenants to plan with.
    pub tenant_folders: Option<(String, String, String)>,
    pattern: Regex,
    tenant_group: Option<String>,
}

/// A value no key holds otherwise (kept as it is by the keys' cleaning).
const MARK: &str = "LFxMARKx7q";

impl Plan {
    /// `sources` feed the sink (their names fill `{source}`); `tenant_field` is the key field
    /// holding the tenant, when the key has it; `tenants` the tenants to list (as paths show
    /// them), none for all.
    pub fn new(
        key: &KeyTemplate,
        sink: &str,
        sources: &[String],
        tenant_field: Option<&str>,
        tenants: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Plan, regex::Error> {
        let pattern = Regex::new(&key.pattern())?;
        let tenant_idx = tenant_field.and_then(|t| key.fields().iter().position(|f| f == t));
        let tenant_group = tenant_idx.map(|i| format!("f{i}"));
        let granularity = key.time_granularity().unwrap_or(0);
        let no_time = granularity == 0;
        let tenant_values: Vec<Option<&str>> = match tenant_idx {
            Some(_) if !tenants.is_empty() => tenants.iter().map(|t| Some(t.as_str())).collect(),
            _ => vec![None],
        };
        let source_values: Vec<Option<&str>> = if sources.is_empty() {
            vec![None]
        } else {
            sources.iter().map(|s| Some(s.as_str())).collect()
        };
        // Renders the key with the tenant (when known), the source, and `mark` for the rest.
        let render = |mark: &str, tenant: Option<&str>, source: Option<&str>, at: DateTime<Utc>| {
            let fields: Vec<Option<&str>> = (0..key.fields().len())
                .map(|i| match (Some(i) == tenant_idx, tenant) {
                    (true, Some(v)) => Some(v),
                    _ => Some(mark),
                })
                .collect();
            key.render(&KeyContext {
                source: source.unwrap_or(mark),
                sink,
                batch_id: mark,
                host: mark,
                fields: &fields,
                time: at,
            })
        };
        // Hours while they are few, else days, else the static prefix.
        let units = |step: i64| ((to - from).num_seconds() / step + 2) as usize;
        let per_unit = tenant_values.len() * source_values.len();
        let step = if no_time {
            0
        } else if granularity <= 3600
            && (to - from).num_hours() <= MAX_HOURLY
            && units(3600) * per_unit <= MAX_PREFIXES
        {
            3600
        } else if units(86_400) * per_unit <= MAX_PREFIXES {
            86_400
        } else {
            0
        };
        let mut prefixes = Vec::new();
        if step > 0 {
            let mut t = floor(from, step);
            while t < to {
                for tenant in &tenant_values {
                    for source in &source_values {
                        let a = render("a", *tenant, *source, t);
                        let b = render("b", *tenant, *source, t + TimeDelta::seconds(step - 1));
                        prefixes.push(common_folder(&a, &b));
                    }
                }
                t += TimeDelta::seconds(step);
            }
        }
        if prefixes.is_empty() {
            prefixes.push(key.static_prefix().to_string());
        }
        prefixes.sort();
        prefixes.dedup();
        // A prefix inside another one is listed with it.
        let mut kept: Vec<String> = Vec::new();
        for p in prefixes {
            if !kept.last().is_some_and(|k| p.starts_with(k.as_str())) {
                kept.push(p);
            }
        }
        // The tenant's own segment, when nothing unknown comes before it.
        let tenant_folders = (tenant_idx.is_some() && tenants.is_empty() && !no_time)
            .then(|| {
                let source = source_values.first().copied().flatten();
                let renders = [
                    render("a", Some(MARK), source, from),
                    render("b", Some(MARK), source, from),
                ];
                let segs: Vec<Vec<&str>> = renders.iter().map(|r| r.split('/').collect()).collect();
                let k = segs[0].iter().position(|s| s.contains(MARK))?;
                if segs[1].get(..=k) != segs[0].get(..=k) || source_values.len() > 1 {
                    return None;
                }
                let (pre, post) = segs[0][k].split_once(MARK)?;
                let at: String = segs[0][..k].iter().map(|s| format!("{s}/")).collect();
                Some((at, pre.to_string(), post.to_string()))
            })
            .flatten();
        Ok(Plan {
            prefixes: kept,
            no_time,
            tenant_folders,
            pattern,
            tenant_group,
        })
    }

    /// The tenants a folder listing at [`Self::tenant_folders`] names.
    pub fn tenants_in(&self, folders: &[String]) -> Vec<String> {
        let Some((_, pre, post)) = &self.tenant_folders else {
            return Vec::new();
        };
        folders
            .iter()
            .filter_map(|f| f.strip_prefix(pre.as_str())?.strip_suffix(post.as_str()))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// What the key can hold, or `None` for a name the template never renders (logferry's own
    /// files, a sidecar, something someone else put there). `.lfenc` is taken off first.
    pub fn matches(&self, key: &str) -> Option<KeyMatch> {
        let key = key
            .strip_suffix(logferry_vault::encrypted::SUFFIX)
            .unwrap_or(key);
        let c = self.pattern.captures(key)?;
        let tenant = self
            .tenant_group
            .as_deref()
            .and_then(|g| c.name(g))
            .map(|m| m.as_str().to_string());
        let num = |g: &str| c.name(g).and_then(|m| m.as_str().parse::<u32>().ok());
        if self.no_time {
            return Some(KeyMatch {
                tenant,
                start: DateTime::<Utc>::MIN_UTC,
                end: DateTime::<Utc>::MAX_UTC,
            });
        }
        // The unit the key names: its finest captured part; parts it does not capture (a week
        // number, a day of the year) leave the unit whole.
        let year = num("Y")? as i32;
        let (start, end) = match (num("m"), num("d"), num("H"), num("M")) {
            (Some(m), Some(d), Some(h), Some(mi)) => {
                let s = Utc.with_ymd_and_hms(year, m, d, h, mi, 0).single()?;
                (s, s + TimeDelta::minutes(1))
            }
            (Some(m), Some(d), Some(h), None) => {
                let s = Utc.with_ymd_and_hms(year, m, d, h, 0, 0).single()?;
                (s, s + TimeDelta::hours(1))
            }
            (Some(m), Some(d), None, _) => {
                let s = Utc.with_ymd_and_hms(year, m, d, 0, 0, 0).single()?;
                (s, s + TimeDelta::days(1))
            }
            (Some(m), None, _, _) => {
                let s = Utc.with_ymd_and_hms(year, m, 1, 0, 0, 0).single()?;
                let e = if m == 12 {
                    Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).single()?
                } else {
                    Utc.with_ymd_and_hms(year, m + 1, 1, 0, 0, 0).single()?
                };
                (s, e)
            }
            (None, ..) => {
                let s = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).single()?;
                (s, Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).single()?)
            }
        };
        Some(KeyMatch { tenant, start, end })
    }
}

/// The start of the `step`-second unit holding `t` (hours and days, UTC).
fn floor(t: DateTime<Utc>, step: i64) -> DateTime<Utc> {
    let s = t.timestamp();
    let f = s - s.rem_euclid(step);
    Utc.timestamp_opt(f, 0).single().unwrap_or(t)
}

/// The folders two renderings share: everything up to the last `/` before they differ.
fn common_folder(a: &str, b: &str) -> String {
    let same = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    match a[..same].rfind('/') {
        Some(i) => a[..=i].to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn instants_dates_and_hours() {
        assert_eq!(
            t("2026-03-03"),
            Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap()
        );
        assert_eq!(
            t("2026-03-03T10"),
            Utc.with_ymd_and_hms(2026, 3, 3, 10, 0, 0).unwrap()
        );
        assert_eq!(
            t("2026-03-03T10:30:00+01:00"),
            Utc.with_ymd_and_hms(2026, 3, 3, 9, 30, 0).unwrap()
        );
        for bad in [
            "2026-03-03T1",
            "2026-13-01",
            "yesterday",
            "2026-03-03T25",
            "",
            "2026-3-3",
            "2026-3-3T10",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn hourly_prefixes_per_tenant_and_source() {
        let key =
            KeyTemplate::parse("{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz").unwrap();
        let p = Plan::new(
            &key,
            "s",
            &["jobs".into()],
            Some("account_id"),
            &["acme".into(), "beta".into()],
            t("2026-03-03T23"),
            t("2026-03-04T01"),
        )
        .unwrap();
        assert_eq!(
            p.prefixes,
            [
                "jobs/acme/2026/03/03/23/",
                "jobs/acme/2026/03/04/00/",
                "jobs/beta/2026/03/03/23/",
                "jobs/beta/2026/03/04/00/",
            ]
        );
        let m = p
            .matches("jobs/acme/2026/03/04/00/b1.ndjson.gz.lfenc")
            .unwrap();
        assert_eq!(m.tenant.as_deref(), Some("acme"));
        assert_eq!(m.start, t("2026-03-04T00"));
        assert_eq!(m.end, t("2026-03-04T01"));
        assert!(p.matches("_digests/s/2026/03/04/00.json").is_none());
        assert!(p
            .matches("jobs/acme/2026/03/04/00/b1.ndjson.gz.meta.json")
            .is_none());
    }

    #[test]
    fn unknown_fields_stop_the_prefix_and_long_ranges_list_days() {
        let key = KeyTemplate::parse("{account_id}/%Y/%m/%d/%H/{batch_id}.gz").unwrap();
        let p = Plan::new(&key, "s", &[], None, &[], t("2026-03-03"), t("2026-03-05")).unwrap();
        assert_eq!(p.prefixes, [""]);
        // With the tenant's field known, its folders are listed first.
        let p = Plan::new(
            &key,
            "s",
            &[],
            Some("account_id"),
            &[],
            t("2026-03-03"),
            t("2026-03-05"),
        )
        .unwrap();
        assert_eq!(
            p.tenant_folders,
            Some((String::new(), String::new(), String::new()))
        );
        let hive =
            KeyTemplate::parse("logs/tenant={account_id}/year=%Y/{batch_id}.parquet").unwrap();
        let p = Plan::new(
            &hive,
            "s",
            &[],
            Some("account_id"),
            &[],
            t("2026-03-03"),
            t("2026-03-05"),
        )
        .unwrap();
        assert_eq!(
            p.tenant_folders,
            Some(("logs/".into(), "tenant=".into(), String::new()))
        );
        assert_eq!(
            p.tenants_in(&["tenant=acme".into(), "other".into(), "tenant=".into()]),
            ["acme"]
        );
        let key =
            KeyTemplate::parse("logs/year=%Y/month=%m/day=%d/hour=%H/{batch_id}.parquet").unwrap();
        let p = Plan::new(&key, "s", &[], None, &[], t("2026-03-01"), t("2026-03-10")).unwrap();
        assert_eq!(p.prefixes.len(), 9);
        assert_eq!(p.prefixes[0], "logs/year=2026/month=03/day=01/");
        // No time part: everything under the static prefix.
        let key = KeyTemplate::parse("logs/{source}/{batch_id}.gz").unwrap();
        let p = Plan::new(&key, "s", &[], None, &[], t("2026-03-01"), t("2026-03-10")).unwrap();
        assert!(p.no_time);
        assert_eq!(p.prefixes, ["logs/"]);
    }
}
