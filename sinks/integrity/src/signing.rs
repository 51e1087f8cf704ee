//! Ed25519 signing for what logferry attests (shredding receipts; hourly digests next): a key
//! pair in PEM files that OpenSSL and Python's `cryptography` read as they are.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::Engine as _;
use zeroize::Zeroizing;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a key cannot be made or read. A key file's content is never in the words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("cannot generate a key pair")]
    Generate,
    #[error("cannot encode the private key")]
    Encode,
    #[error("not a PEM \"PRIVATE KEY\" (write one with `logferry keygen`)")]
    NotPrivatePem,
    #[error("not an Ed25519 private key (write one with `logferry keygen`)")]
    NotEd25519Private,
    #[error("not a PEM \"PUBLIC KEY\" nor 64 hex digits")]
    NotPublicKey,
    #[error("not an Ed25519 public key")]
    NotEd25519Public,
}

pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(label: &str, text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.split_once(&begin)?.1.split_once(&end)?.0;
    let joined: Zeroizing<String> =
        Zeroizing::new(body.chars().filter(|c| !c.is_whitespace()).collect());
    base64::engine::general_purpose::STANDARD
        .decode(joined.as_bytes())
        .ok()
        .map(Zeroizing::new)
}

impl SigningKey {
    /// A new key pair: (private key PEM, PKCS#8; public key PEM, SubjectPublicKeyInfo).
    pub fn generate() -> Result<(Zeroizing<String>, String), SigningError> {
        let pair = Ed25519KeyPair::generate().map_err(|_| SigningError::Generate)?;
        let der = pair.to_pkcs8v1().map_err(|_| SigningError::Encode)?;
        let private = Zeroizing::new(pem("PRIVATE KEY", der.as_ref()));
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        Ok((private, pem("PUBLIC KEY", &spki)))
    }

    /// From a private key PEM (PKCS#8) as `logferry keygen` writes it. The error never
    /// shows the file's content.
    pub fn from_pem(text: &str) -> Result<Self, SigningError> {
        let der = unpem("PRIVATE KEY", text).ok_or(SigningError::NotPrivatePem)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| SigningError::NotEd25519Private)?;
        Ok(SigningKey { pair })
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// Base64 of the Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(msg).as_ref())
    }
}

/// The 32 key bytes of a public key given as PEM or as 64 hex digits.
pub fn public_key_bytes(text: &str) -> Result<Vec<u8>, SigningError> {
    let t = text.trim();
    if t.len() == 64 {
        if let Ok(b) = hex::decode(t) {
            return Ok(b);
        }
    }
    let der = unpem("PUBLIC KEY", t).ok_or(SigningError::NotPublicKey)?;
    match der.strip_prefix(&SPKI_PREFIX[..]) {
        Some(k) if k.len() == 32 => Ok(k.to_vec()),
        _ => Err(SigningError::NotEd25519Public),
    }
}

/// Whether `signature` (base64) is `public`'s signature of `msg`.
pub fn verify(public: &[u8], msg: &[u8], signature: &str) -> bool {
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public)
        .verify(msg, &sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_signs_and_verifies_and_nothing_else_does() {
        let (private, public) = SigningKey::generate().unwrap();
        let k = SigningKey::from_pem(&private).unwrap();
        let pubkey = public_key_bytes(&public).unwrap();
        assert_eq!(hex::encode(&pubkey), k.public_hex());
        assert_eq!(public_key_bytes(&k.public_hex()).unwrap(), pubkey);
        let sig = k.sign(b"receipt");
        assert!(verify(&pubkey, b"receipt", &sig));
        assert!(!verify(&pubkey, b"receipt!", &sig));
        let (other, _) = SigningKey::generate().unwrap();
        let other = SigningKey::from_pem(&other).unwrap();
        assert!(!verify(&pubkey, b"receipt", &other.sign(b"receipt")));
        let err = SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    }
}
