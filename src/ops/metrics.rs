//! Prometheus metrics. Handles are resolved once per source and sink, so the hot path only
//! touches atomics, and never per record (sources add per chunk).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub source: String,
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MaskLabel {
    pub profile: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

macro_rules! families {
    ($( $field:ident : $kind:ident < $label:ident > = $name:literal, $help:literal; )*) => {
        pub struct Metrics {
            registry: Registry,
            sink_names: std::sync::Mutex<Vec<String>>,
            /// 1 when `/readyz` would answer 200, set at each scrape.
            pub ready: Gauge,
            $( pub $field: Family<$label, $kind>, )*
        }

        impl Metrics {
            pub fn new() -> Arc<Metrics> {
                let mut registry = Registry::with_prefix("logferry");
                let ready = Gauge::default();
                registry.register("ready", "1 when /readyz answers 200 (every stage runs, no sink failing longer than unready_after), else 0", ready.clone());
                $(
                    let $field = Family::<$label, $kind>::default();
                    registry.register($name, $help, $field.clone());
                )*
                Arc::new(Metrics { registry, sink_names: Default::default(), ready, $( $field, )* })
            }
        }
    };
}

families! {
    records_read: Counter<SourceLabel> = "records_read", "Records read from files";
    bytes_read: Counter<SourceLabel> = "bytes_read", "Bytes read from files";
    lines_truncated: Counter<SourceLabel> = "lines_truncated", "Lines longer than max_line_bytes, cut and kept";
    parse_errors: Counter<SourceLabel> = "parse_errors", "Lines that were not a JSON object, wrapped as messages ([REDACTED:unparsable] when the masking profile has field rules)";
    timestamp_unparsed: Counter<SourceLabel> = "timestamp_unparsed", "Records whose timestamp field held no time logferry understands (filed under the read time)";
    invalid_utf8: Counter<SourceLabel> = "invalid_utf8", "Lines with invalid UTF-8, replaced with U+FFFD";
    files_open: Gauge<SourceLabel> = "files_open", "Files held open";
    files_found: Counter<SourceLabel> = "files_found", "Files found and opened for reading (rotated generations included)";
    files_refused: Counter<SourceLabel> = "files_refused", "Files matched but not read: a symbolic link follow_symlinks does not allow, or a credential file";
    paths_unreadable: Gauge<SourceLabel> = "paths_unreadable", "Matched files that cannot be opened and directories of include patterns that cannot be looked into (permissions), at the last scan: their records are not read";
    files_rotated: Counter<SourceLabel> = "files_rotated", "Files renamed or deleted while tailed, drained before close";
    files_truncated: Counter<SourceLabel> = "files_truncated", "Files truncated or rewritten in place, re-read from the start";
    files_drained: Counter<SourceLabel> = "files_drained", "Rotated or deleted files read to their end and closed";
    unread_bytes: Gauge<SourceLabel> = "unread_bytes", "Bytes written to tailed files and not read yet";
    file_unread_bytes: Gauge<FileLabel> = "file_unread_bytes", "Bytes written to a tailed file and not read yet (series removed when the file is closed)";
    checkpoint_failures: Counter<SourceLabel> = "checkpoint_write_failures", "Checkpoint writes that failed";
    masked: Counter<MaskLabel> = "masked", "Values masked, per profile and rule or detector (kind=unprocessable: whole records replaced because they could not be masked)";
    batches_sealed: Counter<SinkLabel> = "batches_sealed", "Batches sealed";
    parquet_mistyped: Counter<SinkLabel> = "parquet_values_mistyped", "Values left null in a Parquet column because they did not fit its type (the record keeps them whole)";
    fields_truncated: Counter<SinkLabel> = "fields_truncated", "Field values cut to the sink's max_field_bytes (azure_monitor)";
    records_replaced: Counter<SinkLabel> = "records_replaced", "Records too large for one request even with every field cut, sent as a stub naming their size (azure_monitor)";
    records_rejected: Counter<SinkLabel> = "records_rejected", "Records a destination accepted the request of but refused (an OTLP partial success); not sent again";
    records_oversize: Counter<SourceLabel> = "records_oversize", "JSON records over max_record_bytes: shipped as a stand-in (oversize = redact) or dead-lettered whole";
    batches_sent: Counter<SinkLabel> = "batches_sent", "Batches the sink acknowledged";
    records_sent: Counter<SinkLabel> = "records_sent", "Records in acknowledged batches";
    bytes_sent: Counter<SinkLabel> = "bytes_sent", "Payload bytes in acknowledged batches";
    retries: Counter<SinkLabel> = "retries", "Attempts that failed and will be retried";
    retry_after_waits: Counter<SinkLabel> = "retry_after_waits", "Retries that waited for a Retry-After the sink gave";
    throttled: Counter<SinkLabel> = "throttled", "Attempts the destination throttled (429, SlowDown, ServerBusy)";
    batches_split: Counter<SinkLabel> = "batches_split", "Batches split in halves because the sink refused their size";
    dead_letter_batches: Counter<SinkLabel> = "dead_letter_batches", "Batches moved to dead-letter";
    dead_letter_records: Counter<SinkLabel> = "dead_letter_records", "Records in dead-lettered batches";
    batches_parked: Gauge<SinkLabel> = "batches_parked", "Spooled batches set aside because their scope (tenant-hour) cannot be sent now; see /readyz";
    parks: Counter<SinkLabel> = "parks", "Attempts answered with a park: the batch's scope (tenant-hour) cannot be sent now, so its batches are set aside while the others go on";
    spool_bytes: Gauge<SinkLabel> = "spool_bytes", "Bytes of batches waiting in the spool";
    spool_max_bytes: Gauge<SinkLabel> = "spool_max_bytes", "The spool's cap (spool_max_bytes): sources pause when it is reached";
    spool_batches: Gauge<SinkLabel> = "spool_batches", "Batches waiting in the spool";
    spool_write_failures: Counter<SinkLabel> = "spool_write_failures", "Spool writes (or block compressions) that failed and are retried";
    ledger_forged: Counter<SinkLabel> = "ledger_forged_entries", "Key ledger entries met that logferry did not write (not signed, signed by another key, not unwrapping, or not a file): never used; see `logferry keys list`";
    keys_shredded: Counter<SinkLabel> = "keys_shredded", "Tenant-hour data keys shredded at the end of encryption.retention (each with a signed receipt)";
    retention_failures: Counter<SinkLabel> = "retention_failures", "Retention passes that could not list or shred the key ledger (tried again at the next pass)";
    digests_written: Counter<SinkLabel> = "digests_written", "Signed integrity digests written to the archive";
    digest_failures: Counter<SinkLabel> = "digest_failures", "Attempts to write integrity digests that failed (the journal keeps the entries; tried again at the next hour and at stop)";
    last_delivery: Gauge<SinkLabel> = "last_delivery_timestamp_seconds", "Unix time of the last acknowledged batch";
    since_delivery: Gauge<SinkLabel> = "seconds_since_last_delivery", "Seconds since the last acknowledged batch (absent before the first)";
}

impl Metrics {
    pub fn encode(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let sinks: Vec<String> = self
            .sink_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for name in sinks {
            let l = self.sink(&name);
            let last = self.last_delivery.get_or_create(&l).get();
            if last > 0 {
                self.since_delivery.get_or_create(&l).set(now - last);
            }
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A source the configuration no longer has is no longer reported: the last values of its
    /// gauges (folders it could not read, say) would keep an alert firing for ever.
    pub fn forget_source(&self, name: &str) {
        let l = self.source(name);
        self.files_open.remove(&l);
        self.paths_unreadable.remove(&l);
        self.unread_bytes.remove(&l);
    }

    pub fn source(&self, name: &str) -> SourceLabel {
        SourceLabel {
            source: name.to_string(),
        }
    }

    /// One counter per label of a masking profile, in the profile's label order.
    pub fn masking(&self, p: &crate::mask::Profile) -> Vec<Counter> {
        p.labels
            .iter()
            .map(|kind| {
                self.masked
                    .get_or_create(&MaskLabel {
                        profile: p.name.clone(),
                        kind: kind.clone(),
                    })
                    .clone()
            })
            .collect()
    }

    /// A sink whose delivery age is reported at each scrape.
    pub fn track_sink(&self, name: &str) {
        let mut n = self.sink_names.lock().unwrap_or_else(|p| p.into_inner());
        if !n.iter().any(|x| x == name) {
            n.push(name.to_string());
        }
    }

    pub fn sink(&self, name: &str) -> SinkLabel {
        SinkLabel {
            sink: name.to_string(),
        }
    }
}
