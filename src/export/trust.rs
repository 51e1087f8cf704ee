//! What an export trusts and lists: the names under the prefixes, the entries of this sink's
//! signed digests, and the data keys this sink's signed shredding receipts erased.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use logferry_integrity::chain::{self, Entry};
use logferry_sink::store::{Kind, LedgerStore};

use super::run::ExportError;
use super::summary::Summary;

/// Prefixes listed at once.
const LISTINGS: usize = 8;

/// Every name under the prefixes, sorted, with what it is.
pub(super) async fn list(
    store: &Arc<dyn LedgerStore>,
    prefixes: &[String],
) -> Result<Vec<(String, Kind)>, ExportError> {
    let sem = Arc::new(tokio::sync::Semaphore::new(LISTINGS));
    let mut set = tokio::task::JoinSet::new();
    for p in prefixes {
        let (store, p, sem) = (store.clone(), p.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = store.list_all(&p).await;
            (p, r)
        });
    }
    let mut all: BTreeMap<String, Kind> = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        let (prefix, r) = done.map_err(|e| ExportError::List {
            prefix: String::new(),
            cause: e.to_string(),
        })?;
        let listed = r.map_err(|e| ExportError::List {
            prefix,
            cause: e.to_string(),
        })?;
        for s in listed {
            all.insert(s.key, s.kind);
        }
    }
    Ok(all.into_iter().collect())
}

/// The entries of every digest signed with `public_key`, by object key. Digests signed
/// otherwise are counted as problems of the archive only through the objects they would
/// vouch for (those stay unverified).
pub(super) async fn digests(
    store: &Arc<dyn LedgerStore>,
    prefix: &str,
    public_key: &[u8],
    sink: &str,
    s: &mut Summary,
) -> Result<HashMap<String, Entry>, ExportError> {
    let under = match prefix.trim_matches('/') {
        "" => format!("{}/", chain::DIGESTS),
        p => format!("{p}/{}/", chain::DIGESTS),
    };
    let listed = store
        .list_all(&under)
        .await
        .map_err(|e| ExportError::List {
            prefix: under.clone(),
            cause: e.to_string(),
        })?;
    let mut out = HashMap::new();
    for d in listed.into_iter().filter(|d| d.kind == Kind::File) {
        let Ok(Some(bytes)) = store.get(&d.key, chain::MAX_DIGEST).await else {
            continue;
        };
        let Ok(f) = chain::parse_digest(&bytes) else {
            continue;
        };
        // Signed by the key, and of this sink: another sink's digests (the same key signs
        // them) vouch for nothing here.
        if !f.signed_by(public_key) || f.body.sink != sink {
            continue;
        }
        s.digests += 1;
        for e in f.body.entries {
            out.insert(e.key.clone(), e);
        }
    }
    Ok(out)
}

/// The ids of the data keys that shredding receipts of `sink`, signed with `public_key`,
/// erased (another sink's receipt, signed with the same key, erases nothing here).
pub(super) async fn attested(
    store: &Arc<dyn LedgerStore>,
    prefix: &str,
    public_key: &[u8],
    sink: &str,
) -> HashSet<String> {
    use logferry_vault::shred::{Receipt, Stored, RECEIPT_FORMAT};
    let under = match prefix.trim_matches('/') {
        "" => "_receipts/".to_string(),
        p => format!("{p}/_receipts/"),
    };
    let mut out = HashSet::new();
    let Ok(listed) = store.list_all(&under).await else {
        return out;
    };
    for l in listed.into_iter().filter(|l| l.kind == Kind::File) {
        let Ok(Some(bytes)) = store.get(&l.key, 64 << 10).await else {
            continue;
        };
        let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else {
            continue;
        };
        let Ok(r) = serde_json::from_str::<Receipt>(&stored.receipt) else {
            continue;
        };
        let signed = stored.signature.as_deref().is_some_and(|sig| {
            logferry_integrity::signing::verify(public_key, stored.receipt.as_bytes(), sig)
        });
        if r.format == RECEIPT_FORMAT && signed && r.sink == sink {
            out.extend(r.key_ids);
        }
    }
    out
}
