//! Certificate and key files checked when the configuration is loaded, so that a wrong file
//! is named in words by `validate` instead of failing every handshake at run time.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::TlsOptions;

/// Problems with the files of `tls`, as (option, message). `now` is Unix seconds.
pub fn check(tls: &TlsOptions, now: i64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(ca) = &tls.ca_file {
        match certs(ca) {
            Ok(list) if list.is_empty() => out.push((
                "ca_file",
                format!(
                    "{} holds no certificate (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")",
                    ca.display()
                ),
            )),
            Ok(list) => {
                // A bundle may carry an old CA beside the current one; none valid is a mistake.
                let bad: Vec<String> = list
                    .iter()
                    .filter_map(|c| validity(c, now, "the CA certificate"))
                    .collect();
                if bad.len() == list.len() {
                    out.push(("ca_file", format!("{}: {}", ca.display(), bad.join("; "))));
                }
            }
            Err(e) => out.push(("ca_file", format!("{}: {e}", ca.display()))),
        }
    }
    // One without the other is reported by the configuration's own check.
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        if let Err((option, m)) = client_pair(cert, key, now) {
            out.push((option, m));
        }
    }
    out
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))
}

/// A client certificate and its key: parseable, matching, and valid now.
fn client_pair(cert: &Path, key: &Path, now: i64) -> Result<(), (&'static str, String)> {
    let chain = certs(cert).map_err(|e| ("cert_file", format!("{}: {e}", cert.display())))?;
    let Some(leaf) = chain.first() else {
        return Err((
            "cert_file",
            format!("{} holds no certificate", cert.display()),
        ));
    };
    if let Some(m) = validity(leaf, now, "the client certificate") {
        return Err(("cert_file", format!("{}: {m}", cert.display())));
    }
    // Never quote the key file's content: only whether it parses.
    let pem = std::fs::read(key).map_err(|e| ("key_file", format!("{}: {e}", key.display())))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        (
            "key_file",
            format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                key.display()
            ),
        )
    })?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| {
        (
            "key_file",
            format!("{}: an unsupported private key: {e}", key.display()),
        )
    })?;
    let pair = rustls::sign::CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err((
            "key_file",
            format!(
                "the private key in {} does not match the certificate in {} (they are from different pairs)",
                key.display(),
                cert.display()
            ),
        )),
    }
}

/// A sentence when `der` is expired or not yet valid at `now`, naming its subject.
fn validity(der: &CertificateDer<'_>, now: i64, what: &str) -> Option<String> {
    let (_, c) = match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok(c) => c,
        Err(e) => return Some(format!("{what} cannot be read: {e}")),
    };
    let v = c.validity();
    let when = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| t.to_string())
    };
    if v.not_after.timestamp() < now {
        Some(format!(
            "{what} ({}) expired on {}",
            c.subject(),
            when(v.not_after.timestamp())
        ))
    } else if v.not_before.timestamp() > now {
        Some(format!(
            "{what} ({}) is not valid before {}",
            c.subject(),
            when(v.not_before.timestamp())
        ))
    } else {
        None
    }
}
