//! A sink's data keys: made and added to its ledger, cached unwrapped, read back for objects.
//!
//! A tenant-hour's key is the authentic one with the lowest id already in the ledger, or one made
//! under a random key id (`_keys/<tenant>/<hour>/<key_id>.key`) when there is none. Only an
//! entry whose wrap (local KEK) or signature (other KEKs) proves logferry made it is ever taken:
//! nothing planted there is used to encrypt, and a batch replayed after a crash is sealed under
//! the key it was first sealed under (same bytes, same object). Reading an object opens exactly the
//! entry its header names, and only an authentic one: a local KEK's wrap authenticates it; any
//! other KEK's entry must carry the `[signing]` key's signature.
//!
//! A cached key is checked against the ledger again once it is [`RECHECK`] old: a key shredded
//! while logferry runs stops being used within that time (later records get a new key), and the
//! cache is emptied when the wall-clock hour changes. Keys are zeroized when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};

use crate::crypt::DataKey;
use crate::ledger::{entry_key, is_key_id, legacy_entry_key, Entry, Kek, LedgerError};
use logferry_integrity::signing::SigningKey;
use logferry_sink::store::LedgerStore;

mod listing;

pub use listing::Listed;

/// A ledger entry is a few hundred bytes; anything much larger was not written by logferry.
const MAX_ENTRY: u64 = 64 << 10;
/// How many of a tenant-hour's entries are read when looking for its key.
const MAX_LOOKED_AT: usize = 64;
/// More cached keys than this and the cache starts over (a backfill across many tenant-hours).
const MAX_CACHED: usize = 4096;
/// How long a cached key is used before its entry is looked up again: the bound on how long a
/// running process goes on writing under a key that was shredded.
pub const RECHECK: Duration = Duration::from_secs(60);

/// How entries are signed and which signature a reader trusts.
#[derive(Default, Clone)]
pub struct EntryAuth {
    /// Signs the entries this ring writes.
    pub signer: Option<Arc<SigningKey>>,
    /// The public key (32 bytes) whose signature makes an entry authentic; from the signer
    /// when not given.
    pub trusted: Option<Vec<u8>>,
}

impl EntryAuth {
    pub fn signing(key: Option<Arc<SigningKey>>) -> Self {
        let trusted = key.as_ref().and_then(|k| hex::decode(k.public_hex()).ok());
        EntryAuth {
            signer: key,
            trusted,
        }
    }
}

pub struct KeyRing {
    store: Arc<dyn LedgerStore>,
    kek: Arc<dyn Kek>,
    auth: EntryAuth,
    /// Prepended to `_keys/...` (empty, or ending in `/`).
    prefix: String,
    cache: Mutex<Cache>,
    /// Held while a key is made: deliveries running at once for the same tenant-hour make one
    /// key, not one each.
    making: tokio::sync::Mutex<()>,
    forged: AtomicU64,
    /// Told of each forged entry met (a metric).
    on_forged: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

struct Cached {
    key: Arc<DataKey>,
    /// When its entry was last seen in the ledger (or written).
    seen: Instant,
    /// SHA-256 of the entry's bytes: a recheck that finds other bytes at its name finds an
    /// entry replaced by someone else, and stops using the key.
    entry: [u8; 32],
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

#[derive(Default)]
struct Cache {
    hour: i64,
    keys: HashMap<(String, String), Cached>,
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

/// Whether `t` can be a tenant in a ledger path (as the key template cleans values).
fn is_tenant(t: &str) -> bool {
    logferry_sink::key::is_clean(t)
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
            auth: EntryAuth::default(),
            prefix,
            cache: Mutex::new(Cache::default()),
            making: tokio::sync::Mutex::new(()),
            forged: AtomicU64::new(0),
            on_forged: std::sync::OnceLock::new(),
        }
    }

    /// Entries written are signed by, and entries read checked against, `auth`.
    pub fn with_auth(mut self, auth: EntryAuth) -> Self {
        self.auth = auth;
        self
    }

    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many forged entries this ring has come across (each time it met one).
    pub fn forged_seen(&self) -> u64 {
        self.forged.load(Ordering::Relaxed)
    }

    /// `f` is called for each forged entry met from now on (the first caller's only).
    pub fn count_forged_with(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_forged.set(f);
    }

    fn note_forged(&self) {
        self.forged.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.on_forged.get() {
            f();
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        let now = Utc::now().timestamp().div_euclid(3600);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.hour != now {
            c.keys.clear();
            c.hour = now;
        }
        c
    }

    fn remember(&self, key: Arc<DataKey>, entry: [u8; 32]) -> Arc<DataKey> {
        let mut c = self.cache();
        if c.keys.len() >= MAX_CACHED {
            c.keys.clear();
        }
        let at = (key.tenant.clone(), key.hour.clone());
        c.keys.insert(
            at,
            Cached {
                key: key.clone(),
                seen: Instant::now(),
                entry,
            },
        );
        key
    }

    /// The cached key of a tenant-hour, if its entry was seen within [`RECHECK`]; a stale one
    /// comes back as the second value, to be looked up again.
    #[allow(clippy::type_complexity)]
    fn cached(
        &self,
        tenant: &str,
        hour: &str,
    ) -> (Option<Arc<DataKey>>, Option<(Arc<DataKey>, [u8; 32])>) {
        let c = self.cache();
        match c.keys.get(&(tenant.to_owned(), hour.to_owned())) {
            Some(k) if k.seen.elapsed() < RECHECK => (Some(k.key.clone()), None),
            Some(k) => (None, Some((k.key.clone(), k.entry))),
            None => (None, None),
        }
    }

    fn forget(&self, tenant: &str, hour: &str) {
        self.cache()
            .keys
            .remove(&(tenant.to_owned(), hour.to_owned()));
    }

    /// The data key to encrypt a tenant-hour's objects with: an authentic key of the
    /// tenant-hour already in the ledger (the lowest key id: so a batch replayed after a crash
    /// is sealed under the key it was first sealed under, and writes the same bytes), else one
    /// made and written to the ledger (create-new, under a random id); the entry exists before
    /// any object that needs it is written. Nothing planted is ever used: an entry is taken
    /// only when its wrap or signature proves logferry made it.
    pub async fn key_for(&self, tenant: &str, hour: &str) -> Result<Arc<DataKey>, LedgerError> {
        if let (Some(k), _) = self.cached(tenant, hour) {
            return Ok(k);
        }
        let _making = self.making.lock().await;
        let stale = match self.cached(tenant, hour) {
            (Some(k), _) => return Ok(k),
            (None, stale) => stale,
        };
        if let Some((k, entry)) = stale {
            let path = self.path(&entry_key(tenant, hour, &k.id));
            match self
                .store
                .get(&path, MAX_ENTRY)
                .await
                .map_err(LedgerError::Store)?
            {
                Some(b) if sha256(&b) == entry => return Ok(self.remember(k, entry)),
                Some(_) => {
                    self.note_forged();
                    tracing::warn!(
                        tenant,
                        hour,
                        path,
                        "the ledger entry of the data key in use was replaced by something logferry did not write; later records get another key"
                    );
                }
                None => tracing::info!(
                    tenant,
                    hour,
                    key_id = %k.id,
                    "the data key in use was shredded; later records get a new key"
                ),
            }
            self.forget(tenant, hour);
        }
        if let Some((k, entry)) = self.find(tenant, hour).await? {
            return Ok(self.remember(Arc::new(k), entry));
        }
        let (key, mut entry) = self.kek.new_key(tenant, hour).await?;
        match &self.auth.signer {
            Some(s) => entry.sign(s),
            None if !self.kek.authenticates_entries() => {
                return Err(LedgerError::Seal(format!(
                    "KEK {:?} needs a [signing] key_file: its ledger entries are signed",
                    self.kek.name()
                )))
            }
            None => {}
        }
        let bytes = serde_json::to_vec_pretty(&entry)
            .map_err(|e| LedgerError::Seal(format!("cannot write the entry: {e}")))?;
        let path = self.path(&entry_key(tenant, hour, &key.id));
        if !self
            .store
            .put_new(&path, &bytes)
            .await
            .map_err(LedgerError::Store)?
        {
            // A random 128-bit name was taken: somebody is writing into the ledger.
            self.note_forged();
            return Err(LedgerError::Forged {
                path,
                why: "something was already at the new key's name".into(),
            });
        }
        Ok(self.remember(Arc::new(key), sha256(&bytes)))
    }

    /// The authentic key of a tenant-hour with the lowest id in the ledger, if any. Forged
    /// entries are passed over (and counted); a ledger that does not answer is an error.
    async fn find(
        &self,
        tenant: &str,
        hour: &str,
    ) -> Result<Option<(DataKey, [u8; 32])>, LedgerError> {
        if !is_tenant(tenant) || !is_hour(hour) {
            return Ok(None);
        }
        let under = self.path(&format!("_keys/{tenant}/{hour}/"));
        let names = self.store.list(&under).await.map_err(LedgerError::Store)?;
        // Bounded: names planted by the thousand cost at most this many reads; past them a
        // new key is made (writing goes on).
        for path in names.into_iter().take(MAX_LOOKED_AT) {
            let Some(id) = path
                .strip_prefix(&under)
                .and_then(|n| n.strip_suffix(".key"))
                .filter(|id| is_key_id(id))
            else {
                continue;
            };
            // Whatever is wrong with one name (forged, too large, unreadable, a folder) it is
            // passed over: a planted name can never stop writing. Only the listing failing is
            // the ledger being unavailable.
            match self.read_at(&path, tenant, hour, id).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                // A name that can never be read as an entry (too large, a link, a folder,
                // a FIFO) is passed over; a store or KEK service that fails for a moment is an
                // error, so that no key is made beside the one a replay needs.
                Err(LedgerError::Store(e)) if !e.is_planted() => return Err(LedgerError::Store(e)),
                Err(e @ LedgerError::Kek(_)) => return Err(e),
                Err(LedgerError::Store(e)) => {
                    self.note_forged();
                    tracing::warn!(path, error = %e, "a key ledger entry cannot be read; not used");
                }
                Err(e) => {
                    self.note_forged();
                    tracing::warn!(path, error = %e, "a key ledger entry logferry cannot trust; not used");
                }
            }
        }
        Ok(None)
    }

    fn path(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel)
    }

    /// Why `entry`, found at `path` for the tenant-hour and key id its name gives, is not to be
    /// trusted; `None` when it is authentic (a local KEK's wrap is checked when it unwraps).
    fn distrust(&self, entry: &Entry, tenant: &str, hour: &str, key_id: &str) -> Option<String> {
        if entry.tenant != tenant || entry.hour != hour || entry.key_id != key_id {
            return Some(format!(
                "it names tenant {:?} hour {} key {}, its name another",
                entry.tenant, entry.hour, entry.key_id
            ));
        }
        if let Some(public) = &self.auth.trusted {
            if entry.signature.is_some() {
                return (!entry.signed_by_key(public))
                    .then(|| "its signature is not the [signing] key's".to_owned());
            }
        }
        if self.kek.authenticates_entries() {
            return None;
        }
        Some(match (&self.auth.trusted, &entry.signature) {
            (None, _) => "entries of this KEK are trusted only when signed, and no [signing] key is configured to check them".to_owned(),
            (Some(_), None) => "it is not signed (anyone allowed to encrypt with the KEK can make such an entry)".to_owned(),
            (Some(_), Some(_)) => "its signature is not the [signing] key's".to_owned(),
        })
    }

    /// The entry at `path`, checked, with the SHA-256 of its bytes: `None` when there is none.
    async fn read_at(
        &self,
        path: &str,
        tenant: &str,
        hour: &str,
        key_id: &str,
    ) -> Result<Option<(DataKey, [u8; 32])>, LedgerError> {
        let Some(bytes) = self
            .store
            .get(path, MAX_ENTRY)
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
        if let Some(why) = self.distrust(&entry, tenant, hour, key_id) {
            self.note_forged();
            tracing::warn!(path, why = %why, "forged key ledger entry; not used");
            return Err(LedgerError::Forged {
                path: path.to_owned(),
                why,
            });
        }
        let sha = sha256(&bytes);
        self.kek.unwrap(&entry).await.map(|k| Some((k, sha)))
    }

    /// The key an object's header names, for reading: never made. A key this ring holds for
    /// the current hour is used as it is (the spool reads back what it sealed).
    pub async fn open(
        &self,
        tenant: &str,
        hour: &str,
        key_id: &str,
    ) -> Result<Arc<DataKey>, LedgerError> {
        if !is_tenant(tenant) || !is_hour(hour) || !is_key_id(key_id) {
            return Err(LedgerError::Forged {
                path: format!("(header: tenant {tenant:?} hour {hour:?} key {key_id:?})"),
                why: "the object's header names no key logferry could have made".into(),
            });
        }
        if let Some(k) = self
            .cache()
            .keys
            .get(&(tenant.to_owned(), hour.to_owned()))
            .filter(|k| k.key.id == key_id)
        {
            return Ok(k.key.clone());
        }
        let path = self.path(&entry_key(tenant, hour, key_id));
        if let Some((k, _)) = self.read_at(&path, tenant, hour, key_id).await? {
            return Ok(Arc::new(k));
        }
        // An entry from before keys were named by id: one per tenant-hour.
        let legacy = self.path(&legacy_entry_key(tenant, hour));
        let Some(bytes) = self
            .store
            .get(&legacy, MAX_ENTRY)
            .await
            .map_err(LedgerError::Store)?
        else {
            return Err(LedgerError::Shredded {
                tenant: tenant.to_owned(),
                hour: hour.to_owned(),
            });
        };
        let found = serde_json::from_slice::<Entry>(&bytes)
            .map(|e| e.key_id)
            .unwrap_or_default();
        if found != key_id {
            return Err(LedgerError::Shredded {
                tenant: tenant.to_owned(),
                hour: hour.to_owned(),
            });
        }
        match self.read_at(&legacy, tenant, hour, key_id).await? {
            Some((k, _)) => Ok(Arc::new(k)),
            None => Err(LedgerError::Shredded {
                tenant: tenant.to_owned(),
                hour: hour.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
