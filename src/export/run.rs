//! The export itself: list, select, check, read in parallel, write in order.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use logferry_integrity::chain::{self, Entry};
use logferry_sink::store::{Kind, LedgerStore};
use logferry_vault::keys::KeyRing;

use super::filter::Filter;
use super::object::{read_object, Counts, ObjectError, Reading};
use super::plan::Plan;
use super::summary::{Erased, Problem, Summary};
use super::trust::{attested, digests, list};
use crate::config::{Config, SinkConfig};

/// What to export.
pub struct Request {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// As given; compared with the key's tenant segment as keys clean values.
    pub tenants: Vec<String>,
    pub filter: Filter,
    pub allow_unverified: bool,
    pub concurrency: usize,
    /// The key the digests must be signed with (`integrity`).
    pub public_key: Option<Vec<u8>>,
    /// Called after each object with the bytes it held as stored (a progress bar).
    pub progress: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Setup(String),
    #[error("listing {prefix:?}: {cause}")]
    List { prefix: String, cause: String },
}

/// Objects read at once, at most.
pub const MAX_CONCURRENCY: usize = 64;
/// Records are handed to the writer in pieces of about this size.
const PIECE: usize = 1 << 20;
/// Pieces waiting per object: the memory bound is objects in flight times this.
const PIECES: usize = 4;

/// The tenant field of a sink: its encryption's, else the key's only field.
pub fn tenant_field(sc: &SinkConfig) -> Option<String> {
    if let Some(e) = &sc.encryption {
        return Some(e.tenant_field.clone());
    }
    match sc.key.fields() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Lists, checks and reads; records go to `out` in key order. The archive's problems are in
/// the summary; an error is an export that could not run or write.
pub fn export(
    cfg: &Config,
    sc: &SinkConfig,
    req: &Request,
    handle: &tokio::runtime::Handle,
    out: &mut dyn Write,
) -> Result<Summary, ExportError> {
    let setup = |e: anyhow::Error| ExportError::Setup(format!("{e:#}"));
    let store = handle
        .block_on(crate::encryption::store(sc, true))
        .map_err(setup)?;
    let keys: Option<Arc<KeyRing>> = if sc.encryption.is_some() {
        handle
            .block_on(crate::encryption::key_ring(cfg, sc))
            .map_err(setup)?
    } else {
        None
    };
    let sources: Vec<String> = cfg
        .sources
        .iter()
        .filter(|s| s.sinks.contains(&sc.name))
        .map(|s| s.name.clone())
        .collect();
    let tenant_field = tenant_field(sc);
    let tenants: Vec<String> = req
        .tenants
        .iter()
        .map(|t| logferry_sink::key::clean(t))
        .collect();
    let new_plan = |tenants: &[String]| {
        Plan::new(
            &sc.key,
            &sc.name,
            &sources,
            tenant_field.as_deref(),
            tenants,
            req.from,
            req.to,
        )
        .map_err(|e| ExportError::Setup(format!("the sink's key template: {e}")))
    };
    let mut plan = new_plan(&tenants)?;
    // No tenant given and the tenant in the path before the time: its folders are listed, and
    // each tenant's hours (or days) then.
    if let Some((at, _, _)) = plan.tenant_folders.clone() {
        let folders = handle
            .block_on(store.folders(&at))
            .map_err(|e| ExportError::List {
                prefix: at.clone(),
                cause: e.to_string(),
            })?;
        let found = plan.tenants_in(&folders);
        if !found.is_empty() {
            let again = new_plan(&found)?;
            // Only when that lists less: a key that gives no more than the static prefix
            // is listed once.
            if again.prefixes.iter().all(|p| p.len() > at.len()) {
                plan = again;
            }
        }
    }
    let mut s = Summary {
        sink: sc.name.clone(),
        from: chain::time_text(req.from),
        to: chain::time_text(req.to),
        prefixes: plan.prefixes.len(),
        full_listing: plan.no_time,
        ..Summary::default()
    };

    // The listing, a few prefixes at a time.
    let listed = handle.block_on(list(&store, &plan.prefixes))?;
    s.objects_listed = listed.len() as u64;
    let wanted = |key: &str| -> Option<super::plan::KeyMatch> {
        let m = plan.matches(key)?;
        if !(m.start < req.to && m.end > req.from) {
            return None;
        }
        if !tenants.is_empty() && tenant_field.is_some() {
            // A key without the tenant in its path is judged by its records.
            if let Some(t) = &m.tenant {
                if !tenants.contains(t) {
                    return None;
                }
            }
        }
        Some(m)
    };

    // The signed digests, when the sink has them.
    let entries: Option<HashMap<String, Entry>> = match (&sc.integrity, &req.public_key) {
        (Some(i), Some(pk)) => Some(handle.block_on(digests(
            &store, &i.prefix, pk, &sc.name, &mut s,
        ))?),
        (Some(_), None) => {
            return Err(ExportError::Setup(
                "the sink has `integrity`: give --public-key or a [signing] key to check its digests with".into(),
            ))
        }
        _ => None,
    };

    let mut jobs: Vec<(String, super::plan::KeyMatch, Option<Entry>)> = Vec::new();
    let mut present: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (key, kind) in &listed {
        let Some(m) = wanted(key) else { continue };
        present.insert(key.as_str());
        s.objects_selected += 1;
        if *kind != Kind::File {
            s.objects_skipped += 1;
            s.problems.push(Problem {
                kind: "unreadable".into(),
                key: key.clone(),
                batch_id: None,
                detail: "a symbolic link, FIFO or device where an object should be; not followed"
                    .into(),
            });
            continue;
        }
        let entry = entries.as_ref().and_then(|e| e.get(key).cloned());
        if entries.is_some() && entry.is_none() {
            s.objects_unverified += 1;
            s.problems.push(Problem {
                kind: "unverified".into(),
                key: key.clone(),
                batch_id: None,
                detail: if req.allow_unverified {
                    "in no signed digest (foreign, or written after the last digest); read because of --allow-unverified".into()
                } else {
                    "in no signed digest (foreign, or written after the last digest); left out".into()
                },
            });
            if !req.allow_unverified {
                s.objects_skipped += 1;
                continue;
            }
        }
        jobs.push((key.clone(), m, entry));
    }
    // Listed in a digest, selected, and not in the archive.
    if let Some(entries) = &entries {
        let mut missing: Vec<&Entry> = entries
            .values()
            .filter(|e| e.dead_letter.is_none() && !present.contains(e.key.as_str()))
            .filter(|e| wanted(&e.key).is_some())
            .filter(|e| plan.prefixes.iter().any(|p| e.key.starts_with(p.as_str())))
            .collect();
        missing.sort_by(|a, b| a.key.cmp(&b.key));
        for e in missing {
            s.problems.push(Problem {
                kind: "missing".into(),
                key: e.key.clone(),
                batch_id: Some(e.batch_id.clone()),
                detail: format!(
                    "listed in a signed digest (seq {}) and not in the archive",
                    e.seq
                ),
            });
        }
    }
    jobs.sort_by(|a, b| a.0.cmp(&b.0));
    // Tenant-hours a signed shredding receipt erased: a key missing otherwise was deleted.
    let attested = match (&sc.encryption, &req.public_key) {
        (Some(e), Some(pk)) => {
            let ledger = handle
                .block_on(crate::encryption::store(sc, false))
                .map_err(setup)?;
            handle.block_on(attested(&ledger, &e.ledger_prefix, pk, &sc.name))
        }
        _ => HashSet::new(),
    };

    let place = |h: &logferry_vault::crypt::Header, path: &str| {
        crate::encryption::check_object_place(
            &sc.key,
            &sc.name,
            sc.encryption.as_ref().map(|e| e.tenant_field.as_str()),
            h,
            path,
        )
        .map_err(|e| e.to_string())
    };
    let parquet = sc.parquet.is_some();
    // The sources' own bound on a record (with room for what wrapping adds), at least 64 MiB.
    let max_record = cfg
        .sources
        .iter()
        .filter(|s| s.sinks.contains(&sc.name))
        .map(|s| s.max_record_bytes.max(s.max_line_bytes))
        .max()
        .unwrap_or(0)
        .saturating_mul(2)
        .max(64 << 20);
    let n = req.concurrency.clamp(1, MAX_CONCURRENCY);
    let mut failed_output: Option<std::io::Error> = None;
    std::thread::scope(|scope| {
        let mut pending: std::collections::VecDeque<Receiver<Msg>> = Default::default();
        let mut next = 0;
        loop {
            while failed_output.is_none() && pending.len() < n && next < jobs.len() {
                let (tx, rx) = sync_channel::<Msg>(PIECES);
                let (key, m, entry) = &jobs[next];
                let work = Work {
                    key,
                    m,
                    entry: entry.as_ref(),
                    store: &store,
                    keys: keys.as_deref(),
                    place: &place,
                    parquet,
                    compression: sc.compression,
                    // What logferry writes is about a batch's bytes, compressed or sealed.
                    max_unlisted: sc.max_bytes.saturating_mul(2).saturating_add(1 << 20),
                    max_record,
                    req,
                    handle,
                };
                let mut filter = req.filter.clone();
                scope.spawn(move || work.run(&mut filter, tx));
                pending.push_back(rx);
                next += 1;
            }
            let Some(rx) = pending.pop_front() else { break };
            for msg in rx {
                match msg {
                    Msg::Piece(p) => {
                        if failed_output.is_none() {
                            if let Err(e) = out.write_all(&p) {
                                failed_output = Some(e);
                            }
                        }
                    }
                    Msg::Problem(p) => {
                        s.objects_unverified += 1;
                        s.problems.push(p);
                    }
                    Msg::Done(key, stored, res) => {
                        s.bytes_read += stored;
                        if let Some(p) = &req.progress {
                            p(stored);
                        }
                        tally(&mut s, &attested, key, res);
                    }
                }
            }
            if failed_output.is_some() {
                // Later objects' channels are dropped: their workers stop at their next piece.
                pending.clear();
            }
        }
    });
    // Records were read all the same: the summary (and the receipt) says what, and how the
    // output failed.
    s.output_error = failed_output.map(|e| e.to_string());
    s.complete = s.problems.is_empty() && s.output_error.is_none();
    Ok(s)
}

fn tally(
    s: &mut Summary,
    attested: &HashSet<String>,
    key: String,
    res: Result<(Counts, Option<String>), (ObjectError, Option<String>)>,
) {
    match res {
        Ok((c, _)) => {
            s.objects_read += 1;
            s.records += c.records;
            s.bytes += c.bytes;
            s.keys_used.extend(c.key);
        }
        Err((
            ObjectError::Erased {
                tenant,
                hour,
                key_id,
            },
            batch_id,
        )) if !attested.contains(&key_id) => {
            s.objects_skipped += 1;
            s.problems.push(Problem {
                kind: "key_missing".into(),
                key,
                batch_id,
                detail: format!("the key of tenant {tenant:?} hour {hour} is not in the ledger and no signed shredding receipt erased it: deleted without a trace"),
            });
        }
        Err((ObjectError::Erased { tenant, hour, .. }, _)) => {
            s.objects_erased += 1;
            s.erased.push(Erased { key, tenant, hour });
        }
        Err((e, batch_id)) => {
            s.objects_skipped += 1;
            let (kind, detail) = match e {
                ObjectError::Unreadable(d) if d.starts_with("refused:") => ("misplaced", d),
                ObjectError::Unreadable(d) if d.starts_with("modified:") => {
                    ("modified", d.trim_start_matches("modified: ").to_string())
                }
                ObjectError::Unreadable(d) if d.starts_with("missing:") => {
                    ("missing", d.trim_start_matches("missing: ").to_string())
                }
                other => ("unreadable", other.to_string()),
            };
            s.problems.push(Problem {
                kind: kind.into(),
                key,
                batch_id,
                detail,
            });
        }
    }
}

enum Msg {
    Piece(Vec<u8>),
    /// Something to report about an object that is read all the same.
    Problem(Problem),
    /// The object's key, its stored size, and what reading it gave.
    Done(
        String,
        u64,
        Result<(Counts, Option<String>), (ObjectError, Option<String>)>,
    ),
}

struct Work<'a> {
    key: &'a str,
    m: &'a super::plan::KeyMatch,
    entry: Option<&'a Entry>,
    store: &'a Arc<dyn LedgerStore>,
    keys: Option<&'a KeyRing>,
    place: &'a (dyn Fn(&logferry_vault::crypt::Header, &str) -> Result<(), String> + Sync),
    parquet: bool,
    compression: logferry_sink::Compression,
    /// The largest object read that no digest gives the size of.
    max_unlisted: u64,
    /// The longest record read.
    max_record: usize,
    req: &'a Request,
    handle: &'a tokio::runtime::Handle,
}

impl Work<'_> {
    fn run(self, filter: &mut Filter, tx: SyncSender<Msg>) {
        let batch_id = self.entry.map(|e| e.batch_id.clone());
        let mut stored = 0;
        let res = self
            .read(filter, &tx, &mut stored)
            .map(|c| (c, batch_id.clone()))
            .map_err(|e| (e, batch_id));
        let _ = tx.send(Msg::Done(self.key.to_string(), stored, res));
    }

    fn read(
        &self,
        filter: &mut Filter,
        tx: &SyncSender<Msg>,
        stored: &mut u64,
    ) -> Result<Counts, ObjectError> {
        let max = self.entry.map_or(self.max_unlisted, |e| e.bytes);
        let bytes = match self.handle.block_on(self.store.get(self.key, max)) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(ObjectError::Unreadable(
                    "missing: it was listed and is gone".into(),
                ))
            }
            Err(e) if e.is_too_large() && self.entry.is_some() => {
                return Err(ObjectError::Unreadable(format!(
                    "modified: larger than the {max} bytes its digest lists"
                )))
            }
            Err(e) => return Err(ObjectError::Unreadable(e.to_string())),
        };
        *stored = bytes.len() as u64;
        if let Some(e) = self.entry {
            let sha = chain::sha256_hex(&bytes);
            if sha != e.sha256 {
                let detail = format!(
                    "its bytes are not the ones its digest lists (sha256 {sha}, listed {}, seq {})",
                    e.sha256, e.seq
                );
                if !self.req.allow_unverified {
                    return Err(ObjectError::Unreadable(format!("modified: {detail}")));
                }
                // Read all the same, and said.
                let _ = tx.send(Msg::Problem(Problem {
                    kind: "modified".into(),
                    key: self.key.to_string(),
                    batch_id: Some(e.batch_id.clone()),
                    detail: format!("{detail}; read because of --allow-unverified"),
                }));
            }
        }
        let how = Reading {
            compression: self.compression,
            parquet: self.parquet,
            keys: self.keys,
            place: self.place,
            from: self.req.from,
            to: self.req.to,
            whole: self.m.start >= self.req.from && self.m.end <= self.req.to,
            unit_start: self.m.start,
            sealed_only: self.keys.is_some(),
            max_record: self.max_record,
        };
        let mut piece: Vec<u8> = Vec::with_capacity(PIECE);
        let mut send = |b: &[u8]| -> std::io::Result<()> {
            piece.extend_from_slice(b);
            if piece.len() >= PIECE {
                let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE));
                tx.send(Msg::Piece(full))
                    .map_err(|_| std::io::Error::other("the export stopped"))?;
            }
            Ok(())
        };
        let counts = read_object(self.key, bytes, &how, filter, self.handle, &mut send)?;
        if !piece.is_empty() {
            tx.send(Msg::Piece(piece))
                .map_err(|_| ObjectError::Output(std::io::Error::other("the export stopped")))?;
        }
        Ok(counts)
    }
}
