//! `logferry replay`: a selection of one sink's archive shipped into another sink through the
//! normal path (batches, spool, delivery with retries, rate limits and dead letters).
//!
//! Two steps, each resumable. First the selection is read as `export` reads it (checked,
//! decrypted) into `data_dir/replay/<id>/records.ndjson` (0600), and `exported.json` marks it
//! whole. Then a pipeline of its own (state in `data_dir/replay/<id>/state/`, so a running
//! logferry on the same `data_dir` is not disturbed) ships that file to the sink as
//! `run --once` ships a log: its checkpoint, acknowledged only once batches are durable in the
//! spool, is the replay's progress. An interrupted replay run again with the same selection
//! continues where it stopped; duplicates are bounded by the batches open at the interruption.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use logferry::config::{Config, Format, ReadFrom};
use logferry::export::receipt::{AccessReceipt, ACCESS_FORMAT};
use logferry::export::{export, Request, Summary};
use sha2::Digest;

use crate::export_cmd::{archive_sink, filter, public_key, range, store_receipt};

pub struct ReplayArgs {
    pub from_sink: String,
    pub to_sink: String,
    pub from: String,
    pub to: String,
    pub by: String,
    pub tenants: Vec<String>,
    pub where_: Vec<String>,
    pub where_hmac: Vec<String>,
    pub allow_unverified: bool,
    pub concurrency: usize,
    pub public_key: Option<std::path::PathBuf>,
    pub no_receipt: bool,
}

/// The selection's own folder name: the same selection resumes, another starts afresh.
fn selection_id(a: &ReplayArgs) -> String {
    let mut h = sha2::Sha256::new();
    for part in [&a.from_sink, &a.to_sink, &a.from, &a.to] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for list in [&a.tenants, &a.where_, &a.where_hmac] {
        for w in list {
            h.update(w.as_bytes());
            h.update([1]);
        }
        h.update([2]);
    }
    h.update([u8::from(a.allow_unverified)]);
    hex::encode(&h.finalize()[..8])
}

/// What step 1 leaves for step 2 (and for a resumed replay).
#[derive(serde::Serialize, serde::Deserialize)]
struct Mark {
    summary: Summary,
    conditions: Vec<String>,
}

pub fn run(cfg: Config, a: &ReplayArgs) -> anyhow::Result<bool> {
    let from_sc = archive_sink(&cfg, &a.from_sink)?.clone();
    let Some(to_sc) = cfg.sinks.iter().find(|s| s.name == a.to_sink) else {
        bail!("no sink named {:?} in {}", a.to_sink, cfg.path.display());
    };
    if a.from_sink == a.to_sink {
        bail!("--to-sink is --from-sink: a sink's archive is not replayed into itself");
    }
    if a.by.trim().is_empty() {
        bail!("--by names who replays the archive, for the access receipt");
    }
    let (from, to) = range(&a.from, &a.to)?;
    let signer = logferry::encryption::signer(&cfg)?;
    if signer.is_none() && !a.no_receipt {
        bail!(
            "no [signing] key to sign the access receipt with: configure one, or give --no-receipt"
        );
    }
    if a.no_receipt {
        eprintln!("logferry replay: --no-receipt: this access is not recorded in the archive");
    }
    let dir = cfg.data_dir.join("replay").join(selection_id(a));
    logferry::private_fs::dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let records = dir.join("records.ndjson");
    let marker = dir.join("exported.json");

    // Step 1: the selection, read whole once.
    let mark: Mark = match std::fs::read(&marker) {
        Ok(b) => {
            eprintln!(
                "logferry replay: resuming: the selection was read into {}",
                records.display()
            );
            serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a replay's mark", marker.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let m = read_selection(&cfg, &from_sc, a, from, to, &records)?;
            logferry::private_fs::write(&marker, &serde_json::to_vec(&m)?)
                .with_context(|| format!("cannot write {}", marker.display()))?;
            m
        }
        Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", marker.display()))),
    };

    // Step 2: ship it, as `run --once` ships a log.
    let mut source = cfg
        .sources
        .iter()
        .find(|s| s.sinks.contains(&from_sc.name))
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "no source feeds sink {:?}: nothing tells the records' time field",
                from_sc.name
            )
        })?;
    source.name = format!("replay-{}", from_sc.name);
    source.include = vec![records.display().to_string()];
    source.exclude = Vec::new();
    source.format = Format::Json;
    source.read_from = ReadFrom::Beginning;
    // Masked when they were archived.
    source.masking = None;
    source.sinks = vec![to_sc.name.clone()];
    let to_sink = to_sc.clone();
    let to_name = to_sink.name.clone();
    let shipping = Config {
        path: cfg.path,
        data_dir: dir.join("state"),
        api_listen: None,
        unready_after: cfg.unready_after,
        log_format: cfg.log_format,
        log_level: cfg.log_level,
        shutdown_timeout: cfg.shutdown_timeout,
        checkpoint_interval: cfg.checkpoint_interval,
        sources: vec![source],
        masking: cfg.masking,
        sinks: vec![to_sink],
        secrets: cfg.secrets,
        credential_files: cfg.credential_files,
        keks: cfg.keks,
        signing_key_file: cfg.signing_key_file,
        spool_kek: cfg.spool_kek,
        key_file_modes: cfg.key_file_modes,
    };
    logferry::ops::init_logging(shipping.log_format, &shipping.log_level);
    logferry::ops::fatal::install_panic_hook();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(logferry::pipeline::run(shipping, true))
        .context("shipping the selection")?;

    // Every record delivered or dead-lettered: the access is recorded, the copy removed.
    let mut s = mark.summary;
    if let (Some(signer), false) = (&signer, a.no_receipt) {
        let r = AccessReceipt {
            format: ACCESS_FORMAT.into(),
            action: "replay".into(),
            sink: from_sc.name.clone(),
            by: a.by.clone(),
            at: logferry_integrity::chain::time_text(chrono::Utc::now()),
            from: s.from.clone(),
            to: s.to.clone(),
            tenants: a.tenants.clone(),
            conditions: mark.conditions,
            objects_read: s.objects_read,
            objects_unverified: s.objects_unverified,
            objects_erased: s.objects_erased,
            records: s.records,
            output_sha256: None,
            output_bytes: None,
            to_sink: Some(to_name.clone()),
        };
        s.receipt = Some(rt.block_on(store_receipt(&from_sc, &r, signer))?);
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    eprint!(
        "{}",
        s.text().replacen(
            &format!("export of sink {}", from_sc.name),
            &format!("replay of sink {} into sink {to_name}", from_sc.name),
            1
        )
    );
    Ok(s.complete)
}

/// Step 1: the selection into `records` (through a temporary name: a file there is whole).
fn read_selection(
    cfg: &Config,
    sc: &logferry::config::SinkConfig,
    a: &ReplayArgs,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    records: &Path,
) -> anyhow::Result<Mark> {
    let filter = filter(cfg, sc, &a.where_, &a.where_hmac, &a.tenants)?;
    let conditions = filter.described.clone();
    let req = Request {
        from,
        to,
        tenants: a.tenants.clone(),
        filter,
        allow_unverified: a.allow_unverified,
        concurrency: a.concurrency,
        public_key: if sc.integrity.is_some() {
            public_key(cfg, a.public_key.as_deref())?
        } else {
            None
        },
        progress: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tmp = records.with_extension("partial");
    let file = logferry::private_fs::create(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let summary = export(cfg, sc, &req, rt.handle(), &mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, records)
        .with_context(|| format!("cannot write {}", records.display()))?;
    Ok(Mark {
        summary,
        conditions,
    })
}
