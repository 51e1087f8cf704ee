//! Batching per sink and partition, with blocks compressed off the reading thread.
//!
//! One [`Batcher`] serves one (source, sink) pair and lives on the source's thread, so adding a
//! record touches no lock and no channel. Records are partitioned by the sink's key: the record
//! fields its template names and the time bucket it shows (`%H` -> hour), so every object holds
//! only records that belong under its key.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use logferry_sink::{BatchMeta, Compression, KeyContext, KeyTemplate};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::ack::{Hold, Ticket};
use crate::decode::Values;
use crate::encode::{BlockResult, CompressPool, Layout, Seal, BLOCK_BYTES};

/// More open partitions than this and the least recently written one is sealed, so memory does
/// not grow with the number of distinct key values (a key or tenant per account: hundreds).
const MAX_OPEN_PARTITIONS: usize = 4096;
/// Records not yet handed to compression, across a batcher's open partitions: each partition's
/// block is cut at this divided by the partitions open (between 16 KiB and a full block), so
/// many partitions cost no more memory than a few.
const RAW_BUDGET: usize = 32 << 20;
const MIN_BLOCK: usize = 16 << 10;
/// Compressed blocks held by open batches, across partitions (estimated with the running
/// ratio): above it the batch just written is sealed, so that hundreds of partitions do not
/// each hold up to `max_bytes`.
const HELD_BUDGET: f64 = (64 << 20) as f64;

/// A sealed batch on its way to the spool: blocks may still be compressing.
pub struct PendingBatch {
    pub meta: BatchMeta,
    pub blocks: Vec<oneshot::Receiver<BlockResult>>,
    pub holds: Vec<Hold>,
}

/// What a batcher needs to know of its sink.
pub struct Plan {
    pub sink: String,
    pub key: KeyTemplate,
    /// Decoder value slots of the key's fields, in the template's order, then the tenant
    /// field's when the sink encrypts per tenant and the key does not name it already.
    pub field_slots: Vec<usize>,
    /// Which of `field_slots` holds the tenant (the sink encrypts per tenant); one past the
    /// key's fields when it was added for the tenant alone. A tenant that is also a key field
    /// shares its slot, so that records are not partitioned by the same value twice.
    pub tenant: Option<usize>,
    /// Batches are partitioned by `time / bucket_secs`: the key's finest time unit, and at
    /// most an hour when the sink encrypts per tenant-hour.
    pub bucket_secs: Option<i64>,
    pub layout: Layout,
    pub compression: Compression,
    pub level: Option<i32>,
    pub max_bytes: u64,
    pub max_records: u64,
    pub max_age: Duration,
    /// A hard limit on the uncompressed payload (sinks with a request size limit).
    pub max_uncompressed: Option<u64>,
    /// Per-record shaping for sinks with a table schema, with its counters.
    pub shape: Option<ShapeStage>,
    /// Parquet and OTLP: records are held uncompressed (`max_bytes` counts them) and the
    /// whole batch becomes one payload on a compression thread at seal.
    pub whole: Option<crate::whole::Whole>,
}

pub struct ShapeStage {
    pub shape: Arc<crate::shape::Shape>,
    pub truncated: prometheus_client::metrics::counter::Counter,
    pub replaced: prometheus_client::metrics::counter::Counter,
}

struct Open {
    /// Given when the batch opens, so an envelope's `{{batch_id}}` can be in its first block.
    id: String,
    /// The envelope's head names what only sealing knows: it is rendered then, as a block of
    /// its own ahead of the records, and the payload's digest is taken by the spool writer.
    deferred_head: bool,
    fields: Vec<Option<String>>,
    bucket: i64,
    first_time: DateTime<Utc>,
    last_time: DateTime<Utc>,
    records: u64,
    block: Vec<u8>,
    blocks: Vec<oneshot::Receiver<BlockResult>>,
    /// Whole batches: `block` holds the records back to back (taken as they are), `offsets`
    /// where each one ends (after a leading 0), `times` each one's time (see
    /// [`crate::whole::Whole::time`]), `observed` when each was read (OTLP).
    offsets: Vec<i32>,
    times: Vec<i64>,
    observed: Vec<i64>,
    submitted: u64,
    hasher: Sha256,
    holds: Vec<Hold>,
    opened: Instant,
    last_write: Instant,
}

/// The pipeline is shutting down and took no more batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuttingDown;

/// Where sealed batches go. `Err` means the pipeline is shutting down and the batch was not
/// taken: it is dropped with its holds unreleased, so its records are read again next start.
pub trait Outlet {
    fn send(&mut self, batch: PendingBatch) -> Result<(), ShuttingDown>;
}

/// A bounded channel to the sink's spool writer, waited on from the source thread.
pub struct ChannelOutlet {
    pub tx: mpsc::Sender<PendingBatch>,
    pub handle: tokio::runtime::Handle,
    /// `Abandon`: give up waiting for room.
    pub shutdown: crate::shutdown::Shutdown,
}

impl Outlet for ChannelOutlet {
    fn send(&mut self, batch: PendingBatch) -> Result<(), ShuttingDown> {
        let tx = self.tx.clone();
        let shutdown = self.shutdown.clone();
        self.handle.block_on(async move {
            let permit = tokio::select! {
                p = tx.reserve() => p,
                _ = shutdown.wait(crate::shutdown::Phase::Abandon) => return Err(ShuttingDown),
            };
            match permit {
                Ok(p) => {
                    p.send(batch);
                    Ok(())
                }
                Err(_) => Err(ShuttingDown),
            }
        })
    }
}

pub struct Batcher<O: Outlet> {
    plan: Plan,
    source: String,
    host: String,
    open: HashMap<u64, Vec<Open>>,
    open_count: usize,
    /// Uncompressed bytes handed to compression by batches still open.
    submitted_open: u64,
    pool: CompressPool,
    outlet: O,
    /// Compressed/uncompressed ratio seen so far (f64 bits), shared with the spool writer.
    ratio: Arc<AtomicU64>,
    pub sealed: u64,
    /// The shaped record (reused: no allocation per record).
    scratch: Vec<u8>,
}

impl<O: Outlet> Batcher<O> {
    pub fn new(
        plan: Plan,
        source: &str,
        host: &str,
        pool: CompressPool,
        outlet: O,
        ratio: Arc<AtomicU64>,
    ) -> Self {
        Batcher {
            plan,
            source: source.to_string(),
            host: host.to_string(),
            open: HashMap::new(),
            open_count: 0,
            submitted_open: 0,
            pool,
            outlet,
            ratio,
            sealed: 0,
            scratch: Vec::new(),
        }
    }

    /// Adds one record. `Err` when the pipeline refused a sealed batch (shutting down).
    pub fn add(
        &mut self,
        record: &[u8],
        values: &Values,
        time: DateTime<Utc>,
        ticket: &Ticket,
    ) -> Result<(), ShuttingDown> {
        let Some(stage) = &self.plan.shape else {
            return self.add_shaped(record, values, time, ticket);
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let shaped = stage.shape.apply(record, time, &mut scratch);
        if shaped.truncated_fields > 0 {
            stage.truncated.inc_by(u64::from(shaped.truncated_fields));
        }
        if shaped.replaced {
            stage.replaced.inc();
            tracing::warn!(sink = %self.plan.sink, bytes = record.len(), "a record too large for one request was sent as a stub");
        }
        let res = self.add_shaped(&scratch, values, time, ticket);
        self.scratch = scratch;
        res
    }

    fn add_shaped(
        &mut self,
        record: &[u8],
        values: &Values,
        time: DateTime<Utc>,
        ticket: &Ticket,
    ) -> Result<(), ShuttingDown> {
        let bucket = match self.plan.bucket_secs {
            Some(g) => time.timestamp().div_euclid(g),
            None => 0,
        };
        let mut h = DefaultHasher::new();
        bucket.hash(&mut h);
        for slot in &self.plan.field_slots {
            values.get(*slot).hash(&mut h);
        }
        let hash = h.finish();
        let now = Instant::now();
        let rec_len = record.len() as u64 + 2;

        let idx = self.find(hash, bucket, values);
        let idx = match idx {
            Some(i) => {
                let full = {
                    let o = &self.open[&hash][i];
                    o.records >= self.plan.max_records
                        || self.plan.max_uncompressed.is_some_and(|m| {
                            o.submitted
                                + o.block.len() as u64
                                + rec_len
                                + self.plan.layout.tail_len_max() as u64
                                > m
                        })
                };
                if full {
                    self.seal_at(hash, i)?;
                    None
                } else {
                    Some(i)
                }
            }
            None => None,
        };
        let idx = match idx {
            Some(i) => i,
            None => {
                if self.open_count >= MAX_OPEN_PARTITIONS {
                    self.seal_least_recent()?;
                }
                let mut block = Vec::with_capacity(self.block_limit().min(64 << 10));
                let id = uuid::Uuid::now_v7().to_string();
                let head = self.plan.layout.head_at_open(&id);
                let deferred_head = head.is_none();
                block.extend_from_slice(&head.unwrap_or_default());
                let fields = self
                    .plan
                    .field_slots
                    .iter()
                    .map(|s| values.get(*s).map(str::to_string))
                    .collect();
                let list = self.open.entry(hash).or_default();
                list.push(Open {
                    id,
                    deferred_head,
                    fields,
                    bucket,
                    first_time: time,
                    last_time: time,
                    records: 0,
                    block,
                    blocks: Vec::new(),
                    offsets: if self.plan.whole.is_some() {
                        vec![0]
                    } else {
                        Vec::new()
                    },
                    times: Vec::new(),
                    observed: Vec::new(),
                    submitted: 0,
                    hasher: Sha256::new(),
                    holds: Vec::new(),
                    opened: now,
                    last_write: now,
                });
                self.open_count += 1;
                list.len() - 1
            }
        };
        // A whole batch holds what it counts: the records themselves.
        let ratio = if self.plan.whole.is_some() {
            1.0
        } else {
            f64::from_bits(self.ratio.load(Ordering::Relaxed))
        };
        let block_limit = self.block_limit();
        let plan = &self.plan;
        let Some(o) = self.open.get_mut(&hash).and_then(|l| l.get_mut(idx)) else {
            return Ok(());
        };
        if let Some(whole) = &plan.whole {
            o.block.extend_from_slice(record);
            o.offsets
                .push(i32::try_from(o.block.len()).unwrap_or(i32::MAX));
            o.times.push(whole.time(time));
            if whole.observes() {
                o.observed
                    .push(Utc::now().timestamp_nanos_opt().unwrap_or(0));
            }
            // Held uncompressed: counted against the batcher's budget as it is written.
            self.submitted_open += record.len() as u64;
        } else {
            plan.layout.write_record(&mut o.block, o.records, record);
        }
        o.records += 1;
        o.last_time = time;
        o.last_write = now;
        if !o.holds.last().is_some_and(|h| ticket.same(h)) {
            o.holds.push(ticket.hold());
        }
        if plan.whole.is_none() && o.block.len() >= block_limit {
            let block =
                std::mem::replace(&mut o.block, Vec::with_capacity(block_limit.min(64 << 10)));
            o.submitted += block.len() as u64;
            self.submitted_open += block.len() as u64;
            o.hasher.update(&block);
            o.blocks
                .push(self.pool.submit(block, plan.compression, plan.level));
        }
        let estimate = ((o.submitted + o.block.len() as u64) as f64 * ratio) as u64;
        let held = self.submitted_open as f64 * ratio;
        if estimate >= plan.max_bytes
            || o.records >= plan.max_records
            || held > HELD_BUDGET.max(plan.max_bytes as f64)
        {
            self.seal_at(hash, idx)?;
        }
        Ok(())
    }

    /// Where a partition's block is cut: a full block with few partitions open, smaller with
    /// many, so that their records waiting for compression stay within [`RAW_BUDGET`].
    fn block_limit(&self) -> usize {
        (RAW_BUDGET / self.open_count.max(1)).clamp(MIN_BLOCK, BLOCK_BYTES)
    }

    fn find(&self, hash: u64, bucket: i64, values: &Values) -> Option<usize> {
        self.open.get(&hash)?.iter().position(|o| {
            o.bucket == bucket
                && o.fields
                    .iter()
                    .zip(&self.plan.field_slots)
                    .all(|(f, s)| f.as_deref() == values.get(*s))
        })
    }

    /// When the oldest open batch reaches `max_age` (nothing open: never).
    pub fn next_expiry(&self) -> Option<Instant> {
        let oldest = self.open.values().flatten().map(|o| o.opened).min()?;
        Some(oldest + self.plan.max_age)
    }

    /// Seals batches older than `max_age`.
    pub fn seal_expired(&mut self, now: Instant) -> Result<(), ShuttingDown> {
        let max_age = self.plan.max_age;
        let expired: Vec<(u64, usize)> = self
            .open
            .iter()
            .flat_map(|(h, l)| {
                l.iter()
                    .enumerate()
                    .filter(|(_, o)| now.duration_since(o.opened) >= max_age)
                    .map(move |(i, _)| (*h, i))
            })
            .collect();
        // Highest index first, so earlier indices stay valid while sealing.
        for (h, i) in expired.into_iter().rev() {
            self.seal_at(h, i)?;
        }
        Ok(())
    }

    /// Seals every open batch (shutdown, end of a `--once` run).
    pub fn seal_all(&mut self) -> Result<(), ShuttingDown> {
        let keys: Vec<u64> = self.open.keys().copied().collect();
        for h in keys {
            while self.open.get(&h).is_some_and(|l| !l.is_empty()) {
                let last = self.open[&h].len() - 1;
                self.seal_at(h, last)?;
            }
        }
        Ok(())
    }

    fn seal_least_recent(&mut self) -> Result<(), ShuttingDown> {
        let oldest = self
            .open
            .iter()
            .flat_map(|(h, l)| {
                l.iter()
                    .enumerate()
                    .map(move |(i, o)| (o.last_write, *h, i))
            })
            .min();
        match oldest {
            Some((_, h, i)) => self.seal_at(h, i),
            None => Ok(()),
        }
    }

    fn seal_at(&mut self, hash: u64, idx: usize) -> Result<(), ShuttingDown> {
        let Some(list) = self.open.get_mut(&hash) else {
            return Ok(());
        };
        let mut o = list.swap_remove(idx);
        if list.is_empty() {
            self.open.remove(&hash);
        }
        self.open_count -= 1;
        self.submitted_open -= if self.plan.whole.is_some() {
            o.block.len() as u64
        } else {
            o.submitted
        };
        let sealed_at = Utc::now();
        let id = std::mem::take(&mut o.id);
        let (head, tail) = self.plan.layout.render(&Seal {
            id: &id,
            records: o.records,
            sealed_at,
        });
        o.block.extend_from_slice(&tail);
        o.submitted += o.block.len() as u64;
        if let Some(whole) = &self.plan.whole {
            // One payload of the whole batch; its digest is taken by the job or the writer.
            let records = crate::whole::Records {
                values: std::mem::take(&mut o.block),
                offsets: std::mem::take(&mut o.offsets),
                times: std::mem::take(&mut o.times),
                observed: std::mem::take(&mut o.observed),
                source: self.source.clone(),
            };
            whole.reserve();
            o.blocks
                .push(self.pool.submit_whole(records, whole.clone()));
        } else {
            o.hasher.update(&o.block);
            o.blocks.push(
                self.pool
                    .submit(o.block, self.plan.compression, self.plan.level),
            );
        }
        let head_len = head.len();
        if o.deferred_head {
            o.submitted += head_len as u64;
            o.blocks.insert(
                0,
                self.pool
                    .submit(head, self.plan.compression, self.plan.level),
            );
        }
        let tenant = self.plan.tenant.map(|i| {
            let t = if i >= self.plan.key.fields().len() {
                o.fields.pop().flatten()
            } else {
                o.fields.get(i).cloned().flatten()
            };
            logferry_sink::key::clean(t.as_deref().unwrap_or(logferry_vault::encrypted::NO_TENANT))
        });
        let fields: Vec<Option<&str>> = o.fields.iter().map(|f| f.as_deref()).collect();
        let key = self.plan.key.render(&KeyContext {
            source: &self.source,
            sink: &self.plan.sink,
            batch_id: &id,
            host: &self.host,
            fields: &fields,
            time: o.first_time,
        });
        let meta = BatchMeta {
            id,
            source: self.source.clone(),
            sink: self.plan.sink.clone(),
            key,
            record_count: o.records,
            first_time: o.first_time,
            last_time: o.last_time,
            // With a head rendered at seal the running digest misses it, and a Parquet file
            // is made at seal: the spool writer takes the digest of the whole payload.
            sha256: if o.deferred_head || self.plan.whole.is_some() {
                String::new()
            } else {
                hex::encode(o.hasher.finalize())
            },
            uncompressed_bytes: o.submitted,
            encoding: self.plan.layout.encoding,
            compression: self.plan.compression,
            head_len: head_len as u32,
            tail_len: tail.len() as u32,
            sealed_at: Some(sealed_at),
            tenant,
            key_id: None,
            spool_encrypted: false,
            chain: None,
        };
        self.sealed += 1;
        self.outlet.send(PendingBatch {
            meta,
            blocks: o.blocks,
            holds: o.holds,
        })
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
