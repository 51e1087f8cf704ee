//! Wires the configured sources, spools and delivery workers together and runs them until the
//! input ends (`--once`) or a signal asks to stop.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context};
use logferry_destinations::DirectorySink;
use logferry_sink::{Compression, Sink};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::batch::{Batcher, ChannelOutlet, PendingBatch, Plan, ShapeStage};
use crate::config::{Buffer, Config, SinkConfig, SinkKind};
use crate::decode::Decoder;
use crate::deliver::{Policy, Worker};
use crate::encode::{CompressPool, Layout};
use crate::mask::Masker;
use crate::ops::api::{self, Api};
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::source::{Left, Signal, SourceCtx, Tailer};
use crate::spool::writer::Writer;
use crate::spool::Spool;

/// How long after `shutdown_timeout` the watchdog ends the process whatever it is doing.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct SinkSide {
    cfg: SinkConfig,
    tx: mpsc::Sender<PendingBatch>,
    ratio: Arc<AtomicU64>,
    max_uncompressed: Option<u64>,
}

/// The sink of `sc`, behind client-side encryption when it encrypts.
async fn build_sink(
    cfg: &Config,
    sc: &SinkConfig,
    journal: Option<Arc<crate::integrity::Journal>>,
    forged: Option<prometheus_client::metrics::counter::Counter>,
) -> anyhow::Result<Arc<dyn Sink>> {
    let mut inner = build_plain(sc).await?;
    if let Some(j) = journal {
        // Inside the encryption: the hash is of the bytes stored.
        inner = Arc::new(logferry_integrity::chained::ChainedSink::new(inner, j));
    }
    Ok(
        match (crate::encryption::key_ring(cfg, sc).await?, &sc.encryption) {
            (Some(keys), Some(e)) => {
                if let Some(c) = forged {
                    keys.count_forged_with(Box::new(move || {
                        c.inc();
                    }));
                }
                Arc::new(logferry_vault::encrypted::EncryptedSink::new(
                    inner,
                    keys,
                    e.segment_size,
                ))
            }
            _ => inner,
        },
    )
}

async fn build_plain(cfg: &SinkConfig) -> anyhow::Result<Arc<dyn Sink>> {
    if cfg.plaintext_credentials() {
        warn!(sink = %cfg.name, "allow_plaintext_credentials: this sink sends its credentials over http:// in clear");
    }
    if let SinkKind::S3(o) = &cfg.kind {
        return Ok(Arc::new(
            logferry_destinations::S3Sink::new((**o).clone())
                .await
                .map_err(|e| anyhow::anyhow!("sink {}: {e}", cfg.name))?,
        ));
    }
    // The others read key and certificate files, resolve a pinned host name or walk the
    // archive for leftovers: blocking work, kept off the runtime's threads.
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || build_blocking(&cfg))
        .await
        .context("a sink's set-up task failed")?
}

fn build_blocking(cfg: &SinkConfig) -> anyhow::Result<Arc<dyn Sink>> {
    Ok(match &cfg.kind {
        SinkKind::Directory { path } => {
            let s = DirectorySink::new(path);
            match s.remove_leftovers() {
                Ok(0) => {}
                Ok(n) => {
                    info!(sink = %cfg.name, removed = n, "removed temp files left by an earlier crash")
                }
                // Not fatal: the directory may be unavailable now and fine later; writes retry.
                Err(e) => {
                    warn!(sink = %cfg.name, path = %path.display(), error = %e, "cannot look for temp files left by a crash")
                }
            }
            Arc::new(s)
        }
        SinkKind::S3(_) => bail!("sink {}: S3 is built on the runtime", cfg.name),
        SinkKind::Http(o) => Arc::new(
            logferry_destinations::http::HttpSink::new((**o).clone())
                .map_err(|e| anyhow::anyhow!("sink {}: {e}", cfg.name))?,
        ),
        SinkKind::AzureMonitor(m) => Arc::new(
            logferry_destinations::azure_monitor::AzureMonitorSink::new(m.options.clone())
                .map_err(|e| anyhow::anyhow!("sink {}: {e}", cfg.name))?,
        ),
        SinkKind::AzureBlob(o) => Arc::new(
            logferry_destinations::azure_blob::AzureBlobSink::new((**o).clone())
                .map_err(|e| anyhow::anyhow!("sink {}: {e}", cfg.name))?,
        ),
    })
}

/// Runs every sink's reachability and permission check: (name, type, result).
pub async fn check_sinks(cfg: &Config) -> Vec<(String, &'static str, Result<(), String>)> {
    let mut out = Vec::new();
    for sc in &cfg.sinks {
        let res = match build_sink(cfg, sc, None, None).await {
            Ok(s) => match tokio::time::timeout(sc.timeout, s.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", sc.timeout)),
            },
            Err(e) => Err(format!("{e:#}")),
        };
        out.push((sc.name.clone(), sc.type_name(), res));
    }
    out
}

/// How one pipeline instance ended.
enum End {
    /// With what each source left unread (`--once`).
    Stopped(Vec<(String, Left)>),
    Reload(Box<Config>),
}

/// Runs until SIGTERM/SIGINT (or, with `once`, until every file is read and delivered). SIGHUP
/// reloads the configuration file: a valid one replaces the pipeline after the running one has
/// handed everything read on (nothing lost: spooled batches and checkpoints carry over; nothing
/// duplicated: attempts in flight end before the new pipeline starts); an invalid one is
/// refused with its problems logged, and the running pipeline goes on.
pub async fn run(cfg: Config, once: bool) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let health = Arc::new(Health::new(cfg.unready_after));
    // Made 0700 when missing (an existing one, e.g. a mounted volume, is left as it is).
    crate::private_fs::dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    if let Some(addr) = cfg.api_listen {
        let listener = api::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (api.listen)"))?;
        info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(api::serve(
            listener,
            Arc::new(Api {
                metrics: metrics.clone(),
                health: health.clone(),
            }),
        ));
    }
    let mut signals = crate::ops::Signals::new()?;
    let mut cfg = cfg;
    let started = std::time::Instant::now();
    let bar = if once {
        crate::ops::progress::bar(&cfg, metrics.clone())
    } else {
        None
    };
    loop {
        let res = run_pipeline(&cfg, once, &metrics, &health, &mut signals).await;
        if once {
            // Also when it failed: what was shipped before is worth knowing.
            if let Some(b) = &bar {
                b.abort();
            }
            let left = match &res {
                Ok(End::Stopped(l)) => l.as_slice(),
                _ => &[],
            };
            crate::ops::progress::report(&cfg, &metrics, started.elapsed(), left);
        }
        match res? {
            End::Stopped(left) if once => return once_complete(&cfg, &metrics, &left),
            End::Stopped(_) => return Ok(()),
            End::Reload(new) => {
                if new.api_listen != cfg.api_listen || new.data_dir != cfg.data_dir {
                    warn!("api.listen and data_dir keep their old values until a restart");
                }
                let mut new = *new;
                new.api_listen = cfg.api_listen;
                new.data_dir = cfg.data_dir.clone();
                cfg = new;
                info!(
                    sources = cfg.sources.len(),
                    sinks = cfg.sinks.len(),
                    "configuration reloaded"
                );
            }
        }
    }
}

async fn run_pipeline(
    cfg: &Config,
    once: bool,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    signals: &mut crate::ops::Signals,
) -> anyhow::Result<End> {
    health.set_sinks(cfg.sinks.iter().map(|s| s.name.as_str()), cfg.unready_after);
    health.set_sources(cfg.sources.iter().map(|s| s.name.as_str()));
    warn_orphan_spools(cfg);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = CompressPool::new(threads).context("cannot start compression threads")?;
    let stop = Arc::new(Signal::default());
    let (abandon_tx, abandon_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);

    let mut sides: HashMap<String, SinkSide> = HashMap::new();
    let mut writers = Vec::new();
    let mut workers = Vec::new();
    // Retention passes end when this pipeline does (the sender is dropped).
    let (_retention_stop, retention_rx) = watch::channel(false);
    let signer = crate::encryption::signer(cfg)?.map(Arc::new);
    let mut digesters = Vec::new();
    // The spool key rings of sinks whose spool is sealed: sources spill oversize records
    // sealed under them.
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
                tokio::spawn(r.run(retention_rx.clone()));
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
        )
        .await?;
        let journal = stream.as_ref().map(|s| s.journal.clone());
        let head = stream.as_ref().map(|s| s.head.clone());
        if let Some(s) = stream {
            let d = Arc::new(s.digester);
            if !once {
                tokio::spawn(d.clone().run(sc.timeout * 4, retention_rx.clone()));
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
                abandon: abandon_rx.clone(),
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
        let max_uncompressed = sink.max_request_bytes();
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
        workers.push(tokio::spawn(
            worker.run(abandon_rx.clone(), drain_rx.clone()),
        ));
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

    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let handle = tokio::runtime::Handle::current();
    let mut sources = Vec::new();
    // Each source's share of what the descriptor limit leaves after the sinks' connections.
    let fd_room = crate::source::fds::per_source(
        cfg.sources.iter().map(|s| s.max_open_files as u64).sum(),
        cfg.sources.len() as u64,
        cfg.sinks.iter().map(|s| 2 * s.concurrency as u64).sum(),
    );
    for src in &cfg.sources {
        let mut fields: Vec<String> = Vec::new();
        for s in &src.sinks {
            let sc = &sides[s].cfg;
            let tenant = sc.encryption.as_ref().map(|e| &e.tenant_field);
            for f in sc.key.fields().iter().chain(tenant) {
                if !fields.contains(f) {
                    fields.push(f.clone());
                }
            }
        }
        let mut decoder = Decoder::new(
            src.format,
            src.record_id.as_deref(),
            &fields,
            src.timestamp_field.as_deref(),
        )
        .with_time_format(src.timestamp_format.as_deref());
        decoder.redact_unparsable = src
            .masking
            .as_ref()
            .and_then(|m| cfg.masking.get(m))
            .is_some_and(|p| p.redact_unparsable);
        let mut batchers = Vec::new();
        for s in &src.sinks {
            let side = &sides[s];
            let sc = &side.cfg;
            let tenant = sc.encryption.as_ref().map(|e| &e.tenant_field);
            let key_fields = sc.key.fields();
            let plan = Plan {
                sink: sc.name.clone(),
                key: sc.key.clone(),
                field_slots: key_fields
                    .iter()
                    .chain(tenant.filter(|t| !key_fields.contains(t)))
                    .map(|f| fields.iter().position(|x| x == f).unwrap_or(0))
                    .collect(),
                tenant: tenant.map(|t| {
                    key_fields
                        .iter()
                        .position(|f| f == t)
                        .unwrap_or(key_fields.len())
                }),
                // One data key per tenant and hour: no batch spans two hours.
                bucket_secs: match (sc.key.time_granularity(), tenant.is_some()) {
                    (Some(g), true) => Some(g.min(3600)),
                    (None, true) => Some(3600),
                    (g, false) => g,
                },
                layout: Layout::new(
                    sc.encoding,
                    sc.envelope
                        .as_ref()
                        .map(|(h, t, s)| (h.as_str(), t.as_str(), *s)),
                ),
                compression: sc.compression,
                level: sc.compression_level,
                max_bytes: sc.max_bytes,
                max_records: sc.max_records,
                max_age: sc.max_age,
                max_uncompressed: side.max_uncompressed,
                shape: sc.table_shape().map(|shape| {
                    let l = metrics.sink(&sc.name);
                    ShapeStage {
                        shape: Arc::new(shape.clone()),
                        truncated: metrics.fields_truncated.get_or_create(&l).clone(),
                        replaced: metrics.records_replaced.get_or_create(&l).clone(),
                    }
                }),
            };
            let outlet = ChannelOutlet {
                tx: side.tx.clone(),
                handle: handle.clone(),
                abandon: abandon_rx.clone(),
            };
            batchers.push(Batcher::new(
                plan,
                &src.name,
                &host,
                pool.clone(),
                outlet,
                side.ratio.clone(),
            ));
        }
        let ctx = SourceCtx {
            data_dir: cfg.data_dir.clone(),
            once,
            stop: stop.clone(),
            abandon: abandon_rx.clone(),
            ckpt_interval: cfg.checkpoint_interval,
            health: health.clone(),
            zero_retention: src
                .sinks
                .iter()
                .any(|s| sides[s].cfg.buffer == Buffer::Memory),
            credentials: cfg.credential_files.clone(),
            private_dirs: cfg.private_dirs(),
            // The first of the source's sinks, in configuration order, whose spool is sealed.
            spill_seal: src.sinks.iter().find_map(|s| {
                spool_rings.get(s).map(|ring| crate::source::SpillSeal {
                    ring: ring.clone(),
                    sink: s.clone(),
                    handle: handle.clone(),
                    timeout: sides[s].cfg.timeout,
                })
            }),
        };
        let masker = match &src.masking {
            None => None,
            Some(name) => {
                // Validated at load; a miss here would be a bug, and must not ship unmasked.
                let Some(p) = cfg.masking.get(name) else {
                    bail!(
                        "source {}: masking profile {name:?} is not defined",
                        src.name
                    );
                };
                Some(Masker::new(p.clone(), metrics.masking(p)))
            }
        };
        let mut src = src.clone();
        if let Some(room) = fd_room {
            if src.max_open_files as u64 > room {
                warn!(source = %src.name, max_open_files = src.max_open_files, allowed = room,
                    "max_open_files is more than the process's descriptor limit (ulimit -n) leaves; lowered (files beyond it are read in turns)");
                src.max_open_files = room as usize;
            }
        }
        let name = src.name.clone();
        let tailer = Tailer::new(src, ctx, decoder, masker, batchers, metrics)?;
        let t = std::thread::Builder::new()
            .name(format!("source-{name}"))
            .spawn(move || tailer.run())
            .with_context(|| format!("cannot start source {name}"))?;
        sources.push((name, t));
    }
    // The sources now hold the only senders: the spool writers end when the sources do.
    drop(sides);
    health.set_running(true);
    info!(
        sources = cfg.sources.len(),
        sinks = cfg.sinks.len(),
        once,
        "logferry running"
    );

    let sources_done = tokio::task::spawn_blocking(move || {
        let mut left = Vec::new();
        for (name, t) in sources {
            match t.join() {
                Ok(l) if l != Left::default() => left.push((name, l)),
                Ok(_) => {}
                Err(_) => error!("a source thread panicked"),
            }
        }
        left
    });
    tokio::pin!(sources_done);
    let mut signalled = false;
    let mut reload = None;
    let mut left = Vec::new();
    let crate::ops::Signals { term, int, hup } = signals;
    loop {
        tokio::select! {
            l = &mut sources_done => {
                left = l.unwrap_or_default();
                break;
            }
            sig = async {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            } => {
                info!(signal = sig, timeout = ?cfg.shutdown_timeout, "stopping: sealing open batches and delivering what is spooled");
                // Whatever a stage is doing, the process ends in time.
                crate::ops::fatal::shutdown_watchdog(cfg.shutdown_timeout + SHUTDOWN_GRACE);
                signalled = true;
                break;
            }
            _ = hup.recv(), if !once => {
                match crate::config::load(&cfg.path) {
                    Ok(new) => {
                        info!(path = %cfg.path.display(), "SIGHUP: configuration is valid; handing on what was read, then switching");
                        reload = Some(new);
                        signalled = true;
                        break;
                    }
                    Err(problems) => {
                        error!(path = %cfg.path.display(), problems = %problems.to_string().trim_end(), "SIGHUP: configuration refused; the running one stays");
                    }
                }
            }
        }
    }
    if signalled {
        stop.set();
        let deadline = cfg.shutdown_timeout;
        let tx = abandon_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let _ = tx.send(true);
        });
        // A source busy beyond the deadline (a blocking read, a long record) does not hold the
        // process: what it did not finish is not checkpointed and is read again at the next start.
        let grace = deadline + std::time::Duration::from_millis(1500);
        if tokio::time::timeout(grace, &mut sources_done)
            .await
            .is_err()
        {
            bail!(
                "shutdown deadline: a source did not stop within shutdown_timeout ({deadline:?}); what it had not finished is read again at the next start"
            );
        }
    }
    for w in writers {
        let _ = w.await;
    }
    if reload.is_some() {
        // Everything read is spooled (or delivered, in memory mode): let attempts in flight
        // end, leave the rest in the spool for the new pipeline.
        let _ = drain_tx.send(true);
    }
    // Waiting for delivery (`--once`, or after a stop) still answers SIGTERM/SIGINT: a
    // tenant or sink that cannot be delivered to never holds the process past the deadline.
    let delivered = async {
        for w in workers {
            let _ = w.await;
        }
    };
    tokio::pin!(delivered);
    if signalled {
        delivered.await;
    } else {
        tokio::select! {
            _ = &mut delivered => {}
            sig = async {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            } => {
                info!(signal = sig, timeout = ?cfg.shutdown_timeout, "stopping: delivering what is spooled until the deadline");
                crate::ops::fatal::shutdown_watchdog(cfg.shutdown_timeout + SHUTDOWN_GRACE);
                let deadline = cfg.shutdown_timeout;
                let tx = abandon_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(deadline).await;
                    let _ = tx.send(true);
                });
                delivered.await;
            }
        }
    }
    health.set_running(false);
    if reload.is_none() {
        // The stream goes on at the next start; what was delivered so far is signed now, so
        // that an archive read after a stop (or a --once run) is covered to its end.
        // Within the shutdown timeout: an archive that does not answer cannot hold the stop
        // (the journal keeps the entries; the next start signs them).
        let now = chrono::Utc::now();
        let mut failed = false;
        for (d, limit) in &digesters {
            failed |= !d
                .close_logged(now, (*limit).min(cfg.shutdown_timeout), true)
                .await;
        }
        if failed && once {
            bail!("run --once did not finish: the integrity digests could not be written (the journal keeps the entries for the next run)");
        }
    }
    if *abandon_tx.borrow() {
        bail!(
            "shutdown deadline ({:?}) reached before everything was handed on; undelivered batches stay in the spool and unacknowledged records are read again at the next start",
            cfg.shutdown_timeout
        );
    }
    if let Some(new) = reload {
        return Ok(End::Reload(Box::new(new)));
    }
    info!("logferry stopped");
    Ok(End::Stopped(left))
}

/// `run --once` succeeds only when every matched file was read to its end and every batch
/// delivered: otherwise the backfill would look finished with part of it missing.
fn once_complete(cfg: &Config, metrics: &Metrics, left: &[(String, Left)]) -> anyhow::Result<()> {
    let mut missing: Vec<String> = left
        .iter()
        .map(|(s, l)| {
            format!(
                "source {s}: {} files with {} bytes left unread (their checkpoints stop where reading did: another run reads the rest)",
                l.files, l.bytes
            )
        })
        .collect();
    for s in &cfg.sinks {
        let dead = metrics
            .dead_letter_batches
            .get_or_create(&metrics.sink(&s.name))
            .get();
        if dead > 0 {
            missing.push(format!(
                "sink {}: {dead} batches not delivered, kept under data_dir/dead-letter/{} with the reason",
                s.name, s.name
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!("run --once did not finish: {}", missing.join("; "))
}

/// Spooled batches of a sink no longer in the configuration are kept, never deleted: say so,
/// so that they are not forgotten (add the sink back, or move them away).
fn warn_orphan_spools(cfg: &Config) {
    let Ok(dirs) = std::fs::read_dir(cfg.data_dir.join("spool")) else {
        return;
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        if cfg.sinks.iter().any(|s| s.name == name) {
            continue;
        }
        let batches = std::fs::read_dir(d.path())
            .map(|r| r.flatten().count())
            .unwrap_or(0);
        if batches > 0 {
            warn!(sink = %name, batches, path = %d.path().display(), "spooled batches of a sink that is no longer configured are kept and not sent");
        }
    }
}
