//! Microsoft Entra ID credentials for the Azure sinks, on `azure_identity`.
//!
//! Every credential caches its token and fetches a new one five minutes before expiry (the
//! crate's cache), so a token is requested about once an hour, not per request.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientMethodOptions, ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};

/// How a sink signs in to Entra ID.
#[derive(Clone, PartialEq, Eq)]
pub enum Entra {
    /// AKS workload identity: a Kubernetes service account token exchanged for an Entra token.
    /// Unset fields come from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`
    /// and `AZURE_AUTHORITY_HOST`, which the AKS webhook sets.
    WorkloadIdentity {
        tenant_id: Option<String>,
        client_id: Option<String>,
        token_file: Option<PathBuf>,
        authority_host: Option<String>,
    },
    /// The VM's or App Service's managed identity; `client_id` picks a user-assigned one.
    ManagedIdentity { client_id: Option<String> },
    /// An app registration's client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: String,
        authority_host: Option<String>,
    },
}

impl std::fmt::Debug for Entra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entra::WorkloadIdentity { client_id, .. } => {
                write!(f, "WorkloadIdentity(client_id={client_id:?})")
            }
            Entra::ManagedIdentity { client_id } => {
                write!(f, "ManagedIdentity(client_id={client_id:?})")
            }
            Entra::ClientSecret { client_id, .. } => {
                write!(f, "ClientSecret(client_id={client_id:?}, secret=***)")
            }
        }
    }
}

/// Why a credential cannot be built: the auth method and what it lacks or what the SDK said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Workload identity without a setting the AKS webhook normally provides.
    #[error("auth = \"workload_identity\": {var} is not set (the AKS workload identity webhook sets it; or set it in the sink)")]
    Unset { var: &'static str },
    /// The SDK refused the credential's settings.
    #[error("auth = \"{auth}\": {cause}")]
    Credential { auth: &'static str, cause: String },
}

impl Entra {
    pub fn name(&self) -> &'static str {
        match self {
            Entra::WorkloadIdentity { .. } => "workload_identity",
            Entra::ManagedIdentity { .. } => "managed_identity",
            Entra::ClientSecret { .. } => "client_secret",
        }
    }

    /// Builds the credential; its token requests go through `http` (the sink's client, so a
    /// private CA applies to the token endpoint too) with the SDK's own retries off.
    pub fn credential(
        &self,
        http: &reqwest::Client,
    ) -> Result<Arc<dyn TokenCredential>, AuthError> {
        let options = |authority_host: Option<&str>| ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            retry: RetryOptions::none(),
            cloud: authority_host.map(|h| {
                let mut custom = CustomConfiguration::default();
                custom.authority_host = h.trim_end_matches('/').to_string();
                Arc::new(CloudConfiguration::from(custom))
            }),
            ..Default::default()
        };
        let err = |e: azure_core::Error| AuthError::Credential {
            auth: self.name(),
            cause: e.to_string(),
        };
        Ok(match self {
            Entra::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
                authority_host,
            } => {
                let var = |v: &Option<String>, name: &'static str| -> Result<String, AuthError> {
                    match v {
                        Some(v) => Ok(v.clone()),
                        None => std::env::var(name).map_err(|_| AuthError::Unset { var: name }),
                    }
                };
                let tenant = var(tenant_id, "AZURE_TENANT_ID")?;
                let client = var(client_id, "AZURE_CLIENT_ID")?;
                let file = match token_file {
                    Some(f) => f.clone(),
                    None => PathBuf::from(var(&None, "AZURE_FEDERATED_TOKEN_FILE")?),
                };
                let host = authority_host
                    .clone()
                    .or_else(|| std::env::var("AZURE_AUTHORITY_HOST").ok());
                ClientAssertionCredential::new(
                    tenant,
                    client,
                    TokenFile(file),
                    Some(ClientAssertionCredentialOptions {
                        client_options: options(host.as_deref()),
                    }),
                )
                .map_err(err)?
            }
            Entra::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: options(None),
                }))
                .map_err(err)?
            }
            Entra::ClientSecret {
                tenant_id,
                client_id,
                secret,
                authority_host,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(secret.clone()),
                Some(ClientSecretCredentialOptions {
                    client_options: options(authority_host.as_deref()),
                }),
            )
            .map_err(err)?,
        })
    }
}

/// The projected service account token, read again each time a new Entra token is fetched:
/// the kubelet rotates the file, and a stale assertion would fail once it expires.
#[derive(Debug)]
struct TokenFile(PathBuf);

#[async_trait]
impl ClientAssertion for TokenFile {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        match tokio::fs::read_to_string(&self.0).await {
            Ok(s) => {
                let token = s.trim().to_string();
                logferry_sink::redact::register([&token]);
                Ok(token)
            }
            Err(e) => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!(
                    "cannot read the federated token file {}: {e}",
                    self.0.display()
                ),
            )),
        }
    }
}
