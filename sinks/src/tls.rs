//! The HTTPS client shared by the sinks that speak HTTP themselves (Azure, HTTP): rustls with
//! host name verification always on, the platform's roots plus an optional private CA.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM bundle of extra roots (a private CA), trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM, chain allowed) and its key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A client for one sink. Redirects are not followed: a storage or ingestion endpoint that
/// redirects is misconfigured, and following would resend credentials elsewhere.
pub fn client(tls: &TlsOptions) -> Result<reqwest::Client, String> {
    builder(tls)?
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))
}

/// The configured builder, for sinks that add their own settings.
pub fn builder(tls: &TlsOptions) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        // Bodies are read as sent: a range of a gzip blob must not be inflated on the way.
        .gzip(false)
        .deflate(false);
    if let Some(path) = &tls.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca_file {}: not a PEM certificate: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.ca_file {}: holds no certificate",
                path.display()
            ));
        }
        b = b.tls_certs_merge(certs);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem =
            std::fs::read(cert).map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            format!(
                "tls.cert_file/key_file {} and {}: not a PEM certificate and private key: {e}",
                cert.display(),
                key.display()
            )
        })?;
        b = b.identity(id);
    }
    Ok(b)
}
