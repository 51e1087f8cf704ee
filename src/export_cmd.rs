//! `logferry export`: the command line around `logferry::export`: the selection, the output
//! file (compressed by its name), the summary and the signed access receipt.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use logferry::config::{Config, SinkConfig, SinkKind};
use logferry::export::filter::{split_hmac, Filter};
use logferry::export::plan::parse_instant;
use logferry::export::receipt::{self, AccessReceipt, ACCESS_FORMAT};
use logferry::export::{Request, Summary};

/// What `export` and `replay` read: the range, tenants and conditions, and how.
#[derive(clap::Args)]
pub struct Selection {
    /// The range's start, inclusive: RFC 3339, a date (2026-03-03) or an hour
    /// (2026-03-03T10), UTC.
    #[arg(long)]
    pub from: String,
    /// The range's end, exclusive (same forms as --from).
    #[arg(long)]
    pub to: String,
    /// Who reads the archive (recorded in the access receipt).
    #[arg(long)]
    pub by: String,
    /// Only this tenant (repeatable): the sink's tenant field.
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    /// A condition on a record (repeatable): field=value, field!=value, field~prefix,
    /// field? (exists); dotted paths.
    #[arg(long = "where")]
    pub where_: Vec<String>,
    /// field=VALUE: records whose field holds the masking profile's pseudonym of VALUE.
    #[arg(long = "where-hmac")]
    pub where_hmac: Vec<String>,
    /// Read objects that no signed digest vouches for, or that differ from it (still
    /// reported, still exit 1).
    #[arg(long)]
    pub allow_unverified: bool,
    /// Objects read at once (at most 64).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The public key digests and receipts are signed with; the [signing] key's own when
    /// absent.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Store no access receipt (said on stderr).
    #[arg(long)]
    pub no_receipt: bool,
}

pub struct ExportArgs {
    pub sink: String,
    pub sel: Selection,
    pub format: String,
    pub out: Option<PathBuf>,
    pub json: bool,
}

/// The sink, checked to be an archive export can read.
pub fn archive_sink<'c>(cfg: &'c Config, sink: &str) -> anyhow::Result<&'c SinkConfig> {
    let sc = cfg
        .sinks
        .iter()
        .find(|s| s.name == sink)
        .ok_or_else(|| anyhow!("no sink named {sink:?} in {}", cfg.path.display()))?;
    match sc.kind {
        SinkKind::Directory { .. } | SinkKind::S3(_) | SinkKind::AzureBlob(_) => Ok(sc),
        _ => bail!(
            "sink {sink:?} is a {} sink: it keeps no archive to read back (directory, s3 and azure_blob do)",
            sc.type_name()
        ),
    }
}

/// The range: `--from` inclusive, `--to` exclusive, later than `--from`.
pub fn range(
    from: &str,
    to: &str,
) -> anyhow::Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let t = |what: &str, v: &str| {
        parse_instant(v).ok_or_else(|| {
            anyhow!("--{what} {v:?}: give an RFC 3339 time, a date (2026-03-03) or an hour (2026-03-03T10), UTC")
        })
    };
    let (f, t) = (t("from", from)?, t("to", to)?);
    if t <= f {
        bail!("--to {to:?} is not after --from {from:?}");
    }
    Ok((f, t))
}

/// The selection's record filter: conditions, pseudonyms for `--where-hmac`, tenants, and the
/// time field of the sources that feed the sink.
pub fn filter(
    cfg: &Config,
    sc: &SinkConfig,
    where_: &[String],
    where_hmac: &[String],
    tenants: &[String],
) -> anyhow::Result<Filter> {
    let sources: Vec<_> = cfg
        .sources
        .iter()
        .filter(|s| s.sinks.contains(&sc.name))
        .collect();
    // Every source's time field: a sink fed by several reads each record's own.
    let mut times: Vec<(String, Option<String>)> = Vec::new();
    for s in &sources {
        if let Some(f) = &s.timestamp_field {
            let t = (f.clone(), s.timestamp_format.clone());
            if !times.contains(&t) {
                times.push(t);
            }
        }
    }
    // A clear value asked for where the archive holds pseudonyms can never match, and would
    // stay in the signed receipt for good: refused, with the way that works.
    for w in where_ {
        if !w.contains(['=', '~', '!']) {
            continue; // `field?` asks for no value
        }
        let field = w.split(['=', '~', '!']).next().unwrap_or("");
        let value = w[field.len()..].trim_start_matches(['=', '~', '!']);
        for s in &sources {
            let Some(profile) = s.masking.as_deref().and_then(|m| cfg.masking.get(m)) else {
                continue;
            };
            if profile.pseudonymises(field) {
                bail!("--where {w:?}: field {field} is pseudonymised (an hmac rule of source {:?}'s masking profile): the archive holds no clear value there; use --where-hmac {field}=VALUE", s.name);
            }
            if masks(profile, field, value) {
                bail!("--where {w:?}: source {:?}'s masking profile masks this value in field {field} (a rule or detector): the archive holds no such value, and it would stay in the signed receipt; use --where-hmac {field}=VALUE where the action is hmac", s.name);
            }
        }
    }
    let mut hmac = Vec::new();
    if !where_hmac.is_empty() {
        let mut profiles: Vec<&str> = sources
            .iter()
            .filter_map(|s| s.masking.as_deref())
            .collect();
        profiles.sort();
        profiles.dedup();
        let [name] = profiles[..] else {
            bail!(logferry::export::filter::WhereError::Profile(
                if profiles.is_empty() {
                    "no masking profile".to_string()
                } else {
                    format!("several: {}", profiles.join(", "))
                }
            ));
        };
        let profile = cfg
            .masking
            .get(name)
            .ok_or_else(|| anyhow!("no masking profile {name:?}"))?;
        for w in where_hmac {
            let (field, value) = split_hmac(w)?;
            let p = profile.pseudonyms(value);
            if p.is_empty() {
                bail!(logferry::export::filter::WhereError::NoHmac {
                    field: field.to_string(),
                    profile: name.to_string(),
                });
            }
            hmac.push((field.to_string(), p));
        }
    }
    let tf = logferry::export::tenant_field(sc);
    Ok(Filter::with_tenants(
        where_,
        &hmac,
        tf.as_deref().map(|f| (f, tenants)),
        &times,
    )?)
}

/// Whether `profile` changes `value` at the dotted path `field` (so no archived record holds it).
fn masks(profile: &std::sync::Arc<logferry::mask::Profile>, field: &str, value: &str) -> bool {
    let mut v = serde_json::Value::String(value.to_string());
    for seg in field.rsplit('.') {
        let mut m = serde_json::Map::new();
        m.insert(seg.to_string(), v);
        v = serde_json::Value::Object(m);
    }
    let rec = v.to_string();
    let counters =
        vec![prometheus_client::metrics::counter::Counter::default(); profile.labels.len()];
    let mut m = logferry::mask::Masker::new(profile.clone(), counters);
    m.mask(rec.as_bytes()) && m.output() != rec.as_bytes()
}

/// The key that checks digests: `--public-key`, or the configured signing key's own.
pub fn public_key(cfg: &Config, given: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    match given {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Ok(Some(
                logferry_integrity::signing::public_key_bytes(&text)
                    .map_err(|e| anyhow!("{}: {e}", p.display()))?,
            ))
        }
        None => Ok(match logferry::encryption::signer(cfg)? {
            Some(k) => Some(hex::decode(k.public_hex())?),
            None => None,
        }),
    }
}

pub fn run(cfg: &Config, a: &ExportArgs) -> anyhow::Result<bool> {
    let sc = archive_sink(cfg, &a.sink)?;
    let parquet = match a.format.as_str() {
        "ndjson" => false,
        "parquet" => true,
        other => bail!("--format {other:?}: ndjson or parquet"),
    };
    if parquet {
        match a.out.as_deref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy()) {
            Some(n) if n.ends_with(".parquet") => {}
            _ => bail!("--format parquet writes a file: give --out NAME.parquet (its columns are compressed inside)"),
        }
    }
    if a.sel.by.trim().is_empty() {
        bail!("--by names who reads the archive, for the access receipt");
    }
    let (from, to) = range(&a.sel.from, &a.sel.to)?;
    let signer = logferry::encryption::signer(cfg)?;
    if signer.is_none() && !a.sel.no_receipt {
        bail!(
            "no [signing] key to sign the access receipt with: configure one, or give --no-receipt"
        );
    }
    if a.sel.no_receipt {
        eprintln!("logferry export: --no-receipt: this access is not recorded in the archive");
    }
    let filter = filter(cfg, sc, &a.sel.where_, &a.sel.where_hmac, &a.sel.tenants)?;
    let described = filter.described.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let bar = progress();
    let req = Request {
        from,
        to,
        tenants: a.sel.tenants.clone(),
        filter,
        allow_unverified: a.sel.allow_unverified,
        concurrency: a.sel.concurrency,
        public_key: public_key(cfg, a.sel.public_key.as_deref())?,
        progress: bar.clone().map(|b| {
            Box::new(move |n: u64| {
                b.inc(n);
            }) as Box<dyn Fn(u64) + Send + Sync>
        }),
    };
    let mut summary = match &a.out {
        None => crate::export_out::write_to(cfg, sc, &req, &rt, std::io::stdout().lock())?,
        Some(p) if p.as_os_str() == "-" => {
            crate::export_out::write_to(cfg, sc, &req, &rt, std::io::stdout().lock())?
        }
        Some(p) => crate::export_out::to_file(cfg, sc, &req, &rt, p, parquet)?,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(signer) = &signer {
        if !a.sel.no_receipt {
            let r = AccessReceipt {
                format: ACCESS_FORMAT.into(),
                action: "export".into(),
                sink: sc.name.clone(),
                by: a.sel.by.clone(),
                at: logferry_integrity::chain::time_text(chrono::Utc::now()),
                from: summary.from.clone(),
                to: summary.to.clone(),
                tenants: a.sel.tenants.clone(),
                conditions: described,
                objects_read: summary.objects_read,
                objects_unverified: summary.objects_unverified,
                objects_erased: summary.objects_erased,
                records: summary.records,
                output_sha256: summary.output_sha256.clone(),
                output_bytes: summary.output_bytes,
                to_sink: None,
                outcome: outcome(&summary),
            };
            let key = rt.block_on(store_receipt(sc, &r, signer))?;
            summary.receipt = Some(key);
        }
    }
    if a.json {
        eprintln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        // Store errors in problems are their words: a URL's secret parts never printed.
        eprint!("{}", logferry_sink::redact::text(&summary.text()));
    }
    Ok(summary.complete)
}

/// What became of an access, for its receipt.
pub fn outcome(s: &Summary) -> String {
    match (&s.output_error, s.problems.is_empty()) {
        (Some(e), _) => format!("output failed: {e}"),
        (None, true) => "complete".into(),
        (None, false) => "incomplete: problems in the archive".into(),
    }
}

/// Where a sink's access receipts go: beside its ledger when it encrypts, beside its digests
/// when it has integrity, else at the archive's root.
pub async fn store_receipt(
    sc: &SinkConfig,
    r: &AccessReceipt,
    signer: &logferry_integrity::signing::SigningKey,
) -> anyhow::Result<String> {
    let (store, prefix) = match (&sc.encryption, &sc.integrity) {
        (Some(e), _) => (
            logferry::encryption::store(sc, false).await?,
            e.ledger_prefix.clone(),
        ),
        (None, Some(i)) => (
            logferry::encryption::store(sc, true).await?,
            i.prefix.clone(),
        ),
        (None, None) => (logferry::encryption::store(sc, true).await?, String::new()),
    };
    let prefix = match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    receipt::store(store.as_ref(), &prefix, r, signer)
        .await
        .map_err(|e| anyhow!("{e}; the export's output is written, but its access is not recorded"))
}

/// A byte bar on a terminal, nothing otherwise.
fn progress() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes} read ({bytes_per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    Some(b)
}
