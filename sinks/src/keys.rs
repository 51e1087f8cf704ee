//! A sink's data keys: found in or added to its ledger, cached unwrapped for the current hour.
//!
//! The cache is emptied when the wall-clock hour changes, so a key shredded while logferry runs
//! is gone from memory by the next hour at the latest (keys are zeroized when dropped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::crypt::DataKey;
use crate::ledger::{entry_key, Entry, Kek, LedgerError};
use crate::ledger_store::LedgerStore;

/// A ledger entry is a few hundred bytes; anything much larger was not written by logferry.
const MAX_ENTRY: u64 = 64 << 10;
/// More cached keys than this and the cache starts over (a backfill across many tenant-hours).
const MAX_CACHED: usize = 4096;

/// A tenant-hour that has a key in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub tenant: String,
    pub hour: String,
    pub key_id: String,
}

pub struct KeyRing {
    store: Arc<dyn LedgerStore>,
    kek: Arc<dyn Kek>,
    /// Prepended to `_keys/...` (empty, or ending in `/`).
    prefix: String,
    cache: Mutex<Cache>,
    /// Held while a key is looked up or made in the ledger: deliveries running at once for
    /// the same tenant-hour make one key, not one each.
    making: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    hour: i64,
    keys: HashMap<(String, String), Arc<DataKey>>,
}

/// The UTC hour of `t` as the ledger and the object header write it.
pub fn hour_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H").to_string()
}

/// Whether `s` is an hour as [`hour_of`] writes it.
pub fn is_hour(s: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(&format!("{s}:00:00"), "%Y-%m-%dT%H:%M:%S").is_ok()
        && s.len() == 13
}

impl KeyRing {
    pub fn new(store: Arc<dyn LedgerStore>, kek: Arc<dyn Kek>, prefix: &str) -> Self {
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        KeyRing {
            store,
            kek,
            prefix,
            cache: Mutex::new(Cache::default()),
            making: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn entry_path(&self, tenant: &str, hour: &str) -> String {
        format!("{}{}", self.prefix, entry_key(tenant, hour))
    }

    fn cached(&self, tenant: &str, hour: &str) -> Option<Arc<DataKey>> {
        let now = Utc::now().timestamp().div_euclid(3600);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.hour != now {
            c.keys.clear();
            c.hour = now;
        }
        c.keys.get(&(tenant.to_owned(), hour.to_owned())).cloned()
    }

    fn remember(&self, key: DataKey) -> Arc<DataKey> {
        let key = Arc::new(key);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.keys.len() >= MAX_CACHED {
            c.keys.clear();
        }
        c.keys
            .insert((key.tenant.clone(), key.hour.clone()), key.clone());
        key
    }

    /// The data key for a tenant-hour, made and written to the ledger (create-new) the first
    /// time; the ledger entry exists before any object that needs it is written.
    pub async fn key_for(&self, tenant: &str, hour: &str) -> Result<Arc<DataKey>, LedgerError> {
        if let Some(k) = self.cached(tenant, hour) {
            return Ok(k);
        }
        let _making = self.making.lock().await;
        if let Some(k) = self.cached(tenant, hour) {
            return Ok(k);
        }
        if let Some(k) = self.read(tenant, hour).await? {
            return Ok(self.remember(k));
        }
        let (key, entry) = self.kek.new_key(tenant, hour).await?;
        let bytes = serde_json::to_vec_pretty(&entry)
            .map_err(|e| LedgerError::Seal(format!("cannot write the entry: {e}")))?;
        if self
            .store
            .put_new(&self.entry_path(tenant, hour), &bytes)
            .await
            .map_err(LedgerError::Store)?
        {
            // Created: a create-new write (a hard link, If-None-Match) put exactly these bytes
            // at the name.
            return Ok(self.remember(key));
        }
        // Another writer came first: the key is the one the ledger holds, so that no object is
        // ever encrypted under a key the ledger does not have.
        match self.read(tenant, hour).await? {
            Some(k) => {
                if k.id != key.id {
                    tracing::info!(tenant, hour, "another writer made this tenant-hour's key first; using it");
                }
                Ok(self.remember(k))
            }
            None => Err(LedgerError::Store(format!(
                "the entry for tenant {tenant:?} hour {hour} was removed as it was written; trying again"
            ))),
        }
    }

    async fn read(&self, tenant: &str, hour: &str) -> Result<Option<DataKey>, LedgerError> {
        let Some(bytes) = self
            .store
            .get(&self.entry_path(tenant, hour), MAX_ENTRY)
            .await
            .map_err(LedgerError::Store)?
        else {
            return Ok(None);
        };
        let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| LedgerError::Parse {
            tenant: tenant.to_owned(),
            hour: hour.to_owned(),
            why: e.to_string(),
        })?;
        if entry.tenant != tenant || entry.hour != hour {
            return Err(LedgerError::Unwrap(entry.key_id));
        }
        self.kek.unwrap(&entry).await.map(Some)
    }

    /// The key an object's header names, for reading: never made. A key this ring holds for
    /// the current hour is used as it is (the spool reads back what it sealed).
    pub async fn open(
        &self,
        tenant: &str,
        hour: &str,
        key_id: &str,
    ) -> Result<Arc<DataKey>, LedgerError> {
        if let Some(k) = self.cached(tenant, hour).filter(|k| k.id == key_id) {
            return Ok(k);
        }
        match self.read(tenant, hour).await?.map(Arc::new) {
            None => Err(LedgerError::Shredded {
                tenant: tenant.to_owned(),
                hour: hour.to_owned(),
            }),
            Some(k) if k.id != key_id => Err(LedgerError::Mismatch {
                tenant: tenant.to_owned(),
                hour: hour.to_owned(),
                wanted: key_id.to_owned(),
                found: k.id.clone(),
            }),
            Some(k) => Ok(k),
        }
    }

    /// The tenant-hours with a key, for one tenant or all, oldest first.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<Listed>, LedgerError> {
        let under = match tenant {
            Some(t) => format!("{}_keys/{t}/", self.prefix),
            None => format!("{}_keys/", self.prefix),
        };
        let keys = self.store.list(&under).await.map_err(LedgerError::Store)?;
        let mut out = Vec::new();
        for k in keys {
            let rest = k
                .strip_prefix(&format!("{}_keys/", self.prefix))
                .unwrap_or(&k);
            let Some((t, file)) = rest.split_once('/') else {
                continue;
            };
            let Some(hour) = file.strip_suffix(".key").filter(|h| is_hour(h)) else {
                continue;
            };
            let key_id = match self
                .store
                .get(&k, MAX_ENTRY)
                .await
                .map_err(LedgerError::Store)?
            {
                Some(b) => serde_json::from_slice::<Entry>(&b)
                    .map(|e| e.key_id)
                    .unwrap_or_else(|_| "(unreadable entry)".into()),
                None => continue,
            };
            out.push(Listed {
                tenant: t.to_owned(),
                hour: hour.to_owned(),
                key_id,
            });
        }
        out.sort_by(|a, b| (&a.hour, &a.tenant).cmp(&(&b.hour, &b.tenant)));
        Ok(out)
    }

    /// Deletes the entries of `tenant` for the hours `from..=to` (inclusive, `YYYY-MM-DDTHH`);
    /// returns what was deleted. Cached copies of them are dropped at once in this process.
    pub async fn shred(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<Listed>, LedgerError> {
        let hit: Vec<Listed> = self
            .list(Some(tenant))
            .await?
            .into_iter()
            .filter(|l| l.tenant == tenant && l.hour.as_str() >= from && l.hour.as_str() <= to)
            .collect();
        for l in &hit {
            self.store
                .delete(&self.entry_path(&l.tenant, &l.hour))
                .await
                .map_err(LedgerError::Store)?;
        }
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.keys
            .retain(|(t, h), _| !(t == tenant && h.as_str() >= from && h.as_str() <= to));
        Ok(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LocalKek;
    use crate::ledger_store::DirectoryStore;

    fn ring(root: &std::path::Path) -> KeyRing {
        let kek = LocalKek::from_material("main", &[9u8; 32]).unwrap();
        KeyRing::new(Arc::new(DirectoryStore::new(root)), Arc::new(kek), "")
    }

    #[tokio::test]
    async fn deliveries_at_once_for_one_tenant_hour_share_the_ledger_key() {
        let dir = tempfile::tempdir().unwrap();
        // Two rings on one ledger stand for two instances; each runs eight lookups at once.
        let (a, b) = (ring(dir.path()), ring(dir.path()));
        let lookups = (0..16).map(|i| {
            let r = if i % 2 == 0 { &a } else { &b };
            r.key_for("acme", "2026-12-03T10")
        });
        let keys = futures::future::join_all(lookups).await;
        let stored = a.open("acme", "2026-12-03T10", "").await.unwrap_err();
        let LedgerError::Mismatch { found, .. } = stored else {
            panic!("{stored:?}")
        };
        for k in keys {
            assert_eq!(k.unwrap().id, found);
        }
        assert_eq!(a.list(None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn shredding_removes_exactly_the_hours_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let r = ring(dir.path());
        for (t, h) in [
            ("a", "2026-12-03T09"),
            ("a", "2026-12-03T10"),
            ("a", "2026-12-03T11"),
            ("b", "2026-12-03T10"),
        ] {
            r.key_for(t, h).await.unwrap();
        }
        let gone = r
            .shred("a", "2026-12-03T10", "2026-12-03T11")
            .await
            .unwrap();
        let hours: Vec<&str> = gone.iter().map(|l| l.hour.as_str()).collect();
        assert_eq!(hours, ["2026-12-03T10", "2026-12-03T11"]);
        let left: Vec<(String, String)> = r
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.tenant, l.hour))
            .collect();
        assert_eq!(
            left,
            [
                ("a".into(), "2026-12-03T09".into()),
                ("b".into(), "2026-12-03T10".into())
            ]
        );
        assert!(matches!(
            r.open("a", "2026-12-03T10", "x").await,
            Err(LedgerError::Shredded { .. })
        ));
    }
}
