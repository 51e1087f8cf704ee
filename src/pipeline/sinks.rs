//! The sink side of a pipeline: for each configured sink its retention pass, spool,
//! integrity stream, sink stack, spool writer and delivery worker.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context};
use logferry_sink::Compression;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::stack::build_sink;
use crate::batch::PendingBatch;
use crate::config::{Buffer, Config, SinkConfig};
use crate::deliver::{Policy, Worker};
use crate::encode::Layout;
use crate::integrity::Digester;
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::spool::writer::Writer;
use crate::spool::Spool;

/// What the sources of a pipeline need of one sink.
pub(super) struct SinkSide {
    pub cfg: SinkConfig,
    pub tx: mpsc::Sender<PendingBatch>,
    pub ratio: Arc<AtomicU64>,
    pub max_uncompressed: Option<u64>,
}

/// The running sink side.
pub(super) struct Sinks {
    pub sides: HashMap<String, SinkSide>,
    pub writers: Vec<JoinHandle<()>>,
    pub workers: Vec<JoinHandle<()>>,
    /// Each integrity stream's digester, with how long a digest may take.
    pub digesters: Vec<(Arc<Digester>, std::time::Duration)>,
    /// The spool key rings of sinks whose spool is sealed: sources spill oversize records
    /// sealed under them.
    pub spool_rings: HashMap<String, Arc<logferry_vault::keys::KeyRing>>,
}

pub(super) async fn start(
    cfg: &Config,
    once: bool,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    shutdown: &Shutdown,
) -> anyhow::Result<Sinks> {
    let mut sides: HashMap<String, SinkSide> = HashMap::new();
    let mut writers = Vec::new();
    let mut workers = Vec::new();
    let signer = crate::encryption::signer(cfg)?.map(Arc::new);
    let mut digesters = Vec::new();
    let mut spool_rings: HashMap<String, Arc<logferry_vault::keys::KeyRing>> = HashMap::new();
    for sc in &cfg.sinks {
        let l = metrics.sink(&sc.name);
        if let (Some(keys), Some(retention)) = (
            crate::encryption::key_ring(cfg, sc).await?,
            sc.encryption.as_ref().and_then(|e| e.retention),
        ) {
            let forged = metrics.ledger_forged.get_or_create(&l).clone();
            keys.count_forged_with(Box::new(move || {
                forged.inc();
            }));
            let r = crate::encryption::Retention {
                sink: sc.name.clone(),
                keys,
                retention,
                signer: signer.clone(),
                shredded: metrics.keys_shredded.get_or_create(&l).clone(),
                failures: metrics.retention_failures.get_or_create(&l).clone(),
                limit: sc.timeout * 4,
            };
            if once {
                // A backfill run shreds what is due before it starts, and waits for it.
                r.pass().await;
            } else {
                tokio::spawn(r.run(shutdown.clone()));
            }
        }
        metrics
            .spool_max_bytes
            .get_or_create(&l)
            .set(i64::try_from(sc.spool_max_bytes).unwrap_or(i64::MAX));
        let gauges = (
            metrics.spool_bytes.get_or_create(&l).clone(),
            metrics.spool_batches.get_or_create(&l).clone(),
        );
        let spool = Arc::new(match sc.buffer {
            Buffer::Disk => {
                let dir = cfg.data_dir.join("spool").join(&sc.name);
                let (d, max) = (dir.clone(), sc.spool_max_bytes);
                let s = tokio::task::spawn_blocking(move || Spool::open_disk(d, max, gauges))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .with_context(|| {
                        format!("sink {}: cannot open spool {}", sc.name, dir.display())
                    })?;
                if !s.is_empty() {
                    info!(sink = %sc.name, batches = s.len(), "replaying spooled batches");
                }
                match crate::encryption::spool_ring(cfg, sc).await? {
                    Some(keys) => {
                        spool_rings.insert(sc.name.clone(), keys.clone());
                        s.with_crypt(Arc::new(crate::spool::SpoolCrypt::new(keys).keeping(vec![
                            cfg.data_dir.join("dead-letter").join(&sc.name),
                            cfg.data_dir.join("dead-letter").join("sources"),
                        ])))
                    }
                    None => s,
                }
            }
            Buffer::Memory => Spool::memory(sc.concurrency + 1, sc.spool_max_bytes, gauges),
        });
        let stream = match (&sc.integrity, &signer) {
            (Some(i), Some(signer)) => Some(
                crate::integrity::open(
                    &cfg.data_dir,
                    &sc.name,
                    crate::encryption::store(sc, true).await?,
                    &i.prefix,
                    signer.clone(),
                    spool.chain_links(),
                    (
                        metrics.digests_written.get_or_create(&l).clone(),
                        metrics.digest_failures.get_or_create(&l).clone(),
                    ),
                )
                .await?,
            ),
            (Some(_), None) => bail!("sink {}: integrity needs [signing] key_file", sc.name),
            _ => None,
        };
        let forged = metrics
            .ledger_forged
            .get_or_create(&metrics.sink(&sc.name))
            .clone();
        let sink = build_sink(
            cfg,
            sc,
            stream.as_ref().map(|s| s.journal.clone()),
            Some(forged),
            Some(
                metrics
                    .records_rejected
                    .get_or_create(&metrics.sink(&sc.name))
                    .clone(),
            ),
        )
        .await?
        .sink();
        let journal = stream.as_ref().map(|s| s.journal.clone());
        let head = stream.as_ref().map(|s| s.head.clone());
        if let Some(s) = stream {
            let d = Arc::new(s.digester);
            if !once {
                tokio::spawn(d.clone().run(sc.timeout * 4, shutdown.clone()));
            }
            digesters.push((d, sc.timeout * 4));
        }
        let (tx, rx) = mpsc::channel::<PendingBatch>(2);
        let ratio = Arc::new(AtomicU64::new(
            (if sc.compression == Compression::None {
                1.0f64
            } else {
                0.5
            })
            .to_bits(),
        ));
        writers.push(tokio::spawn(
            Writer {
                sink: sc.name.clone(),
                rx,
                spool: spool.clone(),
                ratio: ratio.clone(),
                level: sc.compression_level,
                sealed: metrics.batches_sealed.get_or_create(&l).clone(),
                failures: metrics.spool_write_failures.get_or_create(&l).clone(),
                health: health.clone(),
                shutdown: shutdown.clone(),
                chain: head,
            }
            .run(),
        ));
        let (requests, bytes) = Policy::rate_limits(sc.requests_per_second, sc.bytes_per_second);
        let policy = Policy {
            initial_backoff: sc.initial_backoff,
            max_backoff: sc.max_backoff,
            max_attempts: sc.max_attempts,
            concurrency: sc.concurrency,
            timeout: sc.timeout,
            requests,
            bytes,
            layout: Layout::new(
                sc.encoding,
                sc.envelope
                    .as_ref()
                    .map(|(h, t, s)| (h.as_str(), t.as_str(), *s)),
            ),
            level: sc.compression_level,
            seed: None,
        };
        // An OTLP request is built from the records at seal: its records are cut at a share
        // of the request limit (a larger request is split before it is sent).
        let max_uncompressed = sink.max_request_bytes().or(match &sc.kind {
            crate::config::SinkKind::Otlp(o) => Some(crate::otlp::records_cap(
                o.options.max_request_bytes,
                &o.spec,
            )),
            _ => None,
        });
        if !once {
            // A start-up check that logs and never blocks: delivery retries anyway. Not for
            // --once, which may end before it does (and leave its probe object behind).
            let (s, name, t) = (sink.clone(), sc.name.clone(), sc.timeout);
            tokio::spawn(async move {
                match tokio::time::timeout(t, s.check()).await {
                    Ok(Ok(())) => info!(sink = %name, "sink reachable and writable"),
                    Ok(Err(e)) => {
                        warn!(sink = %name, problem = %e, "sink check failed; delivery will retry")
                    }
                    Err(_) => warn!(sink = %name, "sink check got no answer; delivery will retry"),
                }
            });
        }
        let worker = Worker::new(
            &sc.name,
            sink,
            spool,
            policy,
            &cfg.data_dir,
            metrics,
            health.clone(),
        )
        .with_journal(journal);
        workers.push(tokio::spawn(worker.run(shutdown.clone())));
        sides.insert(
            sc.name.clone(),
            SinkSide {
                cfg: sc.clone(),
                tx,
                ratio,
                max_uncompressed,
            },
        );
    }
    Ok(Sinks {
        sides,
        writers,
        workers,
        digesters,
        spool_rings,
    })
}
