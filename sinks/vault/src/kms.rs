//! The `aws_kms` KEK: data keys from KMS `GenerateDataKey`, opened again with `Decrypt`.
//!
//! Every call carries an encryption context naming the tenant, the hour and logferry's key id,
//! so KMS refuses to open an entry copied to another tenant or hour, and CloudTrail's record of
//! each call says which tenant-hour it served. The key material never leaves KMS; only the
//! ciphertext blob is kept in the ledger.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_types::retry::RetryConfig;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::crypt::{random, DataKey};
use crate::ledger::{Entry, Kek, LedgerError, FORMAT};

pub const PROVIDER: &str = "aws_kms";

/// Options of an `aws_kms` KEK, checked by the configuration loader.
#[derive(Debug, Clone, Default)]
pub struct KmsOptions {
    /// A key id, key ARN, alias name (`alias/...`) or alias ARN.
    pub key_id: String,
    pub region: Option<String>,
    /// A VPC endpoint or a test server.
    pub endpoint: Option<String>,
}

pub struct AwsKms {
    name: String,
    key_id: String,
    client: aws_sdk_kms::Client,
}

fn context(tenant: &str, hour: &str, key_id: &str) -> HashMap<String, String> {
    HashMap::from([
        ("logferry:tenant".to_string(), tenant.to_string()),
        ("logferry:hour".to_string(), hour.to_string()),
        ("logferry:key_id".to_string(), key_id.to_string()),
    ])
}

fn explain<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &str,
    key: &str,
    e: &aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> String {
    match (e.code(), e.message()) {
        (Some("AccessDeniedException"), _) => {
            format!("KMS {op} on {key}: access denied (grant kms:{op} on the key)")
        }
        (Some(c), m) => format!("KMS {op} on {key}: {c}: {}", m.unwrap_or("")),
        (None, _) => format!("KMS {op} on {key}: {e}"),
    }
}

impl AwsKms {
    /// Credentials come from the SDK's default chain (environment, web identity, instance
    /// role), as for the `s3` sink. The SDK's retries are off: a failure is the pipeline's
    /// `Retry`.
    pub async fn new(name: &str, o: &KmsOptions) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &o.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let base = loader.load().await;
        let mut b = aws_sdk_kms::config::Builder::from(&base).retry_config(RetryConfig::disabled());
        if let Some(e) = &o.endpoint {
            b = b.endpoint_url(e.clone());
        }
        AwsKms {
            name: name.to_owned(),
            key_id: o.key_id.clone(),
            client: aws_sdk_kms::Client::from_conf(b.build()),
        }
    }
}

#[async_trait]
impl Kek for AwsKms {
    fn name(&self) -> &str {
        &self.name
    }

    async fn new_key(&self, tenant: &str, hour: &str) -> Result<(DataKey, Entry), LedgerError> {
        let mut id = [0u8; 16];
        random(&mut id).map_err(|e| LedgerError::Seal(e.to_string()))?;
        let id = hex::encode(id);
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context(tenant, hour, &id)))
            .send()
            .await
            .map_err(|e| LedgerError::Kek(explain("GenerateDataKey", &self.key_id, &e)))?;
        let (Some(plain), Some(blob)) = (out.plaintext(), out.ciphertext_blob()) else {
            return Err(LedgerError::Seal("KMS returned no data key".into()));
        };
        if plain.as_ref().len() != 32 {
            return Err(LedgerError::Seal(
                "KMS returned a key that is not 32 bytes".into(),
            ));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(plain.as_ref());
        let entry = Entry {
            format: FORMAT.into(),
            key_id: id.clone(),
            tenant: tenant.to_owned(),
            hour: hour.to_owned(),
            kek: self.name.clone(),
            provider: PROVIDER.into(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(blob.as_ref()),
            kek_version: None,
            bind: None,
            signature: None,
            signed_by: None,
        };
        let key = DataKey {
            id,
            tenant: tenant.to_owned(),
            hour: hour.to_owned(),
            bytes,
        };
        Ok((key, entry))
    }

    async fn unwrap(&self, entry: &Entry) -> Result<DataKey, LedgerError> {
        entry.check(PROVIDER, &self.name)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&entry.wrapped)
            .map_err(|_| LedgerError::Unwrap(entry.key_id.clone()))?;
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(Some(context(&entry.tenant, &entry.hour, &entry.key_id)))
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            // The context or the blob does not match: moved, changed, or another key's.
            Err(e)
                if matches!(
                    e.code(),
                    Some("InvalidCiphertextException" | "IncorrectKeyException")
                ) =>
            {
                return Err(LedgerError::Unwrap(entry.key_id.clone()))
            }
            Err(e) => return Err(LedgerError::Kek(explain("Decrypt", &self.key_id, &e))),
        };
        let plain = out
            .plaintext()
            .filter(|p| p.as_ref().len() == 32)
            .ok_or_else(|| LedgerError::Unwrap(entry.key_id.clone()))?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(plain.as_ref());
        Ok(DataKey {
            id: entry.key_id.clone(),
            tenant: entry.tenant.clone(),
            hour: entry.hour.clone(),
            bytes,
        })
    }
}
