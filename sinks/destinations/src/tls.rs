//! The HTTPS client shared by the sinks that speak HTTP themselves (Azure, HTTP): rustls with
//! host name verification always on, the platform's roots plus an optional private CA.

use std::path::{Path, PathBuf};
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

/// Why a sink's HTTPS client cannot be built: the option and file at fault, and the cause
/// (never a key file's content). The cause is in the words, not behind `source()`, so that a
/// chain printed with `{:#}` says it once.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file that cannot be read.
    #[error("{option} {path}: {cause}")]
    Read {
        option: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A file that holds no usable certificate.
    #[error("{option} {path}: {problem}")]
    Invalid {
        option: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// `tls.cert_file` and `tls.key_file` that are not a certificate and its private key.
    #[error(
        "tls.cert_file/key_file {cert} and {key}: not a PEM certificate and private key: {cause}"
    )]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        cause: reqwest::Error,
    },
    /// The URL's host, whose addresses `tls.server_name` is pinned to, does not resolve.
    #[error("cannot resolve {host}: {cause}")]
    Resolve { host: String, cause: std::io::Error },
    /// `tls.server_name` cannot be a URL's host.
    #[error("tls.server_name {name:?}: {cause}")]
    ServerName { name: String, cause: String },
    #[error("cannot build the HTTPS client: {0}")]
    Build(reqwest::Error),
}

/// A client for requests to `url`, which is rewritten to `server_name` when one is set: the
/// name is pinned to the addresses the URL's host resolves to now (reqwest has no separate
/// verify-name setting), so a DNS change of that host needs a reload.
pub fn client_for(tls: &TlsOptions, url: &mut reqwest::Url) -> Result<reqwest::Client, TlsError> {
    let mut b = builder(tls)?;
    if let Some(name) = &tls.server_name {
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port));
        let addrs: Vec<std::net::SocketAddr> = match resolved {
            Ok(a) => a.collect(),
            Err(cause) => return Err(TlsError::Resolve { host, cause }),
        };
        b = b.resolve_to_addrs(name, &addrs);
        url.set_host(Some(name)).map_err(|e| TlsError::ServerName {
            name: name.clone(),
            cause: e.to_string(),
        })?;
    }
    b.build().map_err(TlsError::Build)
}

/// A client for one sink. Redirects are not followed: a storage or ingestion endpoint that
/// redirects is misconfigured, and following would resend credentials elsewhere.
pub fn client(tls: &TlsOptions) -> Result<reqwest::Client, TlsError> {
    builder(tls)?.build().map_err(TlsError::Build)
}

/// The configured builder, for sinks that add their own settings.
pub fn builder(tls: &TlsOptions) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        // Bodies are read as sent: a range of a gzip blob must not be inflated on the way.
        .gzip(false)
        .deflate(false);
    if let Some(path) = &tls.ca_file {
        let pem = read("tls.ca_file", path)?;
        let invalid = |problem: String| TlsError::Invalid {
            option: "tls.ca_file",
            path: path.clone(),
            problem,
        };
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("holds no certificate".into()));
        }
        b = b.tls_certs_merge(certs);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = read("tls.cert_file", cert)?;
        pem.push(b'\n');
        pem.extend(read("tls.key_file", key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|cause| TlsError::Identity {
            cert: cert.clone(),
            key: key.clone(),
            cause,
        })?;
        b = b.identity(id);
    }
    Ok(b)
}

/// The bytes of the file `option` names.
pub(crate) fn read(option: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        option,
        path: path.to_path_buf(),
        cause,
    })
}

/// A TLS or connection failure in words an operator can act on, found in an error's chain
/// of causes (`None`: nothing recognised). Used by every sink and `validate --check-sinks`.
pub fn words(chain: &str, client_cert: bool) -> Option<&'static str> {
    let has = |s: &str| chain.contains(s);
    Some(if has("CaUsedAsEndEntity") {
        "the server presents a CA certificate (CA:TRUE) as its own certificate: issue a server certificate from that CA and serve that (openssl req -x509 makes a CA certificate unless told otherwise)"
    } else if has("UnknownIssuer") || has("unknown issuer") {
        "the server's certificate is not signed by a CA we trust (set tls.ca_file to the CA that issued it)"
    } else if has("NotValidForName") || has("not valid for name") {
        "the server's certificate does not name this host (the names it holds are listed below: fix the URL, or set tls.server_name to one of them)"
    } else if has("NotValidYet") || has("certificate not valid yet") {
        "the server's certificate is not valid yet (or this machine's clock is behind)"
    } else if has("Expired") || has("certificate expired") {
        "the server's certificate has expired (or this machine's clock is ahead): renew it"
    } else if has("CertificateRequired") {
        "the server requires a client certificate (set tls.cert_file and tls.key_file)"
    } else if has("received fatal alert") && client_cert {
        // BadCertificate, UnknownCA, DecryptError (a CA of the same name): servers say it
        // in different ways.
        "the server ended the TLS handshake: it does not accept our client certificate (check tls.cert_file and tls.key_file against the CA it trusts)"
    } else if has("received fatal alert") {
        "the server ended the TLS handshake (does it require a client certificate? set tls.cert_file and tls.key_file)"
    } else if client_cert
        && (has("connection was not ready")
            || has("connection closed before message completed")
            || has("Connection reset"))
    {
        // TLS 1.3: the server checks our certificate after the handshake finished on our
        // side, so its refusal can arrive as a closed connection instead of an alert.
        "the server closed the connection right after the TLS handshake: it may not accept our client certificate (check tls.cert_file and tls.key_file against the CA it trusts)"
    } else if has("InvalidContentType") || has("corrupt message") {
        "the server does not speak TLS on that port (is the URL http:// where it should be https://, or the port wrong?)"
    } else if has("Connection refused") {
        "connection refused (nothing listens at that address)"
    } else if has("dns error") || has("failed to lookup address") {
        "the host name does not resolve"
    } else {
        return None;
    })
}

/// `chain` with the words for it in front, when there are some.
pub fn explain_chain(chain: &str, client_cert: bool) -> String {
    match words(chain, client_cert) {
        Some(w) => format!("{w}: {chain}"),
        None => chain.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn verifier_failures_have_words() {
        let w = |s| super::words(s, false).unwrap_or("");
        assert!(w("invalid peer certificate: CaUsedAsEndEntity").contains("CA:TRUE"));
        assert!(w("invalid peer certificate: UnknownIssuer").contains("tls.ca_file"));
        assert!(w(
            "certificate not valid for name \"x\"; certificate is only valid for DnsName(\"y\")"
        )
        .contains("tls.server_name"));
        assert!(w("invalid peer certificate: Expired").contains("expired"));
        assert_eq!(super::words("something else", false), None);
    }
}
