//! Crypto-shredding: deleting a tenant-hour's ledger entry makes its objects unreadable, and a
//! signed receipt records what was erased, when and by whom.
//!
//! A receipt is stored beside the ledger at `_receipts/<tenant>/<when>-<random>.json` as
//! `{"receipt": "<JSON text>", "signature": "<base64 Ed25519>", "public_key": "<hex>"}`: the
//! signature covers the exact bytes of the `receipt` string, so a reader checks it without
//! re-encoding any JSON (`docs/encryption.md`).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::crypt::CryptError;
use crate::keys::{hour_of, KeyRing, Listed};
use crate::ledger::LedgerError;
use logferry_integrity::signing::SigningKey;
use logferry_sink::store::StoreError;

pub const RECEIPT_FORMAT: &str = "logferry-shred-receipt-1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    pub sink: String,
    pub tenant: String,
    pub hours: Vec<String>,
    /// The ids of the authentic keys erased.
    pub key_ids: Vec<String>,
    /// Ledger names deleted that held no key logferry made (planted entries): their paths, so
    /// a receipt never vouches for text someone else wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forged_removed: Vec<String>,
    pub shredded_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// `manual` (`logferry shred`) or `retention`.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub receipt: String,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub public_key: Option<String>,
}

/// What one shredding did.
#[derive(Debug)]
pub struct Shredded {
    pub erased: Vec<Listed>,
    /// Where the receipt was stored (nothing erased: no receipt).
    pub receipt_key: Option<String>,
    pub receipt: Option<Stored>,
}

/// Why a shredding did not finish. Once keys are erased, the receipt that could not be stored
/// is carried whole (it holds no secret) so that the caller can keep it from the log.
#[derive(Debug, thiserror::Error)]
pub enum ShredError {
    /// The ledger could not be listed, or an entry could not be deleted.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The retention does not fit a date's range.
    #[error("{0}")]
    Retention(chrono::OutOfRangeError),
    /// The receipt could not be written out.
    #[error("{0}")]
    Receipt(serde_json::Error),
    #[error(transparent)]
    Random(#[from] CryptError),
    /// The keys are gone; something else holds the receipt's name.
    #[error("the keys were shredded but receipt name {key} was taken; the receipt: {receipt}")]
    ReceiptTaken { key: String, receipt: String },
    /// The keys are gone; the store refused the receipt.
    #[error("the keys were shredded but the receipt could not be stored ({cause}); the receipt: {receipt}")]
    ReceiptNotStored { cause: StoreError, receipt: String },
}

pub struct Request<'a> {
    pub sink: &'a str,
    pub tenant: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub by: Option<&'a str>,
    pub reason: &'a str,
}

/// Deletes the entries of `req.tenant` for hours `from..=to`, then stores a receipt signed by
/// `signer` (unsigned when there is none). The entries are gone before the receipt is written:
/// a receipt never claims an erasure that did not happen. When the receipt cannot be stored
/// the error carries it whole (it holds no secret), so that it can be kept from the log.
pub async fn shred(
    keys: &KeyRing,
    req: &Request<'_>,
    signer: Option<&SigningKey>,
    now: DateTime<Utc>,
) -> Result<Shredded, ShredError> {
    let erased = keys.shred(req.tenant, req.from, req.to).await?;
    if erased.is_empty() {
        return Ok(Shredded {
            erased,
            receipt_key: None,
            receipt: None,
        });
    }
    let receipt = Receipt {
        format: RECEIPT_FORMAT.into(),
        sink: req.sink.into(),
        tenant: req.tenant.into(),
        hours: {
            let mut h: Vec<String> = erased
                .iter()
                .filter(|l| l.forged.is_none())
                .map(|l| l.hour.clone())
                .collect();
            h.dedup();
            h
        },
        key_ids: erased
            .iter()
            .filter(|l| l.forged.is_none())
            .map(|l| l.key_id.clone())
            .collect(),
        forged_removed: erased
            .iter()
            .filter(|l| l.forged.is_some())
            .map(|l| l.path.clone())
            .collect(),
        shredded_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        by: req.by.map(str::to_owned),
        reason: req.reason.into(),
    };
    let text = serde_json::to_string(&receipt).map_err(ShredError::Receipt)?;
    let stored = Stored {
        signature: signer.map(|s| s.sign(text.as_bytes())),
        public_key: signer.map(SigningKey::public_hex),
        receipt: text,
    };
    let body = serde_json::to_vec_pretty(&stored).map_err(ShredError::Receipt)?;
    let mut rnd = [0u8; 4];
    crate::crypt::random(&mut rnd)?;
    let key = format!(
        "{}_receipts/{}/{}-{}.json",
        keys.prefix(),
        req.tenant,
        now.format("%Y%m%dT%H%M%SZ"),
        hex::encode(rnd)
    );
    match keys.store().put_new(&key, &body).await {
        Ok(true) => Ok(Shredded {
            erased,
            receipt_key: Some(key),
            receipt: Some(stored),
        }),
        Ok(false) => Err(ShredError::ReceiptTaken {
            key,
            receipt: String::from_utf8_lossy(&body).into_owned(),
        }),
        Err(cause) => Err(ShredError::ReceiptNotStored {
            cause,
            receipt: String::from_utf8_lossy(&body).into_owned(),
        }),
    }
}

/// Shreds every tenant-hour that ended more than `retention` before `now`: the erasure at the
/// end of retention. Idempotent: what is gone is not found again. Returns what each tenant's
/// shredding did.
pub async fn expire(
    keys: &KeyRing,
    sink: &str,
    retention: std::time::Duration,
    signer: Option<&SigningKey>,
    now: DateTime<Utc>,
) -> Result<Vec<Shredded>, ShredError> {
    let retention = Duration::from_std(retention).map_err(ShredError::Retention)?;
    // An hour is kept while any of it is younger than the retention.
    let cutoff = hour_of(now - retention - Duration::hours(1));
    let listed = keys.list(None).await?;
    let mut tenants: Vec<&str> = listed
        .iter()
        .filter(|l| l.hour <= cutoff)
        .map(|l| l.tenant.as_str())
        .collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut out = Vec::new();
    for tenant in tenants {
        let req = Request {
            sink,
            tenant,
            from: "0000-00-00T00",
            to: &cutoff,
            by: Some("retention"),
            reason: "retention",
        };
        out.push(shred(keys, &req, signer, now).await?);
    }
    Ok(out)
}
