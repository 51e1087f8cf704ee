//! `[keks.<name>]`, `[signing]` and a sink's `encryption = { ... }`: checked here, used by
//! `crate::encryption`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logferry_vault::ledger::LocalKek;

use super::entra::entra;
use super::files::read_key_file;
use super::tls::tls;
use super::{raw, resolve, Collector, KeyFileModes, SinkKind};

/// A key-encryption key as configured.
#[derive(Debug, Clone)]
pub struct KekConfig {
    pub name: String,
    pub provider: KekProvider,
}

#[derive(Debug, Clone)]
pub enum KekProvider {
    /// The key itself, read when the configuration is loaded (wiped when the last copy drops).
    Local(Arc<LocalKek>),
    /// AWS KMS: the client is made when a sink starts.
    AwsKms(logferry_vault::kms::KmsOptions),
    AzureKeyVault(Box<logferry_vault::keyvault::KeyVaultOptions>),
}

impl KekProvider {
    /// Whether the KEK is the local key (its wrap authenticates ledger entries).
    pub fn is_local(&self) -> bool {
        matches!(self, KekProvider::Local(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            KekProvider::Local(_) => "local",
            KekProvider::AwsKms(_) => "aws_kms",
            KekProvider::AzureKeyVault(_) => "azure_key_vault",
        }
    }
}

/// A sink's client-side encryption.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    pub kek: String,
    pub tenant_field: String,
    /// Keys of hours older than this are shredded, once an hour.
    pub retention: Option<Duration>,
    pub segment_size: u32,
    /// Where `_keys/` and `_receipts/` go in the sink's store (empty: its root).
    pub ledger_prefix: String,
    /// The bucket (s3) or container (azure_blob) of the ledger when it is not the data's.
    pub ledger_elsewhere: Option<String>,
}

const PROVIDERS: &[&str] = &["local", "aws_kms", "azure_key_vault"];
/// Longest retention accepted: a century is a typo's limit, not a policy's.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

pub(super) fn keks(
    raw: BTreeMap<String, raw::Kek>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    modes: KeyFileModes,
    c: &mut Collector,
) -> BTreeMap<String, KekConfig> {
    let mut out = BTreeMap::new();
    for (name, k) in raw {
        let p = format!("keks.{name}");
        if !super::check_name(&p, &name, c) {
            continue;
        }
        match k.provider.as_str() {
            "local" => {}
            "aws_kms" => {
                if let Some(kms) = aws_kms(&p, &k, c) {
                    out.insert(
                        name.clone(),
                        KekConfig {
                            name,
                            provider: KekProvider::AwsKms(kms),
                        },
                    );
                }
                continue;
            }
            "azure_key_vault" => {
                if let Some(kv) = key_vault(&p, &k, base, c) {
                    out.insert(
                        name.clone(),
                        KekConfig {
                            name,
                            provider: KekProvider::AzureKeyVault(Box::new(kv)),
                        },
                    );
                }
                continue;
            }
            other => {
                c.add(
                    format!("{p}.provider"),
                    format!("{other:?}: one of {}", PROVIDERS.join(", ")),
                );
                continue;
            }
        }
        for (opt, set) in [
            ("key_id", k.key_id.is_some()),
            ("region", k.region.is_some()),
            ("endpoint", k.endpoint.is_some()),
            ("vault_url", k.vault_url.is_some()),
            ("key_name", k.key_name.is_some()),
            ("auth", k.auth.is_some()),
        ] {
            if set {
                c.add(
                    format!("{p}.{opt}"),
                    "is not an option of a local KEK (it takes key_file or key_env)",
                );
            }
        }
        let material = match (&k.key_file, &k.key_env) {
            (Some(f), None) => {
                let path = resolve(base, f);
                match read_key_file(&path, modes, "KEK") {
                    Ok(b) => b,
                    Err(e) => {
                        c.add(format!("{p}.key_file"), e);
                        continue;
                    }
                }
            }
            (None, Some(v)) => match env(v) {
                Some(s) => zeroize::Zeroizing::new(s.into_bytes()),
                None => {
                    c.add(
                        format!("{p}.key_env"),
                        format!("environment variable {v} is not set"),
                    );
                    continue;
                }
            },
            _ => {
                c.add(
                    p,
                    "a local KEK takes key_file or key_env (one of them): 32 bytes, as raw bytes, 64 hex digits or base64",
                );
                continue;
            }
        };
        match LocalKek::from_material(&name, &material) {
            Ok(kek) => {
                out.insert(
                    name.clone(),
                    KekConfig {
                        name,
                        provider: KekProvider::Local(Arc::new(kek)),
                    },
                );
            }
            Err(e) => c.add(p, e.to_string()),
        }
    }
    out
}

fn aws_kms(p: &str, k: &raw::Kek, c: &mut Collector) -> Option<logferry_vault::kms::KmsOptions> {
    let before = c.list.len();
    if k.key_file.is_some() || k.key_env.is_some() {
        c.add(
            p,
            "an aws_kms KEK stays in KMS: give key_id, not key_file or key_env",
        );
    }
    let key_id = k.key_id.clone().unwrap_or_default();
    if key_id.trim().is_empty() {
        c.add(
            format!("{p}.key_id"),
            "must name the KMS key (key id, key ARN or alias/...)",
        );
    }
    if let Some(e) = &k.endpoint {
        let http = e
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if http && !k.allow_plaintext_credentials {
            c.add(
                format!("{p}.endpoint"),
                "is http://, which would send signed KMS requests and the data keys they return in clear: use https://, or set allow_plaintext_credentials = true if the network between is trusted",
            );
        }
    }
    if c.list.len() > before {
        return None;
    }
    Some(logferry_vault::kms::KmsOptions {
        key_id,
        region: k.region.clone(),
        endpoint: k.endpoint.clone(),
    })
}

fn key_vault(
    p: &str,
    k: &raw::Kek,
    base: &Path,
    c: &mut Collector,
) -> Option<logferry_vault::keyvault::KeyVaultOptions> {
    let before = c.list.len();
    if k.key_file.is_some() || k.key_env.is_some() || k.key_id.is_some() {
        c.add(
            p,
            "an azure_key_vault KEK stays in the vault: give vault_url and key_name",
        );
    }
    let vault_url = k.vault_url.clone().unwrap_or_default();
    if !vault_url.starts_with("https://") {
        c.add(
            format!("{p}.vault_url"),
            "must be the vault's https:// URL, e.g. https://my-vault.vault.azure.net",
        );
    }
    let key_name = k.key_name.clone().unwrap_or_default();
    if key_name.is_empty() {
        c.add(format!("{p}.key_name"), "must name the key in the vault");
    }
    if let Some(v) = &k.key_version {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
            c.add(
                format!("{p}.key_version"),
                "a key version is letters and digits",
            );
        }
    }
    let algorithm = k.algorithm.clone().unwrap_or_else(|| "RSA-OAEP-256".into());
    if algorithm != "RSA-OAEP-256" && algorithm != "A256KW" {
        c.add(
            format!("{p}.algorithm"),
            format!("{algorithm:?}: \"RSA-OAEP-256\" (Key Vault keys) or \"A256KW\" (Managed HSM)"),
        );
    }
    let fields = raw::EntraFields {
        auth: k.auth.clone(),
        tenant_id: k.tenant_id.clone(),
        client_id: k.client_id.clone(),
        client_secret: k.client_secret.clone(),
        client_secret_file: k.client_secret_file.clone(),
        authority_host: k.authority_host.clone(),
        federated_token_file: k.federated_token_file.clone(),
    };
    let auth = entra(p, &fields, base, c, "");
    if k.auth.is_none() {
        c.add(
            format!("{p}.auth"),
            "Key Vault takes Entra ID: \"workload_identity\", \"managed_identity\" or \"client_secret\"",
        );
    }
    let tls = tls(p, k.tls.as_ref(), base, c);
    if c.list.len() > before {
        return None;
    }
    Some(logferry_vault::keyvault::KeyVaultOptions {
        vault_url,
        key_name,
        key_version: k.key_version.clone(),
        algorithm,
        auth: auth?,
        tls,
    })
}

pub(super) fn signing(
    s: Option<raw::Signing>,
    base: &Path,
    modes: KeyFileModes,
    c: &mut Collector,
) -> Option<PathBuf> {
    let s = s?;
    let path = resolve(base, &s.key_file);
    let check = read_key_file(&path, modes, "signing key")
        .map_err(|e| e.to_string())
        .and_then(|b| {
            let t = std::str::from_utf8(&b)
                .map_err(|_| format!("{} is not a PEM text file", path.display()))?;
            logferry_integrity::signing::SigningKey::from_pem(t)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = check {
        c.add("signing.key_file", e);
    }
    Some(path)
}

/// Parses a retention such as "30d", "1y", "8760h".
fn retention(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. \"30d\", \"1y\")"))?;
    if d < Duration::from_secs(3600) {
        return Err("must be at least 1h: keys are made per hour".into());
    }
    if d > MAX_RETENTION {
        return Err("longer than 100 years".into());
    }
    Ok(d)
}

pub(super) fn sink(
    p: &str,
    e: raw::Encryption,
    kind: &SinkKind,
    c: &mut Collector,
) -> Option<EncryptionConfig> {
    let before = c.list.len();
    match kind {
        SinkKind::Directory { .. } | SinkKind::S3(_) | SinkKind::AzureBlob(_) => {}
        _ => c.add(
            format!("{p}.encryption"),
            "client-side encryption is for object sinks: directory, s3, azure_blob",
        ),
    }
    if e.tenant_field.trim().is_empty() {
        c.add(
            format!("{p}.encryption.tenant_field"),
            "must name the record field that holds the tenant, e.g. \"account_id\"",
        );
    }
    let retention = match e.retention.as_deref().map(retention) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(m)) => {
            c.add(format!("{p}.encryption.retention"), m);
            None
        }
    };
    let segment_size = e
        .segment_size
        .map_or(logferry_vault::crypt::DEFAULT_SEGMENT as u64, |s| s.0);
    if !(4096..=64 << 20).contains(&segment_size) {
        c.add(
            format!("{p}.encryption.segment_size"),
            "must be between 4KiB and 64MiB",
        );
    }
    let ledger_prefix = e.ledger_prefix.unwrap_or_default();
    if ledger_prefix.split('/').any(|s| s == ".." || s == ".") {
        c.add(
            format!("{p}.encryption.ledger_prefix"),
            "must not contain `.` or `..` segments",
        );
    }
    let ledger_elsewhere = match (kind, e.ledger_bucket, e.ledger_container) {
        (_, None, None) => None,
        (SinkKind::S3(_), Some(b), None) => Some(b),
        (SinkKind::AzureBlob(_), None, Some(c)) => Some(c),
        (_, b, _) => {
            let (field, what) = if b.is_some() {
                ("ledger_bucket", "s3")
            } else {
                ("ledger_container", "azure_blob")
            };
            c.add(
                format!("{p}.encryption.{field}"),
                format!("is for {what} sinks (a ledger in another bucket or container)"),
            );
            None
        }
    };
    if ledger_elsewhere
        .as_deref()
        .is_some_and(|l| l.trim().is_empty())
    {
        c.add(
            format!("{p}.encryption"),
            "the ledger's bucket or container is empty",
        );
    }
    if c.list.len() > before {
        return None;
    }
    Some(EncryptionConfig {
        kek: e.kek,
        tenant_field: e.tenant_field,
        retention,
        segment_size: segment_size as u32,
        ledger_prefix: ledger_prefix.trim_matches('/').to_string(),
        ledger_elsewhere,
    })
}

/// Why a KMS or Key Vault KEK needs `[signing]`.
pub(super) fn remote_unsigned(kek: &str) -> String {
    format!(
        "KEK {kek:?} is a KMS or Key Vault key, which anyone allowed to encrypt with it (with Key Vault's RSA keys: anyone with the public key) can wrap a key for: its ledger entries are signed so that a planted entry is never used. Set [signing] key_file (write one with `logferry keygen`)"
    )
}

/// What only the whole file shows: the KEK a sink names exists, and retention, which writes
/// receipts, has a key to sign them.
pub(super) fn cross_check(
    sinks: &[super::SinkConfig],
    keks: &BTreeMap<String, KekConfig>,
    signing: Option<&PathBuf>,
    declared: &[String],
    c: &mut Collector,
) {
    for s in sinks {
        let Some(e) = &s.encryption else { continue };
        let p = format!("sinks.{}.encryption", s.name);
        if !keks.contains_key(&e.kek) && !declared.contains(&e.kek) {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            c.add(
                format!("{p}.kek"),
                match super::closest(&e.kek, known.iter().copied()) {
                    Some(k) => format!("no [keks.{}]; did you mean {k:?}?", e.kek),
                    None => format!("no [keks.{}] is declared", e.kek),
                },
            );
        }
        if signing.is_none() && keks.get(&e.kek).is_some_and(|k| !k.provider.is_local()) {
            c.add(format!("{p}.kek"), remote_unsigned(&e.kek));
        }
        if e.retention.is_some() && signing.is_none() {
            c.add(
                format!("{p}.retention"),
                "retention shreds keys and signs a receipt for each: set [signing] key_file (write one with `logferry keygen`)",
            );
        }
    }
}
