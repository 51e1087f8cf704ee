//! Each sink type's own options (the keys of a `[sinks.<name>]` table besides
//! [`super::SinkCommon`]'s), and the TLS and Entra ID options they share.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::super::values::{Dur, Size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    pub path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3 {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    pub content_type: Option<String>,
    pub server_side_encryption: Option<String>,
    pub kms_key_id: Option<String>,
    pub bucket_key_enabled: Option<bool>,
    pub storage_class: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub object_lock: Option<ObjectLock>,
    pub checksum: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub multipart_threshold: Option<Size>,
    pub part_size: Option<Size>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
    pub access_key_id_file: Option<String>,
    pub secret_access_key_file: Option<String>,
    pub tls: Option<Tls>,
    /// Send credentials over http:// (a trusted network only); warned at every start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBlob {
    pub container: String,
    pub connection_string: Option<String>,
    pub connection_string_file: Option<String>,
    /// Without a connection string: the account name, its blob endpoint (default
    /// `https://<account>.blob.core.windows.net`) and one of the credentials below.
    pub account: Option<String>,
    pub endpoint: Option<String>,
    pub account_key: Option<String>,
    pub account_key_file: Option<String>,
    pub sas_token: Option<String>,
    pub sas_token_file: Option<String>,
    /// Entra ID: `workload_identity`, `managed_identity` or `client_secret`.
    pub auth: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub authority_host: Option<String>,
    pub federated_token_file: Option<String>,
    pub tls: Option<Tls>,
    pub access_tier: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub create_container: bool,
    pub blob_type: Option<String>,
    pub append_roll: Option<AppendRoll>,
    /// Send credentials over http:// (a trusted network only); warned at every start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureMonitor {
    /// The data collection endpoint, or the DCR's own logs ingestion endpoint.
    pub endpoint: String,
    /// The DCR's immutable id (`dcr-...`).
    pub dcr_id: String,
    /// `Custom-<Table>_CL` (or a built-in table's stream).
    pub stream: String,
    pub auth: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub authority_host: Option<String>,
    pub federated_token_file: Option<String>,
    pub scope: Option<String>,
    pub time_field: Option<String>,
    #[serde(default)]
    pub field_map: BTreeMap<String, String>,
    pub max_field_bytes: Option<Size>,
    pub tls: Option<Tls>,
}

/// Entra ID options, shared by the Azure sinks (copied out of each sink's table: serde's
/// `flatten` would lose the unknown-key checks).
#[derive(Debug, Default)]
pub struct EntraFields {
    /// `workload_identity`, `managed_identity` or `client_secret`.
    pub auth: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub authority_host: Option<String>,
    pub federated_token_file: Option<String>,
}

macro_rules! entra_fields {
    ($s:expr) => {
        $crate::config::raw::EntraFields {
            auth: $s.auth.clone(),
            tenant_id: $s.tenant_id.clone(),
            client_id: $s.client_id.clone(),
            client_secret: $s.client_secret.clone(),
            client_secret_file: $s.client_secret_file.clone(),
            authority_host: $s.authority_host.clone(),
            federated_token_file: $s.federated_token_file.clone(),
        }
    };
}
pub(crate) use entra_fields;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub url: String,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub auth: Option<HttpAuth>,
    pub signature: Option<HttpSignature>,
    pub tls: Option<Tls>,
    pub retry_on: Option<Vec<StatusItem>>,
    pub success_on: Option<Vec<StatusItem>>,
    /// What `validate --check-sinks` sends: `head`, `options` or `none`.
    pub check: Option<String>,
    /// Send credentials over http:// (a trusted network only); warned at every start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// The receiver's base URL (`https://collector:4318`); `/v1/logs` is appended.
    pub endpoint: String,
    /// The path instead of `/v1/logs` (some backends take logs elsewhere).
    pub logs_path: Option<String>,
    /// `protobuf` (the default) or `json`.
    pub protocol: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub auth: Option<HttpAuth>,
    pub tls: Option<Tls>,
    pub retry_on: Option<Vec<StatusItem>>,
    /// `map` (the default) or `string`.
    pub body: Option<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    #[serde(default)]
    pub resource_fields: Vec<String>,
    pub event_name: Option<String>,
    pub severity: Option<OtlpSeverity>,
    pub max_request_bytes: Option<Size>,
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSeverity {
    pub field: Option<String>,
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    pub default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StatusItem {
    Code(u16),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    pub basic: Option<BasicAuth>,
    pub bearer: Option<BearerAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    pub token: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSignature {
    pub key_env: Option<String>,
    pub key_file: Option<String>,
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendRoll {
    pub max_bytes: Option<Size>,
    pub max_age: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    pub mode: String,
    pub retain_days: u32,
}
