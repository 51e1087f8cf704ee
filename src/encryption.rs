//! Client-side encryption at run time: a sink's key ring, the signing key and the hourly
//! retention pass that shreds expired tenant-hours.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use logferry_destinations::dir_store::DirectoryStore;
use logferry_integrity::signing::SigningKey;
use logferry_sink::store::LedgerStore;
use logferry_vault::keys::{EntryAuth, KeyRing};
use logferry_vault::ledger::Kek;
use prometheus_client::metrics::counter::Counter;
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
            let s = logferry_destinations::S3Sink::new(o)
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
                logferry_destinations::azure_blob::ledger::BlobStore::new(o)
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
        Some(KekProvider::AwsKms(o)) => Arc::new(logferry_vault::kms::AwsKms::new(name, o).await),
        Some(KekProvider::AzureKeyVault(o)) => {
            // Reads the credential's and the CA's files: off the runtime's threads.
            let (n, o) = (name.to_string(), (**o).clone());
            let kv =
                tokio::task::spawn_blocking(move || logferry_vault::keyvault::KeyVault::new(&n, o))
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
    // Checked again here, not only at load: the file may have changed since (a reload, a
    // command reading the configuration later).
    let bytes = crate::config::read_key_file(path, cfg.key_file_modes, "signing key")
        .map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("signing key {} is not a PEM text file", path.display()))?;
    SigningKey::from_pem(text)
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
        let run = logferry_vault::shred::expire(
            &self.keys,
            sink,
            self.retention,
            self.signer.as_deref(),
            chrono::Utc::now(),
        );
        let res = match tokio::time::timeout(self.limit, run).await {
            Ok(r) => r.map_err(|e| e.to_string()),
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

    /// A pass now, then every hour until the pipeline ends.
    pub async fn run(self, shutdown: crate::shutdown::Shutdown) {
        loop {
            tokio::select! {
                _ = self.pass() => {}
                _ = shutdown.wait(crate::shutdown::Phase::End) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_EVERY) => {}
                _ = shutdown.wait(crate::shutdown::Phase::End) => return,
            }
        }
    }
}

/// An archive object read from another place than the one its header names (header fields and
/// the path as read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: its header names tenant {tenant}, hour {hour}, batch {batch_id}; it was read from {path}: an object moved or copied to another tenant's, hour's or batch's place is not shown")]
pub struct Misplaced {
    pub tenant: String,
    pub hour: String,
    pub batch_id: String,
    pub path: String,
}

/// Checks that an archive object read from `path` sits where its header (authenticated as the
/// object's associated data) says it belongs: the sink's key template is rendered for the
/// header's tenant (when the key shows the tenant field), hour and batch id, and compared with
/// the path segment by segment from its end. What the header cannot tell (the source, the host,
/// other fields, minutes and seconds) is found by rendering twice with different values: a
/// segment that differs between the two is not compared. Where the key puts the batch id in the
/// file name, the file name must hold it, whatever shares its segment.
///
/// An object copied over another tenant's, hour's or batch's object, or moved there, is refused:
/// its records would be shown as that place's.
pub fn check_object_place(
    key: &logferry_sink::KeyTemplate,
    sink: &str,
    tenant_field: Option<&str>,
    header: &logferry_vault::crypt::Header,
    path: &str,
) -> Result<(), Misplaced> {
    let refused = || Misplaced {
        tenant: header.tenant.clone(),
        hour: header.hour.clone(),
        batch_id: header.batch_id.clone(),
        path: path.to_string(),
    };
    if !logferry_vault::keys::is_hour(&header.hour) {
        return Err(refused());
    }
    let Ok(start) = chrono::NaiveDateTime::parse_from_str(
        &format!("{}:00:00", header.hour),
        "%Y-%m-%dT%H:%M:%S",
    ) else {
        return Err(refused());
    };
    let start = start.and_utc();
    let end = start + chrono::TimeDelta::seconds(3599);
    let render = |unknown: &str, time: chrono::DateTime<chrono::Utc>| {
        let fields: Vec<Option<&str>> = key
            .fields()
            .iter()
            .map(|f| {
                if Some(f.as_str()) == tenant_field {
                    Some(header.tenant.as_str())
                } else {
                    Some(unknown)
                }
            })
            .collect();
        key.render(&logferry_sink::KeyContext {
            source: unknown,
            sink,
            batch_id: &header.batch_id,
            host: unknown,
            fields: &fields,
            time,
        })
    };
    let (a, b) = (render("a", start), render("b", end));
    let (ka, kb): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    // The path as read, `.` and `..` taken out; the encrypted suffix off its file name.
    let mut ps: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                ps.pop();
            }
            s => ps.push(s),
        }
    }
    let file = ps.pop().unwrap_or("");
    ps.push(
        file.strip_suffix(logferry_vault::encrypted::SUFFIX)
            .unwrap_or(file),
    );
    if ka.len() == kb.len() {
        for ((p, x), y) in ps.iter().rev().zip(ka.iter().rev()).zip(kb.iter().rev()) {
            if x == y && p != x {
                return Err(refused());
            }
        }
    }
    let id = logferry_sink::key::clean(&header.batch_id);
    if key.has_batch_id()
        && ka.last().is_some_and(|l| l.contains(id.as_str()))
        && !file.contains(id.as_str())
    {
        return Err(refused());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_sink::KeyTemplate;
    use logferry_vault::crypt::Header;

    fn header(tenant: &str, hour: &str, batch: &str) -> Header {
        Header {
            version: 2,
            segment_size: 16,
            nonce_prefix: [0u8; 7],
            salt: [0u8; 32],
            key_id: "00".repeat(16),
            tenant: tenant.into(),
            hour: hour.into(),
            batch_id: batch.into(),
        }
    }

    fn place(key: &str, h: &Header, path: &str) -> Result<(), String> {
        let k = KeyTemplate::parse_per_record(key).unwrap();
        check_object_place(&k, "archive", Some("account_id"), h, path).map_err(|e| e.to_string())
    }

    const KEY: &str = "{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz";

    #[test]
    fn an_object_in_its_own_place_is_shown() {
        let h = header("acme", "2026-12-03T10", "b1");
        for path in [
            "/tmp/x/archive/jobs/acme/2026/12/03/10/b1.ndjson.gz.lfenc",
            "jobs/acme/2026/12/03/10/b1.ndjson.gz.lfenc",
            "other-source/acme/2026/12/03/10/b1.ndjson.gz.lfenc",
            "./archive/x/../jobs/acme/2026/12/03/10/b1.ndjson.gz.lfenc",
            // Taken out of the archive under its own name: nothing names another place.
            "b1.ndjson.gz.lfenc",
            "10/b1.ndjson.gz",
        ] {
            assert_eq!(place(KEY, &h, path), Ok(()), "{path}");
        }
        // A half of a split batch: its own id in the name.
        let half = header("acme", "2026-12-03T10", "b1-a");
        assert_eq!(
            place(KEY, &half, "jobs/acme/2026/12/03/10/b1-a.ndjson.gz.lfenc"),
            Ok(())
        );
    }

    #[test]
    fn an_object_in_another_tenants_hours_or_batchs_place_is_refused() {
        let h = header("acme", "2026-12-03T10", "b1");
        for path in [
            "jobs/beta/2026/12/03/10/b1.ndjson.gz.lfenc",
            "jobs/acme/2026/12/03/11/b1.ndjson.gz.lfenc",
            "jobs/acme/2026/12/04/10/b1.ndjson.gz.lfenc",
            "jobs/acme/2026/12/03/10/b2.ndjson.gz.lfenc",
            "copy.lfenc",
        ] {
            let err = place(KEY, &h, path).unwrap_err();
            assert!(
                err.starts_with("refused: its header names tenant acme, hour 2026-12-03T10, batch b1; it was read from "),
                "{err}"
            );
            assert!(err.contains(path), "{err}");
        }
        // A header that names no hour is no place at all.
        assert!(place(
            KEY,
            &header("acme", "yesterday", "b1"),
            "b1.ndjson.gz.lfenc"
        )
        .is_err());
    }

    #[test]
    fn what_the_header_cannot_tell_is_not_compared() {
        let h = header("acme", "2026-12-03T10", "b1");
        // Minutes: any minute of the hour; the day still counts.
        let key = "{account_id}/%Y/%m/%d/%H%M/{batch_id}.gz";
        assert_eq!(place(key, &h, "acme/2026/12/03/1023/b1.gz.lfenc"), Ok(()));
        assert!(place(key, &h, "acme/2026/12/04/1023/b1.gz.lfenc").is_err());
        // Another field and the host share segments with what is known.
        let key = "{region}-{account_id}/{host}-{batch_id}.gz";
        assert_eq!(place(key, &h, "eu-acme/h7-b1.gz.lfenc"), Ok(()));
        // The batch id is looked for in the file name all the same.
        assert!(place(key, &h, "eu-acme/h7-b2.gz.lfenc").is_err());
        // A key without the tenant: the tenant cannot be checked, the rest is.
        let key = "{source}/%Y/%m/%d/{batch_id}.gz";
        let beta = header("beta", "2026-12-03T10", "b1");
        assert_eq!(place(key, &beta, "jobs/2026/12/03/b1.gz.lfenc"), Ok(()));
        assert!(place(key, &beta, "jobs/2026/12/02/b1.gz.lfenc").is_err());
        // One object per record, named by its fields alone.
        let key = "{account_id}/%Y%m%d%H/{job}.json";
        assert_eq!(place(key, &h, "acme/2026120310/j7.json.lfenc"), Ok(()));
        assert!(place(key, &h, "beta/2026120310/j7.json.lfenc").is_err());
    }
}
