//! `run --once` on a backlog: a progress bar while it runs (on a terminal, with text logs) and
//! a summary of what was read and shipped where when it ends, as text and as one JSON log
//! line. The numbers are the process's own metrics, so they agree with `/metrics`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, LogFormat};
use crate::ops::metrics::Metrics;

/// What a source could not read to its end (`run --once`): files and bytes. Defined here, not
/// in `source`, so that ops reads nothing from the sources: they report into it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct SourceTotals {
    pub source: String,
    pub files: u64,
    pub records: u64,
    pub bytes: u64,
    /// Files, and their bytes, that could not be read to their end.
    pub files_left: u64,
    pub bytes_left: u64,
}

#[derive(Debug, Serialize)]
pub struct SinkTotals {
    pub sink: String,
    pub batches: u64,
    pub records: u64,
    pub bytes_sent: u64,
    pub dead_lettered: u64,
    pub retries: u64,
    /// Records the destination refused inside accepted requests (an OTLP partial success).
    pub rejected: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub elapsed_seconds: f64,
    /// Every matched file read to its end and every batch delivered.
    pub complete: bool,
    pub read_mb_per_second: f64,
    pub sources: Vec<SourceTotals>,
    pub sinks: Vec<SinkTotals>,
}

/// The totals of this process so far.
/// `finished`: the run ended by itself with everything read, delivered or counted (the exit
/// code's verdict); a run cut short by a stop, a deadline or an error is not complete, whatever
/// its counters say.
pub fn summary(
    cfg: &Config,
    m: &Metrics,
    elapsed: Duration,
    left: &[(String, Left)],
    finished: bool,
) -> Summary {
    let sources: Vec<SourceTotals> = cfg
        .sources
        .iter()
        .map(|s| {
            let l = m.source(&s.name);
            let (files_left, bytes_left) = left
                .iter()
                .find(|(n, _)| *n == s.name)
                .map_or((0, 0), |(_, l)| (l.files, l.bytes));
            SourceTotals {
                files_left,
                bytes_left,
                source: s.name.clone(),
                files: m.files_found.get_or_create(&l).get(),
                records: m.records_read.get_or_create(&l).get(),
                bytes: m.bytes_read.get_or_create(&l).get(),
            }
        })
        .collect();
    let sinks: Vec<SinkTotals> = cfg
        .sinks
        .iter()
        .map(|s| {
            let l = m.sink(&s.name);
            SinkTotals {
                sink: s.name.clone(),
                batches: m.batches_sent.get_or_create(&l).get(),
                records: m.records_sent.get_or_create(&l).get(),
                bytes_sent: m.bytes_sent.get_or_create(&l).get(),
                dead_lettered: m.dead_letter_batches.get_or_create(&l).get(),
                retries: m.retries.get_or_create(&l).get(),
                rejected: m.records_rejected.get_or_create(&l).get(),
            }
        })
        .collect();
    let secs = elapsed.as_secs_f64();
    let read: u64 = sources.iter().map(|s| s.bytes).sum();
    let complete = finished
        && sources.iter().all(|s| s.files_left == 0)
        && sinks.iter().all(|s| s.dead_lettered == 0);
    Summary {
        complete,
        elapsed_seconds: (secs * 1000.0).round() / 1000.0,
        read_mb_per_second: if secs > 0.0 {
            ((read as f64 / 1e6 / secs) * 10.0).round() / 10.0
        } else {
            0.0
        },
        sources,
        sinks,
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "run --once {} in {:.1} s ({} MB/s read)",
            if self.complete {
                "finished"
            } else {
                "did NOT finish"
            },
            self.elapsed_seconds,
            self.read_mb_per_second
        )?;
        for s in &self.sources {
            writeln!(
                f,
                "  source {:<12} {} files, {} records, {:.1} MB read",
                s.source,
                s.files,
                s.records,
                s.bytes as f64 / 1e6
            )?;
            if s.files_left > 0 {
                writeln!(
                    f,
                    "         {:<12} LEFT UNREAD: {} files, {} bytes",
                    "", s.files_left, s.bytes_left
                )?;
            }
        }
        for s in &self.sinks {
            writeln!(
                f,
                "  sink   {:<12} {} batches, {} records, {:.1} MB sent, {} dead-lettered, {} retries{}",
                s.sink,
                s.batches,
                s.records,
                s.bytes_sent as f64 / 1e6,
                s.dead_lettered,
                s.retries,
                if s.rejected > 0 {
                    format!(", {} records refused by the destination (partial success)", s.rejected)
                } else {
                    String::new()
                }
            )?;
        }
        Ok(())
    }
}

/// Writes the summary: as text on stderr with text logs, and always as one log line.
pub fn report(
    cfg: &Config,
    m: &Metrics,
    elapsed: Duration,
    left: &[(String, Left)],
    finished: bool,
) {
    let s = summary(cfg, m, elapsed, left, finished);
    let json = serde_json::to_string(&s).unwrap_or_default();
    tracing::info!(summary = %json, "run --once summary");
    if cfg.log_format == LogFormat::Text {
        eprint!("{}", logferry_sink::redact::text(&s.to_string()));
    }
}

/// A bar on stderr while `--once` runs: bytes read of what there is to read (read so far
/// plus what the files hold beyond), records per second, time left. Only on a terminal with
/// text logs; `None` otherwise.
pub fn bar(cfg: &Config, m: Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.log_format != LogFormat::Text || !std::io::stderr().is_terminal() {
        return None;
    }
    let names: Vec<String> = cfg.sources.iter().map(|s| s.name.clone()).collect();
    let style =
        indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} eta {eta}")
            .ok()?;
    let pb = indicatif::ProgressBar::new(0).with_style(style);
    let started = Instant::now();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let (mut read, mut unread, mut records) = (0u64, 0u64, 0u64);
            for n in &names {
                let l = m.source(n);
                read += m.bytes_read.get_or_create(&l).get();
                unread += m.unread_bytes.get_or_create(&l).get().max(0) as u64;
                records += m.records_read.get_or_create(&l).get();
            }
            pb.set_length(read + unread);
            pb.set_position(read);
            let rate = records as f64 / started.elapsed().as_secs_f64().max(0.001);
            pb.set_message(format!("{records} records, {rate:.0} records/s"));
        }
    }))
}
