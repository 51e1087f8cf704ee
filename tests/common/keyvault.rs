//! An Azure Key Vault stand-in for `wrapkey` and `unwrapkey` as Microsoft documents them
//! (`POST {vault}/keys/{name}[/{version}]/{op}?api-version=7.4`, `{"alg","value"}` in base64url,
//! `{"kid","value"}` back): a real RSA-2048 key with RSA-OAEP-256, bearer tokens checked for
//! the vault audience and expiry, errors in Key Vault's shape.

use std::sync::{Arc, Mutex};

use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    OAEP_SHA256_MGF1SHA256,
};
use base64::Engine;

use super::tls::{HttpsServer, Resp, TestCa};

pub const KEY_NAME: &str = "logferry-kek";
pub const VERSION: &str = "0f3c9e1b2d4e5f8a9b0c1d2e3f4a5b6c";

#[derive(Debug, Clone)]
pub struct Call {
    pub op: String,
    pub version: Option<String>,
}

pub struct KeyVault {
    pub server: HttpsServer,
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// The vault key's public half: what anyone may hold, and wrap with.
    public: Arc<OaepPublicEncryptingKey>,
}

fn error(status: u16, code: &str, message: &str) -> Resp {
    Resp::json(
        status,
        format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#),
    )
}

/// The audience and expiry of an (unsigned, test) JWT.
fn claims(token: &str) -> Option<(String, i64)> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    Some((v["aud"].as_str()?.to_string(), v["exp"].as_i64()?))
}

impl KeyVault {
    pub fn start(ca: &TestCa) -> KeyVault {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let public = Arc::new(OaepPublicEncryptingKey::new(key.public_key()).unwrap());
        let private = Arc::new(OaepPrivateDecryptingKey::new(key).unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let cert = ca.server("vault", &["127.0.0.1", "localhost"]);
        let port = Arc::new(Mutex::new(0u16));
        let (log, p, public_half) = (calls.clone(), port.clone(), public.clone());
        let server = HttpsServer::start(cert.config, move |req| {
            let token = req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .and_then(claims);
            match token {
                Some((aud, exp))
                    if aud == "https://vault.azure.net" && exp > chrono::Utc::now().timestamp() => {
                }
                _ => {
                    return error(
                        401,
                        "Unauthorized",
                        "AKV10000: Request is missing a Bearer or PoP token.",
                    )
                }
            }
            let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
            if req.method != "POST" || !query.split('&').any(|q| q == "api-version=7.4") {
                return error(400, "BadParameter", "api-version missing or not supported");
            }
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (name, version, op) = match parts.as_slice() {
                ["keys", n, op] => (*n, None, *op),
                ["keys", n, v, op] => (*n, Some(*v), *op),
                _ => return error(404, "NotFound", "no such operation"),
            };
            if name != KEY_NAME || version.is_some_and(|v| v != VERSION) {
                return error(
                    404,
                    "KeyNotFound",
                    "A key with (name/id) was not found in this key vault.",
                );
            }
            let body: serde_json::Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => return error(400, "BadParameter", "the body is not JSON"),
            };
            if body["alg"] != "RSA-OAEP-256" {
                return error(400, "BadParameter", "Invalid algorithm");
            }
            let Some(value) = body["value"].as_str().and_then(|v| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(v)
                    .ok()
            }) else {
                return error(400, "BadParameter", "value is not base64url");
            };
            log.lock().unwrap().push(Call {
                op: op.to_string(),
                version: version.map(str::to_string),
            });
            let out = match op {
                "wrapkey" => {
                    let mut buf = vec![0u8; public.ciphertext_size()];
                    public
                        .encrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut buf, None)
                        .unwrap()
                        .to_vec()
                }
                "unwrapkey" => {
                    let mut buf = vec![0u8; private.min_output_size()];
                    match private.decrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut buf, None) {
                        Ok(plain) => plain.to_vec(),
                        Err(_) => return error(400, "BadParameter", "Error decrypting the value"),
                    }
                }
                _ => return error(404, "NotFound", "no such operation"),
            };
            let kid = format!(
                "https://127.0.0.1:{}/keys/{KEY_NAME}/{VERSION}",
                p.lock().unwrap()
            );
            Resp::json(
                200,
                serde_json::json!({
                    "kid": kid,
                    "value": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out),
                })
                .to_string(),
            )
        });
        *port.lock().unwrap() = server.port;
        KeyVault {
            server,
            calls,
            public: public_half,
        }
    }

    /// `value` wrapped with the public key alone, as anyone who has it can (RSA-OAEP-256).
    #[allow(dead_code)]
    pub fn wrap_with_public_key(&self, value: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; self.public.ciphertext_size()];
        self.public
            .encrypt(&OAEP_SHA256_MGF1SHA256, value, &mut buf, None)
            .unwrap()
            .to_vec()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}
