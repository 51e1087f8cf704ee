//! Shredding receipts: at their names, of their tenants, signed.

use std::sync::Arc;

use logferry_sink::store::LedgerStore;

use super::{Options, Report};

/// A file under the receipts' place: at a name `shred` gives (`<tenant>/<UTC
/// stamp>-<hex>.json`), a receipt of that tenant, signed by the public key. An unsigned one
/// (`shred --unsigned`) attests nothing and is named as such. Returns the key ids a valid
/// signed receipt erased.
pub(super) async fn check_receipt(
    r: &mut Report,
    store: &Arc<dyn LedgerStore>,
    o: &Options,
    under: &str,
    key: &str,
) -> Vec<String> {
    use logferry_vault::shred::{Receipt, Stored, RECEIPT_FORMAT};
    let rest = key.strip_prefix(under).unwrap_or(key);
    let named = rest.split_once('/').and_then(|(t, file)| {
        let (stamp, hexpart) = file.strip_suffix(".json")?.split_once('-')?;
        let ok = stamp.len() == 16
            && chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").is_ok()
            && !hexpart.is_empty()
            && hexpart.bytes().all(|b| b.is_ascii_hexdigit())
            && logferry_sink::key::is_clean(t);
        ok.then_some(t)
    });
    let Some(tenant) = named else {
        r.problem(
            "receipt_forged",
            format!("{key} is not at a name `logferry shred` gives a receipt"),
        );
        return Vec::new();
    };
    let stored: Option<Stored> = match store.get(key, 64 << 10).await {
        Ok(Some(b)) => serde_json::from_slice(&b).ok(),
        _ => None,
    };
    let Some(stored) = stored else {
        r.problem("receipt_forged", format!("{key} is not a receipt"));
        return Vec::new();
    };
    let receipt: Option<Receipt> = serde_json::from_str(&stored.receipt).ok();
    match (receipt, stored.signature.as_deref()) {
        (Some(rc), _) if rc.format != RECEIPT_FORMAT || rc.tenant != tenant => r.problem(
            "receipt_forged",
            format!("{key}: not a receipt of tenant {tenant:?}"),
        ),
        (Some(rc), _) if !o.sink.is_empty() && rc.sink != o.sink => r.problem(
            "receipt_forged",
            format!(
                "{key}: a shredding receipt of sink {:?}, not of {:?}: copied from another archive",
                rc.sink, o.sink
            ),
        ),
        (Some(_), None) => r.problem(
            "receipt_unsigned",
            format!(
                "{key}: an unsigned shredding receipt (`shred --unsigned`): nothing attests it"
            ),
        ),
        (Some(rc), Some(sig))
            if logferry_integrity::signing::verify(
                &o.public_key,
                stored.receipt.as_bytes(),
                sig,
            ) =>
        {
            return rc.key_ids;
        }
        (Some(_), Some(_)) => r.problem(
            "receipt_forged",
            format!("{key}: the signature is not the public key's"),
        ),
        (None, _) => r.problem("receipt_forged", format!("{key} is not a receipt")),
    }
    Vec::new()
}

/// An access receipt (`export`, `replay`) at `key`: listed when its signature is the public
/// key's, a problem otherwise. `Ok(false)` when it is a shredding receipt after all (of a
/// tenant named `access`), for [`check_receipt`].
pub(super) async fn check_access(
    r: &mut Report,
    store: &Arc<dyn LedgerStore>,
    o: &Options,
    key: &str,
) -> bool {
    use crate::export::receipt::{AccessReceipt, ACCESS_FORMAT};
    use logferry_vault::shred::Stored;
    let stored: Option<Stored> = match store.get(key, 64 << 10).await {
        Ok(Some(b)) => serde_json::from_slice(&b).ok(),
        _ => None,
    };
    let Some(stored) = stored else {
        r.problem("receipt_forged", format!("{key} is not a receipt"));
        return true;
    };
    let Ok(rc) = serde_json::from_str::<AccessReceipt>(&stored.receipt) else {
        return false;
    };
    let signed = stored.signature.as_deref().is_some_and(|sig| {
        logferry_integrity::signing::verify(&o.public_key, stored.receipt.as_bytes(), sig)
    });
    if rc.format != ACCESS_FORMAT || !signed {
        r.problem(
            "receipt_forged",
            format!("{key}: an access receipt whose signature is not the public key's"),
        );
        return true;
    }
    // At the name its own time gives (a copy under another name would count an access twice).
    let stamp = logferry_integrity::chained::parse_time(&rc.at)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string());
    let name = key.rsplit('/').next().unwrap_or("");
    let named = stamp.is_some_and(|st| {
        name.strip_prefix(&format!("{st}-"))
            .and_then(|n| n.strip_suffix(".json"))
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if !named {
        r.problem(
            "receipt_misplaced",
            format!("{key}: a signed access receipt, but not at the name its time gives (a copy)"),
        );
        return true;
    }
    r.access.push(super::report::Access {
        key: key.to_string(),
        action: rc.action,
        by: rc.by,
        at: rc.at,
        from: rc.from,
        to: rc.to,
        records: rc.records,
        outcome: rc.outcome,
    });
    true
}
