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
mod scan;
mod walk;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
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

/// A flag with a wait: set once to ask the source threads to stop.
#[derive(Default)]
pub struct Signal {
    set: Mutex<bool>,
    cv: Condvar,
    /// Source threads asleep on file events, woken when the signal is set.
    wakers: Mutex<Vec<watch::Waker>>,
}

impl Signal {
    pub fn set(&self) {
        if let Ok(mut s) = self.set.lock() {
            *s = true;
        }
        self.cv.notify_all();
        if let Ok(w) = self.wakers.lock() {
            w.iter().for_each(watch::Waker::wake);
        }
    }
    /// Wakes `w` when the signal is set (at once if it is already).
    fn on_set(&self, w: watch::Waker) {
        if let Ok(mut ws) = self.wakers.lock() {
            ws.push(w.clone());
        }
        if self.is_set() {
            w.wake();
        }
    }
    pub fn is_set(&self) -> bool {
        self.set.lock().map(|s| *s).unwrap_or(true)
    }
    /// Waits up to `d`; returns whether the signal is set.
    pub fn wait(&self, d: Duration) -> bool {
        let Ok(guard) = self.set.lock() else {
            return true;
        };
        match self.cv.wait_timeout_while(guard, d, |s| !*s) {
            Ok((g, _)) => *g,
            Err(_) => true,
        }
    }
}

struct Counters {
    records: Counter,
    bytes: Counter,
    truncated_lines: Counter,
    parse_errors: Counter,
    invalid_utf8: Counter,
    files_open: Gauge,
    rotated: Counter,
    truncated_files: Counter,
    drained: Counter,
    unread: Gauge,
    file_unread: prometheus_client::metrics::family::Family<crate::ops::metrics::FileLabel, Gauge>,
    checkpoint_failures: Counter,
    oversize: Counter,
    time_unparsed: Counter,
    refused: Counter,
    found: Counter,
}

/// Decoding and batching: the part of the source that sees records.
struct Proc {
    decoder: Decoder,
    masker: Option<Masker>,
    /// The key fields of records that masking changed (a second extractor, not the decoder).
    masked_fields: crate::fields::Fields,
    batchers: Vec<Batcher<ChannelOutlet>>,
    c: Counters,
    // Per-chunk tallies, added to the counters once per chunk.
    n_records: u64,
    n_truncated: u64,
    n_parse: u64,
    n_utf8: u64,
    n_oversize: u64,
    n_time_unparsed: u64,
    /// When an unparseable timestamp was last logged (once a minute per source).
    time_warned: Option<Instant>,
    failed: bool,
    /// Oversize records are not shipped (written whole to the dead-letter folder, or dropped).
    hold_oversize: bool,
    source: String,
    warned_parse: bool,
    warned_spill: bool,
}

impl Proc {
    fn line(&mut self, line: file::Line<'_>, fp: u64, ticket: &Ticket, now: chrono::DateTime<Utc>) {
        if self.failed {
            return;
        }
        self.n_records += 1;
        if let file::Cut::Oversize { total, spilled } = &line.cut {
            self.n_oversize += 1;
            match spilled {
                Some(Ok(_)) => return,
                None if self.hold_oversize => return, // memory mode: nothing on disk
                // Never shipped raw: the stand-in goes instead, and the operator is told.
                Some(Err(e)) if !self.warned_spill => {
                    self.warned_spill = true;
                    error!(source = %self.source, offset = line.offset, bytes = total, error = %e,
                        "cannot write an oversize record to the dead-letter folder; shipped its redacted stand-in instead (logged once)");
                }
                _ => {}
            }
        }
        let redact_unparsable = self.decoder.redact_unparsable;
        let d = self
            .decoder
            .decode(line.bytes, line.truncated_from(), (fp, line.offset));
        self.n_truncated += line.truncated_from().is_some() as u64;
        self.n_parse += d.flags.parse_error as u64;
        self.n_utf8 += d.flags.invalid_utf8 as u64;
        if d.flags.time_unparsed {
            self.n_time_unparsed += 1;
            if self
                .time_warned
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                self.time_warned = Some(Instant::now());
                // The value's shape, never the value: a timestamp field can hold anything.
                let shape = crate::timefmt::shape(d.time_raw.unwrap_or_default());
                warn!(source = %self.source, offset = line.offset, %shape, "a timestamp is in no format logferry understands; the record is filed under its read time (logged at most once a minute, counted in timestamp_unparsed_total; see timestamp_field in docs/pipeline.md)");
            }
        }
        if d.flags.parse_error && !self.warned_parse {
            self.warned_parse = true;
            let how = if redact_unparsable {
                "shipped as [REDACTED:unparsable]: field rules cannot see into it"
            } else {
                "wrapped as a message"
            };
            warn!(source = %self.source, offset = line.offset, "a line is not one JSON object; {how} (logged once per source, counted in parse_errors_total)");
        }
        let masked = match &mut self.masker {
            Some(m) => m.mask(d.record),
            None => false,
        };
        let res = if masked {
            // Keys and partitions come from the masked record, never from the original: when
            // masking reached a key field, its values are read again from the masked output.
            let Some(m) = &self.masker else { return };
            let (values, t) = if m.key_fields_changed() {
                self.masked_fields.extract(m.output());
                (self.masked_fields.values(), self.masked_fields.time())
            } else {
                (d.values, d.time)
            };
            let time = t.unwrap_or(now);
            self.batchers
                .iter_mut()
                .try_for_each(|b| b.add(m.output(), values, time, ticket))
        } else {
            let time = d.time.unwrap_or(now);
            self.batchers
                .iter_mut()
                .try_for_each(|b| b.add(d.record, d.values, time, ticket))
        };
        if res.is_err() {
            // Shutting down: the chunk stays unacknowledged and is read again next run.
            self.failed = true;
        }
    }

    fn flush_counts(&mut self) {
        self.c.records.inc_by(std::mem::take(&mut self.n_records));
        self.c
            .truncated_lines
            .inc_by(std::mem::take(&mut self.n_truncated));
        self.c
            .parse_errors
            .inc_by(std::mem::take(&mut self.n_parse));
        self.c.invalid_utf8.inc_by(std::mem::take(&mut self.n_utf8));
        self.c.oversize.inc_by(std::mem::take(&mut self.n_oversize));
        self.c
            .time_unparsed
            .inc_by(std::mem::take(&mut self.n_time_unparsed));
        if let Some(m) = &mut self.masker {
            m.flush_counts();
        }
    }
}

/// What every source shares with the pipeline.
pub struct SourceCtx {
    pub data_dir: PathBuf,
    /// Read every file to its end once, then stop.
    pub once: bool,
    pub stop: Arc<Signal>,
    /// Set at the shutdown deadline: stop waiting for batches to become durable.
    pub abandon: tokio::sync::watch::Receiver<bool>,
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

/// What a source could not read to its end (`run --once`): files and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub files: u64,
    pub bytes: u64,
}

/// `--once`: how long files may wait for a handle without any progress before the run
/// gives up on them (saying so).
const ONCE_STALL: Duration = Duration::from_secs(10);

pub struct Tailer {
    cfg: SourceConfig,
    once: bool,
    stop: Arc<Signal>,
    abandon: tokio::sync::watch::Receiver<bool>,
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
            stop,
            abandon,
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
        };
        let watch = watch::Watch::new();
        stop.on_set(watch.waker());
        Ok(Tailer {
            cfg,
            once,
            stop,
            abandon,
            files: BTreeMap::new(),
            saved: entries.into_iter().map(|e| (e.id, e)).collect(),
            ckpt,
            ckpt_interval,
            health,
            ckpt_failures: 0,
            dirty: false,
            acks_pending: false,
            proc: Proc {
                masked_fields: decoder.extractor(),
                masker: masker.map(|mut m| {
                    m.watch_fields(decoder.extractor().paths());
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
            by_path: HashMap::new(),
            reindex: false,
            events_ok: false,
        })
    }

    /// Runs until stopped (or, with `--once`, until every file is read); returns what was
    /// left unread.
    pub fn run(mut self) -> Left {
        let name = self.cfg.name.clone();
        // A fault hook for the tests of "a panic is never a clean exit"; not in release builds.
        #[cfg(debug_assertions)]
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
            if self.stop.is_set() || self.proc.failed {
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
                if self.stop.is_set() {
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
            if !pending || *self.abandon.borrow() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc.flush_counts();
    }

    /// Marks the files the events say were written to.
    fn poke(&mut self, news: &mut watch::News) {
        if std::mem::take(&mut news.all_grown) {
            news.grown.clear();
            for f in self.files.values_mut() {
                f.poked = true;
            }
            return;
        }
        for p in news.grown.drain(..) {
            if let Some(f) = self.by_path.get(&p).and_then(|k| self.files.get_mut(k)) {
                f.poked = true;
            }
        }
    }

    /// Gives every open file one chunk: those not known to be at their end, those an event
    /// named, and with `sweep` all of them. Returns whether anything was read.
    fn read_round(&mut self, sweep: bool) -> bool {
        let mut progressed = false;
        let limit = &self.limit;
        let name = &self.cfg.name;
        let mut unpositioned = false;
        for f in self.files.values_mut() {
            if f.file.is_none() {
                continue;
            }
            if !f.positioned {
                // Truncated, or found, before it had a whole first line: identified below.
                unpositioned = true;
                continue;
            }
            // A rotated file is always looked at: it is closed once it stayed at its end for
            // rotate_wait, which must not rest on an old look.
            if f.at_eof && !f.poked && !sweep && matches!(f.state, State::Live) {
                continue;
            }
            f.poked = false;
            match f.check_truncated() {
                Ok(true) => {
                    self.proc.c.truncated_files.inc();
                    info!(source = %name, path = %f.path.display(), "file truncated; reading it from the start");
                    f.positioned = f.fp.is_some();
                    if !f.positioned {
                        continue;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    if let Some(held) = self.repeats.allow(&format!("stat {}", f.path.display())) {
                        warn!(source = %name, path = %f.path.display(), error = %e, repeated = held, "cannot stat file");
                    }
                    continue;
                }
            }
            let Some(fp) = f.fp else { continue };
            // The size was just read: a file no longer than our offset has nothing to read
            // (what a read would say, without a read).
            if f.read_pos >= f.last_size {
                f.at_eof = true;
                continue;
            }
            let now = Utc::now();
            let proc = &mut self.proc;
            let over_before = f.over_limit;
            // The chunk is acknowledged in pieces of ACK_GRAIN: a checkpoint can move past the
            // first records of a chunk while its last ones are still in an open batch, so a
            // crash sends again at most a piece, not a whole chunk.
            let mut ticket = Ticket::new();
            let mut piece_from = f.consumed;
            let mut pieces: Vec<(u64, Ticket)> = Vec::new();
            let res = f.read_lines(CHUNK, limit, &mut self.read_buf, |l| {
                if l.offset >= piece_from + ACK_GRAIN {
                    pieces.push((l.offset, std::mem::take(&mut ticket)));
                    piece_from = l.offset;
                }
                proc.line(l, fp, &ticket, now)
            });
            if f.consumed > piece_from {
                pieces.push((f.consumed, std::mem::take(&mut ticket)));
            }
            for (end, t) in pieces {
                f.pending.push_back((end, Ticket::clone_for_queue(&t)));
                // A piece whose records were not all taken (shutting down) never counts as done.
                if !proc.failed {
                    t.seal().release();
                }
            }
            if over_before == 0 && f.over_limit > 0 {
                let what = match (limit.digest, &limit.spill_dir, &limit.seal) {
                    (false, _, _) => "cut at max_line_bytes and kept".to_string(),
                    (true, None, _) if proc.hold_oversize => {
                        "dropped (a sink keeps nothing on disk)".to_string()
                    }
                    (true, None, _) => {
                        "shipped as a redacted stand-in with its size and SHA-256".to_string()
                    }
                    (true, Some(_), None) => {
                        "written whole to the dead-letter folder, not shipped".to_string()
                    }
                    (true, Some(_), Some(seal)) => format!(
                        "written whole to the dead-letter folder, sealed under sink {}'s spool key (`logferry decrypt --sink {}` reads it), not shipped",
                        seal.sink, seal.sink
                    ),
                };
                warn!(source = %name, path = %f.path.display(), limit = limit.max, "a record is over the size limit; {what} (logged once per file, counted)");
            }
            if let Some(g) = &f.lag {
                g.1.set(f.unread() as i64);
            }
            match res {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    proc.c.bytes.inc_by(n as u64);
                    proc.flush_counts();
                }
                Err(e) => {
                    if let Some(held) = self.repeats.allow(&format!("read {}", f.path.display())) {
                        warn!(source = %name, path = %f.path.display(), error = %e, repeated = held, "read failed; will retry")
                    }
                }
            }
        }
        if progressed {
            self.acks_pending = true;
            let unread: u64 = self.files.values().map(|f| f.unread()).sum();
            self.proc.c.unread.set(unread as i64);
        }
        if unpositioned {
            self.position_new();
        }
        progressed
    }

    /// Closes rotated or deleted files that stayed at their end for `rotate_wait`, and forgets
    /// them once everything read from them is durable.
    fn close_drained(&mut self) {
        let wait = if self.once {
            Duration::ZERO
        } else {
            self.cfg.rotate_wait
        };
        let mut forget = Vec::new();
        for (k, f) in self.files.iter_mut() {
            if !matches!(f.state, State::Gone) {
                continue;
            }
            if f.file.is_some() && f.at_eof && f.last_growth.elapsed() >= wait {
                f.file = None;
                self.proc.c.drained.inc();
                debug!(source = %self.cfg.name, path = %f.path.display(), "rotated file drained and closed");
            }
            if f.file.is_none() && f.pending.is_empty() {
                forget.push(*k);
            }
        }
        for k in forget {
            if let Some(lag) = self.files.remove(&k).and_then(|f| f.lag) {
                self.proc.c.file_unread.remove(&lag.0);
            }
            self.dirty = true;
            self.reindex = true;
        }
    }

    fn checkpoint(&mut self) {
        let mut moved = false;
        let mut pending = false;
        for f in self.files.values_mut() {
            moved |= f.advance();
            pending |= !f.pending.is_empty();
        }
        self.acks_pending = pending;
        if !moved && !self.dirty {
            return;
        }
        let entries: Vec<Entry> = self
            .files
            .values()
            .filter_map(|f| {
                Some(Entry {
                    id: f.id()?,
                    offset: f.committed,
                    path: f.path.clone(),
                })
            })
            .chain(
                // Kept until used: before the first scan, and for files still waiting to be
                // opened and identified (their offsets must survive a crash meanwhile).
                self.saved
                    .values()
                    .filter(|e| {
                        !self.first_scan_done
                            || self
                                .files
                                .get(&(e.id.dev, e.id.ino))
                                .is_some_and(|f| !f.positioned)
                    })
                    .cloned(),
            )
            .collect();
        for f in self.files.values() {
            tracing::trace!(source = %self.cfg.name, path = %f.path.display(), committed = f.committed, consumed = f.consumed, pending = f.pending.len(), "checkpoint");
        }
        match self.ckpt.save(&entries) {
            Ok(()) => {
                self.dirty = false;
                if self.ckpt_failures > 0 {
                    info!(source = %self.cfg.name, failures = self.ckpt_failures, "checkpoint writes succeed again");
                    self.ckpt_failures = 0;
                    self.health.checkpoint_ok(&self.cfg.name);
                }
            }
            Err(e) => {
                // Retried at the next interval; the offsets only lag, the records are not lost
                // (a restart meanwhile sends the unrecorded part again).
                self.proc.c.checkpoint_failures.inc();
                self.health
                    .checkpoint_failing(&self.cfg.name, &e.to_string());
                self.ckpt_failures += 1;
                if self.ckpt_failures == 1 || self.ckpt_failures % 20 == 0 {
                    error!(source = %self.cfg.name, error = %e, failures = self.ckpt_failures, "cannot write checkpoint; retrying at the next interval (counted in checkpoint_write_failures_total)");
                }
            }
        }
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
