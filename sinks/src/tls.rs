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
    /// Verify the server's certificate for this name (and send it as SNI) instead of the
    /// URL's host; connections still go to the URL's address.
    pub server_name: Option<String>,
}

/// A client for requests to `url`, which is rewritten to `server_name` when one is set: the
/// name is pinned to the addresses the URL's host resolves to now (reqwest has no separate
/// verify-name setting), so a DNS change of that host needs a reload.
pub fn client_for(tls: &TlsOptions, url: &mut reqwest::Url) -> Result<reqwest::Client, String> {
    let mut b = builder(tls)?;
    if let Some(name) = &tls.server_name {
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
        b = b.resolve_to_addrs(name, &addrs);
        url.set_host(Some(name))
            .map_err(|e| format!("tls.server_name {name:?}: {e}"))?;
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))
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
