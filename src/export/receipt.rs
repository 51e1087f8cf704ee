//! Access receipts: who read which part of the archive, signed with the `[signing]` key and
//! stored beside the shredding receipts at `_receipts/access/<when>-<random>.json`, in the same
//! envelope (`{"receipt", "signature", "public_key"}`, the signature over the `receipt` text's
//! exact bytes).

use logferry_integrity::signing::SigningKey;
use logferry_sink::store::{LedgerStore, StoreError};
use serde::{Deserialize, Serialize};

pub const ACCESS_FORMAT: &str = "logferry-access-receipt-1";
/// Under the receipts' prefix.
pub const ACCESS_DIR: &str = "_receipts/access/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessReceipt {
    pub format: String,
    /// `export` or `replay`.
    pub action: String,
    pub sink: String,
    pub by: String,
    pub at: String,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The conditions as given; `--where-hmac` as its field and pseudonyms only.
    #[serde(default, rename = "where")]
    pub conditions: Vec<String>,
    pub objects_read: u64,
    pub objects_unverified: u64,
    pub objects_erased: u64,
    pub records: u64,
    /// `export --out FILE`: the SHA-256 of the file as written, and its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// `replay`: the sink the records went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_sink: Option<String>,
    /// `complete`, `incomplete` (problems in the archive), or what failed (the output, the
    /// delivery): access is recorded whatever became of it.
    #[serde(default)]
    pub outcome: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt could not be written: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no random bytes for the receipt's name: {0}")]
    Random(String),
    #[error("the receipt could not be stored at {key}: {cause}")]
    Store { key: String, cause: StoreError },
    #[error("the receipt's name {0} was taken")]
    Taken(String),
}

/// Signs and stores `r` under `prefix` (empty, or ending in `/`); returns its key.
pub async fn store(
    store: &dyn LedgerStore,
    prefix: &str,
    r: &AccessReceipt,
    signer: &SigningKey,
) -> Result<String, ReceiptError> {
    let text = serde_json::to_string(r)?;
    let envelope = serde_json::json!({
        "receipt": text,
        "signature": signer.sign(text.as_bytes()),
        "public_key": signer.public_hex(),
    });
    let mut rand = [0u8; 8];
    logferry_vault::crypt::random(&mut rand).map_err(|e| ReceiptError::Random(e.to_string()))?;
    // Named by its own time: `verify` recomputes the name from what is signed.
    let at = logferry_integrity::chained::parse_time(&r.at).unwrap_or_else(chrono::Utc::now);
    let key = format!(
        "{prefix}{ACCESS_DIR}{}-{}.json",
        at.format("%Y%m%dT%H%M%SZ"),
        hex::encode(rand)
    );
    let bytes = serde_json::to_vec_pretty(&envelope)?;
    match store.put_new(&key, &bytes).await {
        Ok(true) => Ok(key),
        Ok(false) => Err(ReceiptError::Taken(key)),
        Err(cause) => Err(ReceiptError::Store { key, cause }),
    }
}
