//! `logferry verify`: the archive of an integrity sink against its signed digests.

use std::path::Path;

use anyhow::{anyhow, Context};
use logferry::config::Config;
use logferry::integrity::verify::{self, Options};

pub struct VerifyArgs<'a> {
    pub sink: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub public_key: Option<&'a Path>,
    pub as_of: Option<&'a str>,
    pub max_inflated: Option<&'a str>,
    pub json: bool,
}

fn time(what: &str, t: Option<&str>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    t.map(|s| {
        logferry_integrity::chained::parse_time(s)
            .ok_or_else(|| anyhow!("--{what} {s:?} is not an RFC 3339 time (2026-12-03T10:00:00Z)"))
    })
    .transpose()
}

/// Prints the report; `Ok(true)` only for a clean archive.
pub fn verify(cfg: &Config, a: &VerifyArgs<'_>) -> anyhow::Result<bool> {
    let sc = cfg
        .sinks
        .iter()
        .find(|s| s.name == a.sink)
        .ok_or_else(|| anyhow!("no sink named {:?} in {}", a.sink, cfg.path.display()))?;
    let integrity = sc
        .integrity
        .as_ref()
        .ok_or_else(|| anyhow!("sink {:?} has no `integrity`: nothing to verify", a.sink))?;
    let public_key = match a.public_key {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            logferry_integrity::signing::public_key_bytes(&text)
                .map_err(|e| anyhow!("{}: {e}", p.display()))?
        }
        None => {
            let k = logferry::encryption::signer(cfg)?.ok_or_else(|| {
                anyhow!("no --public-key and no [signing] key_file to take it from")
            })?;
            hex::decode(k.public_hex())?
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Only to count replays in encrypted objects: without the KEK the hashes are checked all
    // the same, and the report says how many objects it could not read.
    let keys = match rt.block_on(logferry::encryption::key_ring(cfg, sc)) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("logferry verify: the sink's KEK is not at hand ({e:#}); replays are not counted in encrypted objects");
            None
        }
    };
    let o = Options {
        sink: sc.name.clone(),
        prefix: integrity.prefix.clone(),
        data_prefix: sc.key.static_prefix().to_string(),
        compression: sc.compression,
        parquet: sc.parquet.is_some(),
        public_key,
        from: time("from", a.from)?,
        to: time("to", a.to)?,
        keys,
        ledger_prefix: sc.encryption.as_ref().map(|e| e.ledger_prefix.clone()),
        as_of: time("as-of", a.as_of)?.unwrap_or_else(chrono::Utc::now),
        max_inflated: match a.max_inflated {
            Some(m) => {
                logferry::config::values::Size::parse(m)
                    .map_err(|e| anyhow!("--max-inflated {m:?}: {e}"))?
                    .0
            }
            None => verify::DEFAULT_MAX_INFLATED,
        },
    };
    let report = rt.block_on(async {
        let store = logferry::encryption::store(sc, true).await?;
        verify::run(store, &o).await.map_err(|e| anyhow!(e))
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(report.clean)
}
