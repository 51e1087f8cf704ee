//! The sink stack of one configured sink, built in code so that its order is a type:
//! a [`Destination`] (the service), then [`Recorded`] (integrity: the hash of the bytes
//! stored, so inside the encryption), then the [`Stack`] the delivery loop sends to
//! (client-side encryption, outermost). Each layer can only be made from the one below it.

use std::sync::Arc;

use anyhow::{bail, Context};
use logferry_destinations::DirectorySink;
use logferry_sink::Sink;
use tracing::{info, warn};

use crate::config::{Config, SinkConfig, SinkKind};

/// A destination as its configuration builds it.
pub struct Destination(Arc<dyn Sink>);

/// The destination, chained when the sink has an integrity stream.
pub struct Recorded(Arc<dyn Sink>);

/// The whole stack: what the delivery loop sends to.
pub struct Stack(Arc<dyn Sink>);

impl Destination {
    /// `rejected` counts the records a destination refused in a partial success (OTLP).
    pub async fn build(
        sc: &SinkConfig,
        rejected: Option<prometheus_client::metrics::counter::Counter>,
    ) -> anyhow::Result<Destination> {
        build_plain(sc, rejected).await.map(Destination)
    }

    /// Chains the destination itself: the hash recorded is of the bytes stored.
    pub fn recorded(self, journal: Option<Arc<crate::integrity::Journal>>) -> Recorded {
        Recorded(match journal {
            Some(j) => Arc::new(logferry_integrity::chained::ChainedSink::new(self.0, j)),
            None => self.0,
        })
    }
}

impl Recorded {
    /// Seals each batch before it reaches integrity and the destination, when the sink
    /// encrypts.
    pub fn encrypted(
        self,
        keys: Option<Arc<logferry_vault::keys::KeyRing>>,
        segment_size: u32,
    ) -> Stack {
        Stack(match keys {
            Some(keys) => Arc::new(logferry_vault::encrypted::EncryptedSink::new(
                self.0,
                keys,
                segment_size,
            )),
            None => self.0,
        })
    }
}

impl Stack {
    pub fn sink(&self) -> Arc<dyn Sink> {
        self.0.clone()
    }
}

/// The stack of `sc`: its destination, chained through `journal`, behind client-side
/// encryption when it encrypts (a forged ledger entry counted on `forged`).
pub async fn build_sink(
    cfg: &Config,
    sc: &SinkConfig,
    journal: Option<Arc<crate::integrity::Journal>>,
    forged: Option<prometheus_client::metrics::counter::Counter>,
    rejected: Option<prometheus_client::metrics::counter::Counter>,
) -> anyhow::Result<Stack> {
    let recorded = Destination::build(sc, rejected).await?.recorded(journal);
    let keys = match (crate::encryption::key_ring(cfg, sc).await?, &sc.encryption) {
        (Some(keys), Some(_)) => {
            if let Some(c) = forged {
                keys.count_forged_with(Box::new(move || {
                    c.inc();
                }));
            }
            Some(keys)
        }
        _ => None,
    };
    let segment = sc.encryption.as_ref().map_or(0, |e| e.segment_size);
    Ok(recorded.encrypted(keys, segment))
}

async fn build_plain(
    cfg: &SinkConfig,
    rejected: Option<prometheus_client::metrics::counter::Counter>,
) -> anyhow::Result<Arc<dyn Sink>> {
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
    tokio::task::spawn_blocking(move || build_blocking(&cfg, rejected))
        .await
        .context("a sink's set-up task failed")?
}

fn build_blocking(
    cfg: &SinkConfig,
    rejected: Option<prometheus_client::metrics::counter::Counter>,
) -> anyhow::Result<Arc<dyn Sink>> {
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
        SinkKind::Otlp(o) => {
            let mut options = o.options.clone();
            options.rejected = rejected.map(|c| -> logferry_destinations::otlp::RejectedHook {
                Arc::new(move |n| {
                    c.inc_by(n);
                })
            });
            Arc::new(
                logferry_destinations::otlp::OtlpSink::new(options)
                    .map_err(|e| anyhow::anyhow!("sink {}: {e}", cfg.name))?,
            )
        }
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
pub async fn check_sinks(
    cfg: &Config,
) -> Vec<(String, &'static str, Result<(), logferry_sink::CheckError>)> {
    let mut out = Vec::new();
    for sc in &cfg.sinks {
        let res = match build_sink(cfg, sc, None, None, None).await {
            Ok(s) => match tokio::time::timeout(sc.timeout, s.sink().check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", sc.timeout).into()),
            },
            Err(e) => Err(format!("{e:#}").into()),
        };
        out.push((sc.name.clone(), sc.type_name(), res));
    }
    out
}
