//! Wires the configured sources, spools and delivery workers together and runs them until the
//! input ends (`--once`) or a signal asks to stop.
//!
//! A pipeline runs in named steps ([`run_pipeline`]): the sinks start ([`sinks`]), then the
//! sources ([`sources`]); it waits for the input's end or a signal, stops the sources, lets
//! delivery finish, and closes the integrity streams. The sink stack is built in [`stack`].

mod sinks;
mod sources;
pub mod stack;

use std::sync::Arc;

use anyhow::{bail, Context};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::encode::CompressPool;
use crate::ops::api::{self, Api};
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::shutdown::{Phase, Shutdown};
use crate::source::Left;

pub use stack::check_sinks;

/// How long after `shutdown_timeout` the watchdog ends the process whatever it is doing.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How one pipeline instance ended.
enum End {
    /// With what each source left unread (`--once`).
    Stopped(Vec<(String, Left)>),
    Reload(Box<Config>),
}

/// Locks `data_dir` itself (an advisory `flock` on the folder, which the kernel drops when the
/// process ends, also at `kill -9`; no file is made, so zero-retention mode keeps only its
/// checkpoints).
/// The folders logferry keeps in data_dir.
const DATA_FOLDERS: &[&str] = &[
    "checkpoints",
    "spool",
    "spool-keys",
    "dead-letter",
    "integrity",
    "replay",
];

/// `path` is data_dir or a folder in it.
fn unwritable(path: &std::path::Path, e: std::io::Error) -> anyhow::Error {
    let who = crate::private_fs::identity();
    if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
        return anyhow::anyhow!(
            "data_dir {} is on a read-only mount ({e}): mount a writable volume there (without :ro or readOnly); checkpoints and the spool live in it",
            path.display()
        );
    }
    anyhow::anyhow!(
        "data_dir {} cannot be written by this process, {who}: {e}; give the volume to that user (chown -R it, or set fsGroup in the pod's securityContext) or point data_dir elsewhere",
        path.display()
    )
}

fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let f = std::fs::File::open(data_dir)
        .with_context(|| format!("cannot open data_dir {}", data_dir.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data_dir {} is in use by another logferry process: two on one data_dir would ship every record twice; give each its own data_dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock data_dir {}", data_dir.display()))
        }
    }
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
    // A volume the process cannot write (a container's user against a root-owned mount) is
    // named with the user at once, before any stage starts.
    crate::private_fs::dir_all(&cfg.data_dir).map_err(|e| unwritable(&cfg.data_dir, e))?;
    // One process per data_dir: two would read the same checkpoints and send the same
    // spooled batches, every record twice. Held until this function returns (reloads too).
    let _lock = lock_data_dir(&cfg.data_dir)?;
    // logferry's folders in it and the ones below them (spool/<sink>/, dead-letter/<sink>/).
    // Only a permission or a read-only mount stops the start: a full disk is the spool's to
    // handle (reading pauses until there is room), as at any other time.
    match crate::private_fs::check_writable_tree(&cfg.data_dir, DATA_FOLDERS) {
        Ok(()) => {}
        Err((p, e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            return Err(unwritable(&p, e));
        }
        Err((p, e)) => {
            warn!(path = %p.display(), error = %e, "data_dir could not be written at start; the spool waits for room");
        }
    }
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
            let (left, finished) = match &res {
                Ok(End::Stopped(l)) => (l.as_slice(), once_complete(&cfg, &metrics, l).is_ok()),
                _ => (&[][..], false),
            };
            crate::ops::progress::report(&cfg, &metrics, started.elapsed(), left, finished);
        }
        match res? {
            End::Stopped(left) if once => return once_complete(&cfg, &metrics, &left),
            End::Stopped(_) => return Ok(()),
            End::Reload(new) => {
                if new.api_listen != cfg.api_listen || new.data_dir != cfg.data_dir {
                    warn!("api.listen and data_dir keep their old values until a restart");
                }
                let mut new = *new;
                for s in &cfg.sources {
                    if !new.sources.iter().any(|n| n.name == s.name) {
                        metrics.forget_source(&s.name);
                    }
                }
                // Per-file lag comes back with the new pipeline's first scan, for the files it
                // holds (a dropped source's files would otherwise keep their last values).
                metrics.file_unread_bytes.clear();
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
    // Every stage and task of this pipeline holds it; background passes end with the pipeline,
    // on every way out of this function.
    let shutdown = Shutdown::new();
    let _end = shutdown.end_on_drop();

    let sinks::Sinks {
        sides,
        writers,
        workers,
        digesters,
        spool_rings,
    } = sinks::start(cfg, once, metrics, health, &shutdown).await?;
    let sources = sources::start(
        cfg,
        once,
        metrics,
        health,
        &shutdown,
        &sides,
        &spool_rings,
        &pool,
    )?;
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
            sig = crate::ops::stop_signal(term, int) => {
                info!(signal = sig, timeout = ?cfg.shutdown_timeout, "stopping: sealing open batches and delivering what is spooled");
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
        let deadline = cfg.shutdown_timeout;
        // Whatever a stage is doing, the process ends in time; a reload goes on in this
        // process, so only its pipeline has the deadline.
        let grace = reload.is_none().then_some(SHUTDOWN_GRACE);
        shutdown.stop_within(deadline, grace);
        // A source busy beyond the deadline (a blocking read, a long record) does not hold the
        // process: what it did not finish is not checkpointed and is read again at the next start.
        let wait = deadline + std::time::Duration::from_millis(1500);
        if tokio::time::timeout(wait, &mut sources_done).await.is_err() {
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
        shutdown.advance(Phase::Drain);
    }
    // Waiting for delivery (`--once`, or after a stop) still answers SIGTERM/SIGINT: a
    // tenant or sink that cannot be delivered to never holds the process past the deadline.
    let delivered = async {
        for w in workers {
            let _ = w.await;
        }
    };
    tokio::pin!(delivered);
    if signalled && reload.is_some() {
        // A stop asked while a reload hands on makes it a stop, ended in time like any other:
        // what is spooled stays for the next start.
        tokio::select! {
            _ = &mut delivered => {}
            sig = crate::ops::stop_signal(term, int) => {
                info!(signal = sig, "stopping instead of reloading: attempts in flight may end until the deadline; what is spooled stays for the next start");
                reload = None;
                crate::ops::fatal::shutdown_watchdog(cfg.shutdown_timeout + SHUTDOWN_GRACE);
                delivered.await;
            }
        }
    } else if signalled {
        delivered.await;
    } else {
        tokio::select! {
            _ = &mut delivered => {}
            sig = crate::ops::stop_signal(term, int) => {
                info!(signal = sig, timeout = ?cfg.shutdown_timeout, "stopping: delivering what is spooled until the deadline");
                shutdown.stop_within(cfg.shutdown_timeout, Some(SHUTDOWN_GRACE));
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
    if shutdown.was_abandoned() && reload.is_some() {
        // A delivery that hangs must not end the process at a reload: its attempt was
        // dropped, its batch is still spooled, and the new pipeline sends it.
        warn!(timeout = ?cfg.shutdown_timeout, "reload: the hand-over did not end within shutdown_timeout (an attempt in flight, or a source waiting for room in a full spool); what was not handed on is sent by the new configuration if it still has the sink (from the spool, or read again from the checkpoints), and a destination that had received it gets it twice");
    } else if shutdown.was_abandoned() {
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
    // Files the walk could not see are not "left unread": they were never found at all.
    for s in &cfg.sources {
        let unreadable = metrics
            .paths_unreadable
            .get_or_create(&metrics.source(&s.name))
            .get();
        if unreadable > 0 {
            missing.push(format!(
                "source {}: {unreadable} matched files or folders could not be read (permissions; the warnings name them and the user)",
                s.name
            ));
        }
    }
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
