//! Test PKI and HTTPS servers: a CA made per test with rcgen, server certificates for
//! 127.0.0.1/localhost, a small threaded HTTPS server and an Entra-like token endpoint.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM), what `tls.ca_file` points at.
    pub ca_pem: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate: PEM files (for Azurite) and a rustls config (for our servers).
pub struct ServerCert {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "logferry test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, issuer.pem()).unwrap();
        TestCa {
            dir,
            ca_pem,
            issuer,
        }
    }

    /// A certificate for `names` (host names or IP addresses), signed by this CA.
    pub fn server(&self, label: &str, names: &[&str]) -> ServerCert {
        self.server_with(label, names, |_| {})
    }

    /// A server certificate whose parameters `edit` changes first (validity, constraints).
    pub fn server_with(
        &self,
        label: &str,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> ServerCert {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone(), self.issuer.der().clone()];
        self.serve(label, &cert, &key, chain)
    }

    /// Writes a certificate and its key as PEM and makes a server config serving `chain`.
    fn serve(
        &self,
        label: &str,
        cert: &rcgen::Certificate,
        key: &KeyPair,
        chain: Vec<CertificateDer<'static>>,
    ) -> ServerCert {
        let cert_pem = self.dir.path().join(format!("{label}.pem"));
        let key_pem = self.dir.path().join(format!("{label}-key.pem"));
        std::fs::write(&cert_pem, cert.pem()).unwrap();
        std::fs::write(&key_pem, key.serialize_pem()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        ServerCert {
            cert_pem,
            key_pem,
            config: Arc::new(config),
        }
    }

    /// What `openssl req -x509` makes by default: a self-signed certificate that is a CA
    /// (CA:TRUE), served as the server's own. Returned with its PEM, for `tls.ca_file`.
    pub fn self_signed_ca_server(&self, label: &str, names: &[&str]) -> ServerCert {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let chain = vec![cert.der().clone()];
        self.serve(label, &cert, &key, chain)
    }

    /// Like [`server`](Self::server), requiring a client certificate signed by this CA.
    pub fn server_mtls(&self, label: &str, names: &[&str]) -> ServerCert {
        let plain = self.server(label, names);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let key = std::fs::read(&plain.key_pem).unwrap();
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key).unwrap();
        let certs: Vec<CertificateDer<'static>> = vec![
            rustls::pki_types::pem::PemObject::from_pem_slice(
                &std::fs::read(&plain.cert_pem).unwrap(),
            )
            .unwrap(),
            CertificateDer::from(self.issuer.der().to_vec()),
        ];
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        ServerCert {
            config: Arc::new(config),
            ..plain
        }
    }

    /// A client certificate signed by this CA: (cert PEM path, key PEM path).
    pub fn client(&self, label: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, label);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_pem = self.dir.path().join(format!("{label}-client.pem"));
        let key_pem = self.dir.path().join(format!("{label}-client-key.pem"));
        std::fs::write(&cert_pem, cert.pem()).unwrap();
        std::fs::write(&key_pem, key.serialize_pem()).unwrap();
        (cert_pem, key_pem)
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// Opens a TLS connection to 127.0.0.1:`port` trusting only `config`'s roots.
pub fn connect(
    config: &Arc<rustls::ClientConfig>,
    port: u16,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

pub struct Req {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn form(&self) -> Vec<(String, String)> {
        form_decode(&String::from_utf8_lossy(&self.body))
    }
    pub fn query(&self) -> Vec<(String, String)> {
        form_decode(self.target.split_once('?').map_or("", |(_, q)| q))
    }
}

pub fn form_decode(s: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(status: u16, body: String) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// An HTTPS server on a free loopback port; each connection gets a thread and one request
/// (answered with `Connection: close`).
pub struct HttpsServer {
    pub port: u16,
}

impl HttpsServer {
    pub fn start(
        config: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
    ) -> HttpsServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler: Handler = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let config = config.clone();
                let handler = handler.clone();
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    let Some((head, body)) = super::read_request(&mut s) else {
                        return;
                    };
                    let mut lines = head.lines();
                    let first = lines.next().unwrap_or_default();
                    let mut parts = first.split_whitespace();
                    let req = Req {
                        method: parts.next().unwrap_or_default().to_string(),
                        target: parts.next().unwrap_or_default().to_string(),
                        headers: lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect(),
                        body,
                    };
                    let resp = handler(&req);
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        resp.status,
                        resp.body.len()
                    );
                    for (k, v) in &resp.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = s.write_all(out.as_bytes());
                    let _ = s.write_all(&resp.body);
                    let _ = s.flush();
                    s.conn.send_close_notify();
                    let _ = s.flush();
                });
            }
        });
        HttpsServer { port }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// One token request the endpoint answered.
#[derive(Debug, Clone)]
pub struct TokenReq {
    /// `client_secret`, `client_assertion` or `managed_identity`.
    pub kind: String,
    pub client_id: String,
    pub assertion: Option<String>,
    pub scope: String,
}

/// An Entra ID stand-in: `POST /{tenant}/oauth2/v2.0/token` (client secret or client
/// assertion) and `GET /msi/token` (App Service managed identity). Tokens are unsigned JWTs
/// with the audience taken from the scope, the v1 issuer Azurite accepts, and a lifetime the
/// test sets.
pub struct TokenServer {
    pub server: HttpsServer,
    pub requests: Arc<Mutex<Vec<TokenReq>>>,
    pub lifetime_secs: Arc<AtomicU64>,
}

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "0b5e3f4e-1c1a-4b8e-9a3e-5d6f7a8b9c0d";
pub const CLIENT_SECRET: &str = "s3cr3t-Value~with.symbols";
pub const IDENTITY_HEADER: &str = "identity-header-secret";

impl TokenServer {
    pub fn start(ca: &TestCa) -> TokenServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let lifetime_secs = Arc::new(AtomicU64::new(3600));
        let (r, l) = (requests.clone(), lifetime_secs.clone());
        let cert = ca.server("login", &["127.0.0.1", "localhost"]);
        let server = HttpsServer::start(cert.config, move |req| {
            let lifetime = l.load(Ordering::SeqCst);
            let path = req.target.split('?').next().unwrap_or_default();
            if req.method == "POST" && path == format!("/{TENANT}/oauth2/v2.0/token") {
                let form = req.form();
                let get = |k: &str| {
                    form.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                if get("grant_type") != "client_credentials" || get("client_id") != CLIENT_ID {
                    return Resp::json(400, r#"{"error":"invalid_request"}"#.into());
                }
                let kind = if !get("client_assertion").is_empty() {
                    "client_assertion"
                } else if get("client_secret") == CLIENT_SECRET {
                    "client_secret"
                } else {
                    return Resp::json(401, r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#.into());
                };
                let scope = get("scope");
                r.lock().unwrap().push(TokenReq {
                    kind: kind.into(),
                    client_id: get("client_id"),
                    assertion: Some(get("client_assertion")).filter(|a| !a.is_empty()),
                    scope: scope.clone(),
                });
                let aud = scope.trim_end_matches("/.default");
                return Resp::json(
                    200,
                    format!(
                        r#"{{"token_type":"Bearer","expires_in":{lifetime},"ext_expires_in":{lifetime},"access_token":"{}"}}"#,
                        jwt(aud, lifetime)
                    ),
                );
            }
            if req.method == "GET" && path == "/msi/token" {
                if req.header("x-identity-header") != Some(IDENTITY_HEADER) {
                    return Resp::json(401, r#"{"error":"missing identity header"}"#.into());
                }
                let q = req.query();
                let get = |k: &str| {
                    q.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let resource = get("resource");
                r.lock().unwrap().push(TokenReq {
                    kind: "managed_identity".into(),
                    client_id: get("client_id"),
                    assertion: None,
                    scope: resource.clone(),
                });
                let exp = chrono::Utc::now().timestamp() as u64 + lifetime;
                return Resp::json(
                    200,
                    format!(
                        r#"{{"access_token":"{}","expires_on":"{exp}","token_type":"Bearer","resource":"{resource}"}}"#,
                        jwt(resource.trim_end_matches('/'), lifetime)
                    ),
                );
            }
            Resp::json(404, r#"{"error":"not found"}"#.into())
        });
        TokenServer {
            server,
            requests,
            lifetime_secs,
        }
    }

    pub fn authority_host(&self) -> String {
        self.server.url()
    }

    pub fn requests(&self) -> Vec<TokenReq> {
        self.requests.lock().unwrap().clone()
    }
}

/// Scripted headers may ask for an HTTP date relative to the moment they are sent:
/// `Retry-After: +3s` becomes the date three seconds after the answer leaves.
pub fn expand_date(v: &str) -> String {
    match v
        .strip_prefix('+')
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(secs) => (chrono::Utc::now() + chrono::Duration::seconds(secs))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
        None => v.to_string(),
    }
}

/// An unsigned JWT with the claims Azurite's basic OAuth check reads.
pub fn jwt(aud: &str, lifetime: u64) -> String {
    let now = chrono::Utc::now().timestamp();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header = b64(r#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64(&format!(
        r#"{{"aud":"{aud}","iss":"https://sts.windows.net/{TENANT}/","iat":{now},"nbf":{},"exp":{},"tid":"{TENANT}","oid":"{CLIENT_ID}","appid":"{CLIENT_ID}"}}"#,
        now - 60,
        now + lifetime as i64
    ));
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

/// Reads a whole HTTP response from a stream: (status, lower-cased headers, de-chunked body).
pub fn read_response(s: &mut impl Read) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    super::parse_response(&raw)
}
