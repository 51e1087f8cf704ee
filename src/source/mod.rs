//! The tail source: finds files, follows them through rotation and truncation, cuts what it
//! reads into acknowledged chunks and checkpoints only what is durable.
//!
//! One OS thread per source runs [`Tailer::run`]: reading is blocking I/O, and keeping decode and
//! batching on the same thread means no per-record channel or lock.

pub mod checkpoint;
pub mod fds;
mod file;
mod links;
mod long_line;
mod oversize;
mod proc;
mod read;
mod scan;
mod unreadable;
mod walk;
mod watch;

pub use unreadable::unreadable_folders;

use crate::shutdown::{Phase, Shutdown};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{debug, error, info, warn};

use crate::ack::Ticket;
use crate::batch::{Batcher, ChannelOutlet};
use crate::config::{ReadFrom, SourceConfig};
use crate::decode::Decoder;
use crate::mask::Masker;
use crate::ops::metrics::Metrics;
use checkpoint::{Checkpoints, Entry, FileId};
use file::{State, Tailed};
pub use long_line::SpillSeal;
use proc::{Counters, Proc};

/// Bytes read from one file before the next file gets its turn.
const CHUNK: usize = 256 * 1024;
/// Read progress is acknowledged (and so checkpointed) in pieces of at most this many bytes.
const ACK_GRAIN: u64 = 64 * 1024;
/// How long an idle source sleeps before looking for growth again.
const POLL: Duration = Duration::from_millis(100);
/// With file events, files at their end are looked at only when an event names them, and
/// all of them once per this sweep (events can be missed: network file systems, a lost
/// queue). Without events every poll looks at every open file.
const IDLE_SWEEP: Duration = Duration::from_secs(1);
/// The shortest idle wait: a timer already due does not spin the loop.
const MIN_WAIT: Duration = Duration::from_millis(5);
/// With file events on every include directory, the full scan (glob, a stat per file)
/// runs on events and at least this often, not every `glob_interval`.
const FULL_SCAN: Duration = Duration::from_secs(30);

/// What every source shares with the pipeline.
pub struct SourceCtx {
    pub data_dir: PathBuf,
    /// Read every file to its end once, then stop.
    pub once: bool,
    /// `Stop`: seal what is held and end; `Abandon`: stop waiting for batches to become
    /// durable.
    pub shutdown: Shutdown,
    pub ckpt_interval: Duration,
    pub health: Arc<crate::ops::health::Health>,
    /// A sink of this source keeps nothing on disk (`buffer = "memory"`).
    pub zero_retention: bool,
    /// Credential and key files of the configuration: never read as logs.
    pub credentials: Vec<PathBuf>,
    /// Folders logferry keeps its own files in (data_dir, directory sinks' key ledgers,
    /// receipts and digests): never read as logs.
    pub private_dirs: Vec<PathBuf>,
    /// A sink of this source seals its spool: oversize records are spilled sealed like it.
    pub spill_seal: Option<SpillSeal>,
}

/// What a source could not read to its end (`run --once`), reported by `ops::progress`.
pub use crate::ops::progress::Left;

/// `--once`: how long files may wait for a handle without any progress before the run
/// gives up on them (saying so).
const ONCE_STALL: Duration = Duration::from_secs(10);

pub struct Tailer {
    cfg: SourceConfig,
    once: bool,
    shutdown: Shutdown,
    files: BTreeMap<(u64, u64), Tailed>,
    saved: HashMap<FileId, Entry>,
    ckpt: Checkpoints,
    ckpt_interval: Duration,
    health: Arc<crate::ops::health::Health>,
    /// Checkpoint writes failed in a row (logged on the first and every 20th).
    ckpt_failures: u32,
    dirty: bool,
    /// Read pieces not yet delivered: checkpoints have something to wait for, so an idle
    /// source wakes at `ckpt_interval` only while this holds.
    acks_pending: bool,
    proc: Proc,
    limit: file::Limit,
    first_scan_done: bool,
    /// Warnings that would repeat every poll are logged once a minute per file.
    repeats: crate::ops::Repeats,
    /// inotify on the include directories; the scan every `glob_interval` is the fallback.
    watch: watch::Watch,
    /// The include patterns, compiled: a rename out of them is a rotation to follow.
    include: Vec<glob::Pattern>,
    /// Which files may be opened (`follow_symlinks`, credentials, the data directory).
    admit: links::Admission,
    /// Paths refused by `admit`, each counted and logged once (bounded).
    refused: std::collections::HashSet<PathBuf>,
    /// The one read buffer, lent to each file for its round (files keep only their
    /// unfinished line).
    read_buf: Vec<u8>,
    /// Matched files that could not be opened (not a policy refusal), with their size: what
    /// `--once` reports as left unread when they still cannot be opened at the end.
    unopened: HashMap<PathBuf, u64>,
    /// Tracked files closed for `max_open_files` that could not be opened again (their mode
    /// changed meanwhile): counted in `paths_unreadable` too.
    unreopened: std::collections::HashSet<(u64, u64)>,
    /// Folders the last scan could not look into (the rest of `paths_unreadable`).
    hidden_folders: usize,
    /// Tracked files by path (absolute, as file events name them), rebuilt by each scan.
    by_path: HashMap<PathBuf, (u64, u64)>,
    /// Files were added, renamed or let go since `by_path` was built.
    reindex: bool,
    /// Every include directory is watched: growth is told by events.
    events_ok: bool,
}

impl Tailer {
    pub fn new(
        cfg: SourceConfig,
        ctx: SourceCtx,
        decoder: Decoder,
        masker: Option<Masker>,
        batchers: Vec<Batcher<ChannelOutlet>>,
        metrics: &Metrics,
    ) -> anyhow::Result<Tailer> {
        let SourceCtx {
            data_dir,
            once,
            shutdown,
            ckpt_interval,
            health,
            zero_retention,
            credentials,
            private_dirs,
            spill_seal,
        } = ctx;
        let admit = links::Admission::new(
            &cfg.include,
            cfg.follow_symlinks,
            &credentials,
            &private_dirs,
        );
        let dead_letter = cfg.oversize == crate::config::Oversize::DeadLetter;
        // Validated at load; a pattern that does not compile here only loses rename-following.
        let cfg_include = cfg
            .include
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        let name = cfg.name.clone();
        let limit = match cfg.format {
            crate::config::Format::Json => file::Limit {
                max: cfg.max_record_bytes,
                digest: true,
                spill_dir: (dead_letter && !zero_retention)
                    .then(|| data_dir.join("dead-letter").join("sources").join(&cfg.name)),
                seal: spill_seal,
            },
            crate::config::Format::Text => file::Limit::cut(cfg.max_line_bytes),
        };
        let ckpt = Checkpoints::new(
            data_dir
                .join("checkpoints")
                .join(format!("{}.json", cfg.name)),
        );
        let (entries, report) = ckpt
            .load()
            .map_err(|e| anyhow::anyhow!("source {}: cannot read checkpoints: {e}", cfg.name))?;
        if let Some((aside, reason)) = &report.set_aside {
            error!(source = %cfg.name, set_aside = %aside.display(), %reason,
                "checkpoint file is corrupt; moved it aside and resumed from the previous copy (records after it may be sent again)");
        } else if report.used_previous {
            warn!(source = %cfg.name, "checkpoint file missing; resumed from the previous copy");
        }
        let l = metrics.source(&cfg.name);
        let c = Counters {
            records: metrics.records_read.get_or_create(&l).clone(),
            bytes: metrics.bytes_read.get_or_create(&l).clone(),
            truncated_lines: metrics.lines_truncated.get_or_create(&l).clone(),
            parse_errors: metrics.parse_errors.get_or_create(&l).clone(),
            invalid_utf8: metrics.invalid_utf8.get_or_create(&l).clone(),
            files_open: metrics.files_open.get_or_create(&l).clone(),
            rotated: metrics.files_rotated.get_or_create(&l).clone(),
            truncated_files: metrics.files_truncated.get_or_create(&l).clone(),
            drained: metrics.files_drained.get_or_create(&l).clone(),
            unread: metrics.unread_bytes.get_or_create(&l).clone(),
            file_unread: metrics.file_unread_bytes.clone(),
            checkpoint_failures: metrics.checkpoint_failures.get_or_create(&l).clone(),
            oversize: metrics.records_oversize.get_or_create(&l).clone(),
            time_unparsed: metrics.timestamp_unparsed.get_or_create(&l).clone(),
            refused: metrics.files_refused.get_or_create(&l).clone(),
            found: metrics.files_found.get_or_create(&l).clone(),
            unreadable: metrics.paths_unreadable.get_or_create(&l).clone(),
        };
        let watch = watch::Watch::new();
        let waker = watch.waker();
        shutdown.on_stop(move || waker.wake());
        Ok(Tailer {
            cfg,
            once,
            shutdown,
            files: BTreeMap::new(),
            saved: entries.into_iter().map(|e| (e.id, e)).collect(),
            ckpt,
            ckpt_interval,
            health,
            ckpt_failures: 0,
            dirty: false,
            acks_pending: false,
            proc: Proc {
                masker: masker.map(|mut m| {
                    m.watch_fields(decoder.extractor());
                    m
                }),
                decoder,
                batchers,
                c,
                n_records: 0,
                n_truncated: 0,
                n_parse: 0,
                n_utf8: 0,
                n_oversize: 0,
                n_time_unparsed: 0,
                time_warned: None,
                failed: false,
                hold_oversize: dead_letter,
                source: name.clone(),
                warned_parse: false,
                warned_spill: false,
            },
            limit,
            first_scan_done: false,
            repeats: crate::ops::Repeats::new(Duration::from_secs(60)),
            watch,
            include: cfg_include,
            admit,
            refused: Default::default(),
            read_buf: Vec::new(),
            unopened: HashMap::new(),
            unreopened: std::collections::HashSet::new(),
            hidden_folders: 0,
            by_path: HashMap::new(),
            reindex: false,
            events_ok: false,
        })
    }

    /// Runs until stopped (or, with `--once`, until every file is read); returns what was
    /// left unread.
    pub fn run(mut self) -> Left {
        let name = self.cfg.name.clone();
        // A fault hook for the tests of "a panic is never a clean exit": only with the
        // `test-faults` feature, which only `cargo test` turns on.
        #[cfg(feature = "test-faults")]
        match std::env::var("LOGFERRY_TEST_FAULT").as_deref() {
            Ok("panic-source") => panic!("test fault: LOGFERRY_TEST_FAULT=panic-source"),
            // Held as by a read that never returns.
            Ok("stall-source") => loop {
                std::thread::park();
            },
            _ => {}
        }
        let mut next_scan = Instant::now();
        let mut next_sweep = Instant::now();
        let mut next_ckpt = Instant::now() + self.ckpt_interval;
        // Immediate scans in a row without progress (`--once` with files waiting for handles).
        let mut rescans = 0u32;
        let mut stalled: Option<Instant> = None;
        let mut news = watch::News::default();
        loop {
            let now = Instant::now();
            news.merge(self.watch.poll());
            if now >= next_scan || news.changed {
                let full = now >= next_scan;
                if full {
                    let unwatched = self.watch.follow(&self.cfg.include);
                    if unwatched > 0 {
                        debug!(source = %name, unwatched, "include directories without events (missing, or no inotify); found by the scan");
                    }
                    self.events_ok = unwatched == 0;
                }
                let renames = std::mem::take(&mut news.renames);
                news.changed = false;
                self.scan(&renames, full);
                // Only a full scan moves the next one: a steady stream of new files must not
                // put off the look at closed files for ever.
                if full {
                    next_scan = now
                        + if self.events_ok {
                            self.cfg.glob_interval.max(FULL_SCAN)
                        } else {
                            self.cfg.glob_interval
                        };
                }
            }
            self.poke(&mut news);
            let sweep = !self.events_ok || now >= next_sweep;
            if sweep {
                next_sweep = now + IDLE_SWEEP;
            }
            let mut progressed = self.read_round(sweep);
            self.close_drained();
            // Handles of files at their end go to files waiting with unread data at once, not
            // at the next scan: thousands of files are read in turns without pauses.
            if self.enforce_open_limit(false) > 0 {
                // A file without a whole first line when it was found is identified now.
                self.position_new();
                progressed = true;
            }
            if self.batch_tick(false).is_err() {
                break;
            }
            if now >= next_ckpt {
                self.checkpoint();
                next_ckpt = now + self.ckpt_interval;
            }
            if self.shutdown.reached(Phase::Stop) || self.proc.failed {
                break;
            }
            if self.once && !progressed {
                // Files closed for max_open_files still hold bytes: a scan now gives them the
                // handles of files read to their end (a few times in a row at most, so a file
                // that cannot be opened does not spin the loop).
                let waiting = self
                    .files
                    .values()
                    .any(|f| f.file.is_none() && f.unread() > 0);
                if waiting && rescans < 3 {
                    rescans += 1;
                    next_scan = now;
                    continue;
                }
                if waiting && stalled.get_or_insert(now).elapsed() > ONCE_STALL {
                    let (n, bytes) = self
                        .files
                        .values()
                        .filter(|f| f.file.is_none() && f.unread() > 0)
                        .fold((0, 0), |(n, b), f| (n + 1, b + f.unread()));
                    error!(source = %name, files = n, bytes, "run --once: files waiting for a handle could not be reopened; they are left unread (their checkpoints are right: the next run reads them)");
                    break;
                }
            } else {
                rescans = 0;
                stalled = None;
            }
            // Done when every file was read to its end: one closed for max_open_files counts
            // only once nothing of it is left unread.
            if self.once
                && !progressed
                && self.files.values().all(|f| match f.file {
                    // Open without a whole first line: nothing in it can be read yet.
                    Some(_) => f.fp.is_none() || f.at_eof,
                    None => f.unread() == 0,
                })
            {
                let limit = &self.limit;
                for f in self.files.values_mut() {
                    let Some(fp) = f.fp else { continue };
                    let ticket = Ticket::new();
                    let now = Utc::now();
                    let proc = &mut self.proc;
                    f.flush_partial(limit, |l| proc.line(l, fp, &ticket, now));
                    f.pending
                        .push_back((f.consumed, Ticket::clone_for_queue(&ticket)));
                    if !proc.failed {
                        ticket.seal().release();
                    }
                }
                break;
            }
            if !progressed {
                // Woken early by a file event or by the stop signal. With events on every
                // include directory nothing needs a look before the next sweep, scan,
                // checkpoint still waiting for acks or batch timer, so an idle source wakes
                // about once a second instead of ten times (each wake walks every file:
                // 10,000 files cost CPU).
                let wait = if self.once || !self.events_ok {
                    POLL
                } else {
                    let mut due = next_sweep.min(next_scan);
                    // Checkpoints (every 100 ms by default) walk every file: only while
                    // something read is still on its way does the wait end for them.
                    if self.acks_pending || self.dirty {
                        due = due.min(next_ckpt);
                    }
                    for b in &self.proc.batchers {
                        if let Some(t) = b.next_expiry() {
                            due = due.min(t);
                        }
                    }
                    due.saturating_duration_since(Instant::now())
                        .clamp(MIN_WAIT, IDLE_SWEEP)
                };
                news.merge(self.watch.wait(wait));
                if self.shutdown.reached(Phase::Stop) {
                    break;
                }
            }
        }
        self.finish();
        let left = self.left();
        info!(source = %name, "source stopped");
        left
    }

    /// Files with bytes not read (waiting for a handle, or never opened) and how many bytes.
    fn left(&self) -> Left {
        let mut left = Left::default();
        for f in self.files.values() {
            // Without a fingerprint (no whole first line yet) nothing of a file was read.
            let unread = if f.fp.is_some() {
                f.unread()
            } else {
                f.last_size
            };
            if unread > 0 {
                left.files += 1;
                left.bytes += unread;
            }
        }
        for size in self.unopened.values() {
            left.files += 1;
            left.bytes += size;
        }
        left
    }

    fn batch_tick(&mut self, all: bool) -> Result<(), crate::batch::ShuttingDown> {
        let now = Instant::now();
        for b in &mut self.proc.batchers {
            if all {
                b.seal_all()?
            } else {
                b.seal_expired(now)?
            }
        }
        Ok(())
    }

    /// Seals what is open, waits until everything read is durable (or the shutdown deadline),
    /// and writes the last checkpoint.
    fn finish(&mut self) {
        if self.batch_tick(true).is_err() {
            warn!(source = %self.cfg.name, "shutdown deadline reached before open batches were handed on; they will be read again at the next start");
        }
        loop {
            self.checkpoint();
            let pending = self.files.values().any(|f| !f.pending.is_empty());
            if !pending || self.shutdown.reached(Phase::Abandon) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc.flush_counts();
    }
}

/// With `read_from = end`, the end of the file can be mid-line (a writer is appending): start
/// after the last newline so the first record read is whole.
fn line_start_at_or_before(f: &Tailed, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let Some(file) = &f.file else { return offset };
    let from = offset.saturating_sub(64 * 1024);
    let mut buf = vec![0u8; (offset - from) as usize];
    match file.read_at(&mut buf, from) {
        Ok(n) => match memchr::memrchr(b'\n', &buf[..n]) {
            Some(i) => from + i as u64 + 1,
            None => offset,
        },
        Err(_) => offset,
    }
}
