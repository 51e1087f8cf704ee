//! Client-side encryption at run time: a sink's key ring, the signing key and the hourly
//! retention pass that shreds expired tenant-hours.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use logferry_sinks::keys::{EntryAuth, KeyRing};
use logferry_sinks::ledger::Kek;
use logferry_sinks::ledger_store::{DirectoryStore, LedgerStore};
use logferry_sinks::signing::SigningKey;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::{Config, KekProvider, SinkConfig, SinkKind};

/// How often retention looks for expired hours.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The key ring of an encrypted sink (`None` when it does not encrypt). The ledger lives in
/// the sink's own directory, bucket or container, on a client of its own.
pub async fn key_ring(cfg: &Config, sc: &SinkConfig) -> anyhow::Result<Option<Arc<KeyRing>>> {
    let Some(e) = &sc.encryption else {
        return Ok(None);
    };
    let kek = kek(cfg, sc, &e.kek).await?;
    let store = store(sc, false).await?;
    Ok(Some(Arc::new(
        KeyRing::new(store, kek, &e.ledger_prefix).with_auth(entry_auth(cfg)?),
    )))
}

/// The small-object store of an object sink (its own client): the key ledger and receipts, or,
/// with `digests`, the integrity digests (under the data's Object Lock retention on S3).
pub async fn store(sc: &SinkConfig, digests: bool) -> anyhow::Result<Arc<dyn LedgerStore>> {
    // The ledger's own bucket or container, when it is not the data's.
    let elsewhere = match (&sc.encryption, digests) {
        (Some(e), false) => e.ledger_elsewhere.clone(),
        _ => None,
    };
    Ok(match &sc.kind {
        SinkKind::Directory { path } => Arc::new(DirectoryStore::new(path)),
        SinkKind::S3(o) => {
            let mut o = (**o).clone();
            if let Some(b) = elsewhere {
                o.bucket = b;
            }
            let s = logferry_sinks::S3Sink::new(o)
                .await
                .map_err(|e| anyhow::anyhow!("sink {}: {e}", sc.name))?;
            Arc::new(if digests {
                s.digest_store()
            } else {
                s.ledger_store()
            })
        }
        SinkKind::AzureBlob(o) => {
            // Reads key and certificate files: off the runtime's threads.
            let mut o = (**o).clone();
            if let Some(c) = elsewhere {
                o.container = c;
            }
            let store = tokio::task::spawn_blocking(move || {
                logferry_sinks::azure_blob::ledger::BlobStore::new(o)
            })
            .await
            .context("a sink's set-up task failed")?
            .map_err(|e| anyhow::anyhow!("sink {}: {e}", sc.name))?;
            Arc::new(store)
        }
        _ => anyhow::bail!(
            "sink {}: {} sinks keep no objects of their own",
            sc.name,
            sc.type_name()
        ),
    })
}

/// The spool's key ring of a sink whose spool is sealed (it encrypts, or `[spool] kek` is
/// set): spool keys per hour, wrapped by its KEK, in `data_dir/spool-keys/<sink>/`.
pub async fn spool_ring(cfg: &Config, sc: &SinkConfig) -> anyhow::Result<Option<Arc<KeyRing>>> {
    let name = match (&sc.encryption, &cfg.spool_kek) {
        (Some(e), _) => &e.kek,
        (None, Some(k)) => k,
        (None, None) => return Ok(None),
    };
    let kek = kek(cfg, sc, name).await?;
    let store = Arc::new(DirectoryStore::new(
        cfg.data_dir.join("spool-keys").join(&sc.name),
    ));
    Ok(Some(Arc::new(
        KeyRing::new(store, kek, "").with_auth(entry_auth(cfg)?),
    )))
}

/// Ledger entries are signed with, and checked against, the `[signing]` key.
fn entry_auth(cfg: &Config) -> anyhow::Result<EntryAuth> {
    Ok(EntryAuth::signing(signer(cfg)?.map(Arc::new)))
}

async fn kek(cfg: &Config, sc: &SinkConfig, name: &str) -> anyhow::Result<Arc<dyn Kek>> {
    Ok(match cfg.keks.get(name).map(|k| &k.provider) {
        Some(KekProvider::Local(k)) => k.clone(),
        Some(KekProvider::AwsKms(o)) => Arc::new(logferry_sinks::kms::AwsKms::new(name, o).await),
        Some(KekProvider::AzureKeyVault(o)) => {
            // Reads the credential's and the CA's files: off the runtime's threads.
            let (n, o) = (name.to_string(), (**o).clone());
            let kv =
                tokio::task::spawn_blocking(move || logferry_sinks::keyvault::KeyVault::new(&n, o))
                    .await
                    .context("a KEK's set-up task failed")?
                    .map_err(|m| anyhow::anyhow!("KEK {name}: {m}"))?;
            Arc::new(kv)
        }
        None => anyhow::bail!("sink {}: no KEK {:?}", sc.name, name),
    })
}

/// The key that signs receipts, if one is configured.
pub fn signer(cfg: &Config) -> anyhow::Result<Option<SigningKey>> {
    let Some(path) = &cfg.signing_key_file else {
        return Ok(None);
    };
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read signing key {}", path.display()))?,
    );
    SigningKey::from_pem(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("signing key {}: {e}", path.display()))
}

/// A sink's retention: shreds tenant-hours past `retention`, counted and logged with their
/// receipts. A pass that takes longer than `limit` (a ledger that never answers) is given up
/// and counted as failed, so that it can neither hold a `--once` run nor pile up.
pub struct Retention {
    pub sink: String,
    pub keys: Arc<KeyRing>,
    pub retention: Duration,
    pub signer: Option<Arc<SigningKey>>,
    pub shredded: Counter,
    pub failures: Counter,
    pub limit: Duration,
}

impl Retention {
    /// One pass.
    pub async fn pass(&self) {
        let sink = self.sink.as_str();
        let run = logferry_sinks::shred::expire(
            &self.keys,
            sink,
            self.retention,
            self.signer.as_deref(),
            chrono::Utc::now(),
        );
        let res = match tokio::time::timeout(self.limit, run).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the key ledger did not answer within {:?}",
                self.limit
            )),
        };
        match res {
            Ok(done) => {
                for d in done {
                    self.shredded.inc_by(d.erased.len() as u64);
                    let hours: Vec<&str> = d.erased.iter().map(|l| l.hour.as_str()).collect();
                    let tenant = d.erased.first().map_or("", |l| l.tenant.as_str());
                    info!(sink, tenant, hours = %hours.join(","), receipt = d.receipt_key.as_deref().unwrap_or(""), "retention shredded expired data keys");
                }
            }
            Err(e) => {
                self.failures.inc();
                error!(sink, error = %e, "retention could not shred expired data keys; trying again at the next pass");
            }
        }
    }

    /// A pass now, then every hour until `stop` turns true or its sender goes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.pass() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
