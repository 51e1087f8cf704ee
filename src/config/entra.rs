//! Entra ID options (`auth`, `tenant_id`, `client_id`, ...), as the Azure sinks and Key Vault
//! KEKs take them.

use std::path::Path;

use super::files::readable_file;
use super::{raw, resolve, Collector};

/// The Entra ID options the Azure sinks and Key Vault KEKs share. `None` when `auth` is not set
/// (another credential applies) or wrong (reported); `others` names the alternatives in messages.
pub(super) fn entra(
    p: &str,
    s: &raw::EntraFields,
    base: &Path,
    c: &mut Collector,
    others: &str,
) -> Option<logferry_destinations::azure_auth::Entra> {
    use logferry_destinations::azure_auth::Entra;
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(" (or use {others})")
    };
    let client_secret = match crate::config::values::secret(
        "client_secret",
        s.client_secret.as_deref(),
        s.client_secret_file
            .as_deref()
            .map(|f| resolve(base, f).to_string_lossy().into_owned())
            .as_deref(),
    ) {
        Ok(v) => v,
        Err(e) => {
            c.add(format!("{p}.client_secret"), e);
            None
        }
    };
    let entra_fields = [
        ("tenant_id", s.tenant_id.is_some()),
        ("client_id", s.client_id.is_some()),
        ("client_secret", client_secret.is_some()),
        ("authority_host", s.authority_host.is_some()),
        ("federated_token_file", s.federated_token_file.is_some()),
    ];
    if let Some(h) = &s.authority_host {
        if !h.starts_with("https://") {
            c.add(
                format!("{p}.authority_host"),
                "must be an https:// URL (e.g. https://login.microsoftonline.us)",
            );
        }
    }
    match s.auth.as_deref() {
        None => {
            if let Some((name, _)) = entra_fields.iter().find(|(_, set)| *set) {
                c.add(
                    format!("{p}.{name}"),
                    "is an Entra ID option: set auth = \"workload_identity\", \"managed_identity\" or \"client_secret\"",
                );
            }
            None
        }
        Some("workload_identity") => {
            if client_secret.is_some() {
                c.add(
                    format!("{p}.client_secret"),
                    "not used with auth = \"workload_identity\"",
                );
            }
            let token_file = s.federated_token_file.as_deref().map(|f| resolve(base, f));
            if let Some(f) = &token_file {
                if let Err(e) = readable_file(f) {
                    c.add(format!("{p}.federated_token_file"), e);
                }
            }
            Some(Entra::WorkloadIdentity {
                tenant_id: s.tenant_id.clone(),
                client_id: s.client_id.clone(),
                token_file,
                authority_host: s.authority_host.clone(),
            })
        }
        Some("managed_identity") => {
            for (name, set) in entra_fields {
                if set && name != "client_id" {
                    c.add(
                        format!("{p}.{name}"),
                        "not used with auth = \"managed_identity\" (only client_id, for a user-assigned identity)",
                    );
                }
            }
            Some(Entra::ManagedIdentity {
                client_id: s.client_id.clone(),
            })
        }
        Some("client_secret") => {
            let mut missing = |name: &str, v: Option<String>| match v {
                Some(v) => v,
                None => {
                    c.add(
                        format!("{p}.{name}"),
                        "required with auth = \"client_secret\"",
                    );
                    String::new()
                }
            };
            let tenant_id = missing("tenant_id", s.tenant_id.clone());
            let client_id = missing("client_id", s.client_id.clone());
            let secret = missing(
                "client_secret",
                client_secret.as_ref().map(|v| v.expose().to_string()),
            );
            Some(Entra::ClientSecret {
                tenant_id,
                client_id,
                secret,
                authority_host: s.authority_host.clone(),
            })
        }
        Some(other) => {
            c.add(
                format!("{p}.auth"),
                format!(
                    "{other:?}: one of workload_identity, managed_identity, client_secret{others}"
                ),
            );
            None
        }
    }
}
