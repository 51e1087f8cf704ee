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
use logferry::config::{Config, Format, ReadFrom, SinkConfig, SinkKind};
use logferry::export::receipt::{AccessReceipt, ACCESS_FORMAT};
use logferry::export::{export, Request, Summary};
use sha2::Digest;

use crate::export_cmd::{archive_sink, filter, public_key, range, store_receipt, Selection};

pub struct ReplayArgs {
    pub from_sink: String,
    pub to_sink: String,
    pub sel: Selection,
}

/// The selection's own folder name: the same selection resumes, another starts afresh.
fn selection_id(a: &ReplayArgs) -> String {
    let mut h = sha2::Sha256::new();
    for part in [&a.from_sink, &a.to_sink, &a.sel.from, &a.sel.to] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for list in [&a.sel.tenants, &a.sel.where_, &a.sel.where_hmac] {
        for w in list {
            h.update(w.as_bytes());
            h.update([1]);
        }
        h.update([2]);
    }
    h.update([u8::from(a.sel.allow_unverified)]);
    hex::encode(&h.finalize()[..8])
}

/// What step 1 leaves for step 2 (and for a resumed replay).
#[derive(serde::Serialize, serde::Deserialize)]
struct Mark {
    summary: Summary,
    conditions: Vec<String>,
    /// The data keys of what was read: shredded since, the copy is not shipped.
    #[serde(default)]
    keys: Vec<(String, String, String)>,
    /// Where the access receipt is (stored once step 1 has read the selection).
    #[serde(default)]
    receipt: Option<String>,
}

/// Whether two sinks write to the same place (a replay into its own archive).
fn same_place(a: &SinkConfig, b: &SinkConfig) -> bool {
    match (&a.kind, &b.kind) {
        (SinkKind::Directory { path: x }, SinkKind::Directory { path: y }) => {
            // One inside the other counts: a to-sink at the archive's parent folder writes
            // into the archive all the same.
            let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            let (x, y) = (canon(x), canon(y));
            x.starts_with(&y) || y.starts_with(&x)
        }
        (SinkKind::S3(x), SinkKind::S3(y)) => x.bucket == y.bucket && x.endpoint == y.endpoint,
        (SinkKind::AzureBlob(x), SinkKind::AzureBlob(y)) => {
            x.account == y.account && x.container == y.container
        }
        _ => false,
    }
}

pub fn run(cfg: Config, a: &ReplayArgs) -> anyhow::Result<bool> {
    let from_sc = archive_sink(&cfg, &a.from_sink)?.clone();
    let Some(to_sc) = cfg.sinks.iter().find(|s| s.name == a.to_sink) else {
        bail!("no sink named {:?} in {}", a.to_sink, cfg.path.display());
    };
    if a.from_sink == a.to_sink || same_place(&from_sc, to_sc) {
        bail!(
            "sink {:?} writes where {:?} keeps its archive: an archive is not replayed into itself",
            a.to_sink,
            a.from_sink
        );
    }
    if a.sel.by.trim().is_empty() {
        bail!("--by names who replays the archive, for the access receipt");
    }
    let (from, to) = range(&a.sel.from, &a.sel.to)?;
    let signer = logferry::encryption::signer(&cfg)?;
    if signer.is_none() && !a.sel.no_receipt {
        bail!(
            "no [signing] key to sign the access receipt with: configure one, or give --no-receipt"
        );
    }
    if a.sel.no_receipt {
        eprintln!("logferry replay: --no-receipt: this access is not recorded in the archive");
    }
    // The source that tells the records' time, before anything is read.
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
    let dir = cfg.data_dir.join("replay").join(selection_id(a));
    logferry::private_fs::dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // One replay of a selection at a time (a second would ship it again and remove the first
    // one's state under it).
    let lock = logferry::private_fs::append(&dir.join("lock"))
        .with_context(|| format!("cannot open {}", dir.join("lock").display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another replay of this selection is running (it holds {})",
            dir.join("lock").display()
        );
    }
    let records = dir.join("records.ndjson");
    let marker = dir.join("exported.json");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    // Step 1: the selection, read whole once.
    let mut mark: Option<Mark> = match std::fs::read(&marker) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a replay's mark", marker.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", marker.display()))),
    };
    if let Some(m) = &mark {
        // A key shredded since the copy was read: the copy holds erased records. It goes, and
        // the selection is read again (erased hours are then reported, not shipped).
        if let Some(ring) = rt.block_on(logferry::encryption::key_ring(&cfg, &from_sc))? {
            let mut gone = None;
            for (tenant, hour, id) in &m.keys {
                if let Err(logferry_vault::ledger::LedgerError::Shredded { .. }) =
                    rt.block_on(ring.open(tenant, hour, id))
                {
                    gone = Some((tenant.clone(), hour.clone()));
                    break;
                }
            }
            if let Some((t, h)) = gone {
                eprintln!("logferry replay: tenant {t} hour {h} was shredded since the selection was read: its copy is removed and the selection read again");
                for sub in ["records.ndjson", "exported.json"] {
                    let _ = std::fs::remove_file(dir.join(sub));
                }
                let _ = std::fs::remove_dir_all(dir.join("state"));
                mark = None;
            }
        }
    }
    let mark = match mark {
        Some(m) => {
            eprintln!(
                "logferry replay: resuming: the selection was read into {}",
                records.display()
            );
            m
        }
        None => {
            let mut m = read_selection(&cfg, &from_sc, a, from, to, &records)?;
            // The access happened: the records are read (and decrypted). On record now, whatever
            // becomes of the shipping.
            if let (Some(signer), false) = (&signer, a.sel.no_receipt) {
                let r = AccessReceipt {
                    format: ACCESS_FORMAT.into(),
                    action: "replay".into(),
                    sink: from_sc.name.clone(),
                    by: a.sel.by.clone(),
                    at: logferry_integrity::chain::time_text(chrono::Utc::now()),
                    from: m.summary.from.clone(),
                    to: m.summary.to.clone(),
                    tenants: a.sel.tenants.clone(),
                    conditions: m.conditions.clone(),
                    objects_read: m.summary.objects_read,
                    objects_unverified: m.summary.objects_unverified,
                    objects_erased: m.summary.objects_erased,
                    records: m.summary.records,
                    output_sha256: None,
                    output_bytes: None,
                    to_sink: Some(to_sc.name.clone()),
                    outcome: format!("read to be shipped to sink {}", to_sc.name),
                };
                m.receipt = Some(rt.block_on(store_receipt(&from_sc, &r, signer))?);
            }
            logferry::private_fs::write(&marker, &serde_json::to_vec(&m)?)
                .with_context(|| format!("cannot write {}", marker.display()))?;
            m
        }
    };

    // Step 2: ship it, as `run --once` ships a log.
    source.name = format!("replay-{}", from_sc.name);
    source.include = vec![records.display().to_string()];
    source.exclude = Vec::new();
    source.format = Format::Json;
    source.read_from = ReadFrom::Beginning;
    // Masked when they were archived. Masking may have made a record longer than the
    // source's limit: export's bound applies, and a record past it is kept whole as a dead
    // letter, never shipped as a stand-in.
    source.masking = None;
    source.max_record_bytes = source
        .max_record_bytes
        .max(source.max_line_bytes)
        .saturating_mul(2)
        .max(64 << 20);
    source.max_line_bytes = source.max_line_bytes.max(source.max_record_bytes);
    source.oversize = logferry::config::Oversize::DeadLetter;
    source.sinks = vec![to_sc.name.clone()];
    let to_sink = to_sc.clone();
    let to_name = to_sink.name.clone();
    let state = dir.join("state");
    let shipping = Config {
        path: cfg.path,
        data_dir: state.clone(),
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
    let shipped = rt.block_on(logferry::pipeline::run(shipping, true));
    // Dead letters of this run or an earlier one: the replay is not done, and they stay.
    let dead = state.join("dead-letter");
    let dead_count = walk_count(&dead);
    let mut s = mark.summary;
    s.receipt = mark.receipt;
    let text = |s: &Summary| {
        s.text().replacen(
            &format!("export of sink {}", from_sc.name),
            &format!("replay of sink {} into sink {to_name}", from_sc.name),
            1,
        )
    };
    if dead_count > 0 || shipped.is_err() {
        eprint!("{}", logferry_sink::redact::text(&text(&s)));
        if let Err(e) = shipped {
            eprintln!(
                "logferry replay: shipping stopped: {}",
                logferry_sink::redact::text(&format!("{e:#}"))
            );
        }
        if dead_count > 0 {
            eprintln!(
                "logferry replay: {dead_count} files of batches sink {to_name} refused are kept under {}; the replay is not complete (the copy stays under {})",
                dead.display(),
                dir.display()
            );
        }
        return Ok(false);
    }
    drop(lock);
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    eprint!("{}", logferry_sink::redact::text(&text(&s)));
    Ok(s.complete)
}

/// Files under `dir` (none when it is missing).
fn walk_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
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
    let filter = filter(cfg, sc, &a.sel.where_, &a.sel.where_hmac, &a.sel.tenants)?;
    let conditions = filter.described.clone();
    let req = Request {
        from,
        to,
        tenants: a.sel.tenants.clone(),
        filter,
        allow_unverified: a.sel.allow_unverified,
        concurrency: a.sel.concurrency,
        public_key: public_key(cfg, a.sel.public_key.as_deref())?,
        progress: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // A stale one (an interrupted step 1) goes; the new one is created, never opened.
    let tmp = records.with_extension("partial");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow!(e).context(format!("cannot remove {}", tmp.display())))
        }
        _ => {}
    }
    let file = logferry::private_fs::create_new(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let summary = export(cfg, sc, &req, rt.handle(), &mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, records)
        .with_context(|| format!("cannot write {}", records.display()))?;
    let keys = summary.keys_used.iter().cloned().collect();
    Ok(Mark {
        summary,
        conditions,
        keys,
        receipt: None,
    })
}
