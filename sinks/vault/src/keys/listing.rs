//! The ledger as an operator sees it: every entry listed and checked, and entries deleted
//! (`logferry keys`, `logferry shred`, retention). Writing and reading objects never lists.

use super::{is_hour, is_tenant, KeyRing, MAX_ENTRY};
use crate::ledger::{is_key_id, Entry, LedgerError};

/// A key entry found in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub tenant: String,
    pub hour: String,
    pub key_id: String,
    /// Its key in the store (under the ring's prefix).
    pub path: String,
    /// Why the entry is not to be trusted (`None`: it is authentic).
    pub forged: Option<String>,
}

impl KeyRing {
    /// Every key entry, for one tenant or all, oldest first, each checked (forged ones are
    /// listed with why; a local KEK's entries are unwrapped to check them, other KEKs' are
    /// checked by their signature alone).
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<Listed>, LedgerError> {
        let root = format!("{}_keys/", self.prefix);
        let under = match tenant {
            Some(t) => format!("{root}{t}/"),
            None => root.clone(),
        };
        let stored = self
            .store
            .list_all(&under)
            .await
            .map_err(LedgerError::Store)?;
        let mut out = Vec::new();
        for st in stored {
            let path = st.key;
            if st.kind != logferry_sink::store::Kind::File {
                self.note_forged();
                out.push(Listed {
                    tenant: "?".into(),
                    hour: String::new(),
                    key_id: String::new(),
                    forged: Some("a symbolic link or special file in the ledger".into()),
                    path,
                });
                continue;
            }
            let rest = path.strip_prefix(&root).unwrap_or(&path);
            let parts: Vec<&str> = rest.split('/').collect();
            let (t, hour, named_id) = match parts[..] {
                [t, h, file] => match file.strip_suffix(".key") {
                    Some(id) => (t, h, Some(id)),
                    None => (t, h, None),
                },
                [t, file] => (t, file.strip_suffix(".key").unwrap_or(file), None),
                _ => ("?", rest, None),
            };
            let mut l = Listed {
                tenant: t.to_owned(),
                hour: hour.to_owned(),
                key_id: named_id.unwrap_or("").to_owned(),
                path: path.clone(),
                forged: None,
            };
            let legacy = parts.len() == 2;
            if !is_tenant(t) || !is_hour(hour) || !(legacy || named_id.is_some_and(is_key_id)) {
                l.forged = Some("not a name logferry gives a key entry".into());
                out.push(l);
                continue;
            }
            let entry = match self.store.get(&path, MAX_ENTRY).await {
                Ok(Some(b)) => serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()),
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            };
            match entry {
                Err(e) => l.forged = Some(format!("unreadable: {e}")),
                Ok(e) => {
                    if legacy {
                        // Its id is read from the entry: only a key id is taken as one.
                        l.key_id = if is_key_id(&e.key_id) {
                            e.key_id.clone()
                        } else {
                            String::new()
                        };
                    }
                    l.forged = self.distrust(&e, t, hour, &l.key_id);
                    if l.forged.is_none() && self.kek.authenticates_entries() {
                        if let Err(err) = self.kek.unwrap(&e).await {
                            l.forged = Some(err.to_string());
                        }
                    }
                }
            }
            if let Some(why) = &l.forged {
                self.note_forged();
                tracing::warn!(path = %l.path, why = %why, "forged key ledger entry; not used");
            }
            out.push(l);
        }
        out.sort_by(|a, b| (&a.hour, &a.tenant, &a.key_id).cmp(&(&b.hour, &b.tenant, &b.key_id)));
        Ok(out)
    }

    /// Deletes exactly these listed entries; cached copies are dropped.
    pub async fn delete(&self, entries: &[Listed]) -> Result<(), LedgerError> {
        for l in entries {
            self.store
                .delete(&l.path)
                .await
                .map_err(LedgerError::Store)?;
        }
        let mut c = self.cache();
        c.keys.retain(|(t, h), k| {
            !entries
                .iter()
                .any(|l| &l.tenant == t && &l.hour == h && l.key_id == k.key.id)
        });
        Ok(())
    }

    /// Deletes every entry of `tenant` for the hours `from..=to` (inclusive, `YYYY-MM-DDTHH`),
    /// forged ones too; returns what was deleted. Cached copies are dropped at once in this
    /// process (other processes stop using theirs within [`RECHECK`](super::RECHECK)).
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
                .delete(&l.path)
                .await
                .map_err(LedgerError::Store)?;
        }
        let mut c = self.cache();
        c.keys
            .retain(|(t, h), _| !(t == tenant && h.as_str() >= from && h.as_str() <= to));
        Ok(hit)
    }
}
