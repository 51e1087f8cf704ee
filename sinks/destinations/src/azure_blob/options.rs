//! What the configuration gives an `azure_blob` sink: where it writes, how it signs in, and
//! how append mode rolls over.

use std::time::Duration;

use super::sas::ConnectionString;
use crate::azure_auth::Entra;
use crate::tls::TlsOptions;

/// How the sink authenticates to the storage account.
#[derive(Clone, PartialEq, Eq)]
pub enum BlobAuth {
    /// The account key: container-scoped service SAS tokens are minted from it and renewed.
    AccountKey(Vec<u8>),
    /// A SAS token given by the user (without the leading `?`).
    Sas(String),
    /// Microsoft Entra ID (bearer tokens; HTTPS only).
    Entra(Entra),
}

impl std::fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobAuth::AccountKey(_) => f.write_str("AccountKey(***)"),
            BlobAuth::Sas(_) => f.write_str("Sas(***)"),
            BlobAuth::Entra(e) => write!(f, "Entra({e:?})"),
        }
    }
}

impl ConnectionString {
    /// The account, blob endpoint and credential it names; the key wins over a SAS.
    pub fn into_parts(self) -> (String, String, BlobAuth) {
        let auth = match (self.key, self.sas) {
            (Some(k), _) => BlobAuth::AccountKey(k),
            (None, Some(s)) => BlobAuth::Sas(s.trim_start_matches('?').to_string()),
            // `parse` refuses a string with neither.
            (None, None) => BlobAuth::Sas(String::new()),
        };
        (self.account, self.blob_endpoint, auth)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobType {
    /// One blob per batch.
    #[default]
    Block,
    /// Batches appended to a blob per rendered key, rolled over by size and age.
    Append,
}

/// When append mode starts the next blob of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendRoll {
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl Default for AppendRoll {
    fn default() -> Self {
        AppendRoll {
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AzureBlobOptions {
    pub container: String,
    pub account: String,
    /// The account's blob endpoint, without a trailing `/`.
    pub endpoint: String,
    pub auth: BlobAuth,
    pub tls: TlsOptions,
    pub access_tier: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// Create the container when it is missing (needs the account key: an account SAS is
    /// minted for it). Off by default: a typo should not create a new container.
    pub create_container: bool,
    pub blob_type: BlobType,
    pub append_roll: AppendRoll,
    /// The configuration allowed credentials over http:// (checked at load); minted SAS
    /// tokens then allow http too (`spr=https,http`), otherwise `spr=https`.
    pub allow_plaintext_credentials: bool,
}
