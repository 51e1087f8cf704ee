//! The Azure sinks' tables: `azure_blob` and `azure_monitor` (Entra ID: `config::entra`).

use super::*;
use crate::config::entra::entra;

const ACCESS_TIERS: &[&str] = &["Hot", "Cool", "Cold", "Archive"];

pub(super) fn azure_blob(
    p: &str,
    s: raw::AzureBlob,
    base: &Path,
    c: &mut Collector,
) -> Option<logferry_destinations::azure_blob::AzureBlobOptions> {
    use logferry_destinations::azure_blob::{AppendRoll, BlobAuth, BlobType, ConnectionString};
    let before = c.list.len();
    let valid_name = (3..=63).contains(&s.container.len())
        && s.container
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        c.add(
            format!("{p}.container"),
            "3-63 lowercase letters, digits and dashes",
        );
    }
    let blob_type = match s.blob_type.as_deref() {
        None | Some("block") => BlobType::Block,
        Some("append") => BlobType::Append,
        Some(other) => {
            c.add(
                format!("{p}.blob_type"),
                format!("{other:?}: \"block\" (a blob per batch) or \"append\""),
            );
            BlobType::Block
        }
    };
    if let Some(t) = &s.access_tier {
        if !ACCESS_TIERS.contains(&t.as_str()) {
            c.add(
                format!("{p}.access_tier"),
                format!("{t:?}: one of {}", ACCESS_TIERS.join(", ")),
            );
        } else if blob_type == BlobType::Append {
            c.add(
                format!("{p}.access_tier"),
                "access tiers apply to block blobs only; remove it or use blob_type = \"block\"",
            );
        }
    }
    let mut append_roll = AppendRoll::default();
    if let Some(r) = &s.append_roll {
        if blob_type != BlobType::Append {
            c.add(
                format!("{p}.append_roll"),
                "only applies with blob_type = \"append\"",
            );
        }
        if let Some(b) = r.max_bytes {
            if b.0 < 1 << 20 {
                c.add(
                    format!("{p}.append_roll.max_bytes"),
                    "must be at least 1MiB",
                );
            }
            append_roll.max_bytes = b.0;
        }
        if let Some(a) = r.max_age {
            if a.0 < Duration::from_secs(1) {
                c.add(format!("{p}.append_roll.max_age"), "must be at least 1s");
            }
            append_roll.max_age = a.0;
        }
    }
    let file = |f: &Option<String>| {
        f.as_deref()
            .map(|f| resolve(base, f).to_string_lossy().into_owned())
    };
    let mut secret = |name: &str, inline: &Option<String>, f: &Option<String>| {
        match crate::config::values::secret(name, inline.as_deref(), file(f).as_deref()) {
            Ok(v) => v,
            Err(e) => {
                c.add(format!("{p}.{name}"), e);
                None
            }
        }
    };
    let cs = secret(
        "connection_string",
        &s.connection_string,
        &s.connection_string_file,
    );
    let key = secret("account_key", &s.account_key, &s.account_key_file);
    let sas = secret("sas_token", &s.sas_token, &s.sas_token_file);
    let entra = entra(
        p,
        &raw::entra_fields!(s),
        base,
        c,
        "account_key, sas_token or connection_string",
    );
    let location = match (cs, &s.account) {
        (Some(_), Some(_)) => {
            c.add(
                format!("{p}.account"),
                "set either connection_string or account (+ endpoint), not both",
            );
            None
        }
        (Some(cs), None) => {
            for (name, set) in [
                ("endpoint", s.endpoint.is_some()),
                ("account_key", key.is_some()),
                ("sas_token", sas.is_some()),
                ("auth", s.auth.is_some()),
            ] {
                if set {
                    c.add(
                        format!("{p}.{name}"),
                        "the connection string already says where and how; remove one of them",
                    );
                }
            }
            match ConnectionString::parse(cs.expose()) {
                Ok(cs) => Some(cs.into_parts()),
                Err(e) => {
                    c.add(format!("{p}.connection_string"), e.to_string());
                    None
                }
            }
        }
        (None, Some(account)) => {
            let endpoint = s
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
                .trim_end_matches('/')
                .to_string();
            if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                c.add(format!("{p}.endpoint"), "must be an http(s):// URL");
            }
            let chosen = [
                ("account_key", key.is_some()),
                ("sas_token", sas.is_some()),
                ("auth", entra.is_some() || s.auth.is_some()),
            ];
            let n = chosen.iter().filter(|(_, set)| *set).count();
            if n > 1 {
                c.add(p, "choose one credential: account_key, sas_token or auth");
            }
            let auth = if let Some(k) = key {
                match base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    k.expose().trim(),
                ) {
                    Ok(k) => Some(BlobAuth::AccountKey(k)),
                    Err(_) => {
                        c.add(
                            format!("{p}.account_key"),
                            "is not base64 (copy it from the portal's Access keys)",
                        );
                        None
                    }
                }
            } else if let Some(s) = sas {
                Some(BlobAuth::Sas(
                    s.expose().trim_start_matches('?').to_string(),
                ))
            } else if let Some(e) = entra {
                if !endpoint.starts_with("https://") {
                    c.add(
                        format!("{p}.endpoint"),
                        "Entra ID auth sends bearer tokens, which needs https://",
                    );
                }
                Some(BlobAuth::Entra(e))
            } else {
                if n == 0 {
                    c.add(
                        p,
                        "needs a credential with account: auth (workload_identity, managed_identity, client_secret), account_key (or _file) or sas_token (or _file)",
                    );
                }
                None
            };
            auth.map(|a| (account.clone(), endpoint, a))
        }
        (None, None) => {
            c.add(
                p,
                "needs connection_string (or _file), or account with auth, account_key or sas_token",
            );
            None
        }
    };
    if let Some((_, endpoint, auth)) = &location {
        let creds = match auth {
            BlobAuth::AccountKey(_) => Some("SAS tokens signed with the account key"),
            BlobAuth::Sas(_) => Some("the SAS token"),
            // Refused above with its own message.
            BlobAuth::Entra(_) => None,
        };
        if let Some(creds) = creds {
            let key = if s.connection_string.is_some() || s.connection_string_file.is_some() {
                "connection_string"
            } else {
                "endpoint"
            };
            plaintext(p, key, endpoint, creds, s.allow_plaintext_credentials, c);
        }
    }
    let tls = tls(p, s.tls.as_ref(), base, c);
    if c.list.len() > before {
        return None;
    }
    let (account, endpoint, auth) = location?;
    Some(logferry_destinations::azure_blob::AzureBlobOptions {
        container: s.container,
        account,
        endpoint,
        auth,
        tls,
        access_tier: s.access_tier,
        metadata: s.metadata.into_iter().collect(),
        create_container: s.create_container,
        blob_type,
        append_roll,
        allow_plaintext_credentials: s.allow_plaintext_credentials,
    })
}

pub(super) fn azure_monitor(
    p: &str,
    s: raw::AzureMonitor,
    base: &Path,
    c: &mut Collector,
) -> Option<crate::config::AzureMonitorConfig> {
    let before = c.list.len();
    let endpoint = s.endpoint.trim_end_matches('/').to_string();
    if !endpoint.starts_with("https://") {
        c.add(
            format!("{p}.endpoint"),
            "must be an https:// URL (the data collection endpoint's logs ingestion URL)",
        );
    }
    if s.dcr_id.is_empty() {
        c.add(
            format!("{p}.dcr_id"),
            "must be the rule's immutable id (dcr-...)",
        );
    }
    if s.stream.is_empty() {
        c.add(
            format!("{p}.stream"),
            "must name a stream, e.g. Custom-AuditLog_CL",
        );
    }
    let auth = entra(p, &raw::entra_fields!(s), base, c, "");
    if s.auth.is_none() {
        c.add(
            format!("{p}.auth"),
            "required: workload_identity, managed_identity or client_secret",
        );
    }
    let max_field_bytes = s.max_field_bytes.map_or(64 << 10, |b| b.0);
    if !(64..=(64 << 10)).contains(&max_field_bytes) {
        c.add(
            format!("{p}.max_field_bytes"),
            "between 64B and 64KiB (the service's limit per field)",
        );
    }
    for (from, to) in &s.field_map {
        if to.is_empty() || from.is_empty() {
            c.add(format!("{p}.field_map"), "names must not be empty");
        }
    }
    let tls = tls(p, s.tls.as_ref(), base, c);
    if c.list.len() > before {
        return None;
    }
    Some(crate::config::AzureMonitorConfig {
        options: logferry_destinations::azure_monitor::AzureMonitorOptions {
            endpoint,
            dcr_id: s.dcr_id,
            stream: s.stream,
            auth: auth?,
            scope: s
                .scope
                .unwrap_or_else(|| logferry_destinations::azure_monitor::DEFAULT_SCOPE.to_string()),
            tls,
        },
        shape: crate::shape::Shape {
            time_field: s.time_field,
            field_map: s.field_map.into_iter().collect(),
            max_field_bytes: max_field_bytes as usize,
            // Two bytes for the array's separators around a record.
            max_record_bytes: logferry_destinations::azure_monitor::MAX_REQUEST_BYTES as usize - 16,
        },
    })
}
