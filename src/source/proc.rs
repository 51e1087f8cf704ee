//! Decoding, masking and batching of one source's lines: the part of a source that sees
//! records (decode -> mask -> batch), run on the source's thread.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tracing::{error, warn};

use super::file;
use crate::ack::Ticket;
use crate::batch::{Batcher, ChannelOutlet};
use crate::decode::Decoder;
use crate::mask::Masker;

pub(super) struct Counters {
    pub(super) records: Counter,
    pub(super) bytes: Counter,
    pub(super) truncated_lines: Counter,
    pub(super) parse_errors: Counter,
    pub(super) invalid_utf8: Counter,
    pub(super) files_open: Gauge,
    pub(super) rotated: Counter,
    pub(super) truncated_files: Counter,
    pub(super) drained: Counter,
    pub(super) unread: Gauge,
    pub(super) file_unread:
        prometheus_client::metrics::family::Family<crate::ops::metrics::FileLabel, Gauge>,
    pub(super) checkpoint_failures: Counter,
    pub(super) oversize: Counter,
    pub(super) time_unparsed: Counter,
    pub(super) refused: Counter,
    pub(super) found: Counter,
    pub(super) unreadable: Gauge,
}

/// Decoding and batching: the part of the source that sees records.
pub(super) struct Proc {
    pub(super) decoder: Decoder,
    pub(super) masker: Option<Masker>,
    pub(super) batchers: Vec<Batcher<ChannelOutlet>>,
    pub(super) c: Counters,
    // Per-chunk tallies, added to the counters once per chunk.
    pub(super) n_records: u64,
    pub(super) n_truncated: u64,
    pub(super) n_parse: u64,
    pub(super) n_utf8: u64,
    pub(super) n_oversize: u64,
    pub(super) n_time_unparsed: u64,
    /// When an unparseable timestamp was last logged (once a minute per source).
    pub(super) time_warned: Option<Instant>,
    pub(super) failed: bool,
    /// Oversize records are not shipped (written whole to the dead-letter folder, or dropped).
    pub(super) hold_oversize: bool,
    pub(super) source: String,
    pub(super) warned_parse: bool,
    pub(super) warned_spill: bool,
}

impl Proc {
    pub(super) fn line(
        &mut self,
        line: file::Line<'_>,
        fp: u64,
        ticket: &Ticket,
        now: chrono::DateTime<chrono::Utc>,
    ) {
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
            // Keys and partitions come from the masked record, never from the original: the
            // masker hands them over.
            let Some(m) = &mut self.masker else { return };
            let (out, values, t) = m.masked(d.values, d.time);
            let time = t.unwrap_or(now);
            self.batchers
                .iter_mut()
                .try_for_each(|b| b.add(out, values, time, ticket))
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

    pub(super) fn flush_counts(&mut self) {
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
