//! Tokens encrypted at rest: AES-256-GCM under the master key `LEDGER_MASTER_KEY` (base64 of 32
//! bytes), with a fresh random 96-bit nonce per seal and the connection's scope as associated
//! data, so a ciphertext moved to another connection does not open. Key material and plaintexts
//! are zeroized when dropped.

use std::fmt;

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    auth::TokenSet,
    error::{Error, Result},
};

/// The environment variable holding the master key.
pub const MASTER_KEY_ENV: &str = "LEDGER_MASTER_KEY";

const VERSION: &str = "v1";

/// The 32-byte master key; zeroized on drop and never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Reads a key from base64 of exactly 32 bytes.
    ///
    /// # Errors
    /// [`Error::Config`] naming `LEDGER_MASTER_KEY` when it is not base64 of 32 bytes.
    pub fn from_base64(text: &SecretString) -> Result<Self> {
        let mut bytes = Zeroizing::new(
            B64.decode(text.expose_secret().trim())
                .map_err(|_| Error::config(MASTER_KEY_ENV, "must be base64 (of 32 random bytes)"))?,
        );
        if bytes.len() != 32 {
            let n = bytes.len();
            bytes.zeroize();
            return Err(Error::config(MASTER_KEY_ENV, format!("must decode to 32 bytes, got {n}")));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    /// Reads the key from `LEDGER_MASTER_KEY`.
    ///
    /// # Errors
    /// [`Error::Config`] when it is unset or malformed.
    pub fn from_env() -> Result<Self> {
        let text = std::env::var(MASTER_KEY_ENV).map_err(|_| {
            Error::config(MASTER_KEY_ENV, "is not set (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)")
        })?;
        Self::from_base64(&SecretString::from(text))
    }

    /// A random key (tests, the demo).
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&key);
        Self(out)
    }

    /// A 32-byte subkey for one purpose (HKDF-SHA256 of the master key, `info` naming the
    /// purpose, e.g. `byte8-ledger:console:state`): every process sharing the master key derives
    /// the same subkey, and no subkey reveals the master key or another purpose's subkey.
    pub fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, self.0.as_slice());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit (255 × 32): expand cannot fail.
        if hk.expand(info, out.as_mut_slice()).is_err() {
            tracing::error!("HKDF refused a 32-byte output");
        }
        out
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.as_slice()))
    }

    /// Encrypts `plaintext` bound to `aad`: `v1:` + base64(nonce ‖ ciphertext ‖ tag).
    ///
    /// # Errors
    /// [`Error::Internal`] if encryption fails (it does not for valid inputs).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .map_err(|_| Error::internal("token encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{VERSION}:{}", B64.encode(out)))
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same `aad`.
    ///
    /// # Errors
    /// [`Error::Config`] when the key is wrong or the data was tampered with or moved.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let wrong = || {
            Error::config(
                MASTER_KEY_ENV,
                "cannot decrypt the stored tokens: the master key differs from the one they were stored with, or the data was altered",
            )
        };
        let body = sealed.strip_prefix("v1:").ok_or_else(wrong)?;
        let raw = B64.decode(body).map_err(|_| wrong())?;
        if raw.len() < 12 + 16 {
            return Err(wrong());
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = self.cipher().decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad }).map_err(|_| wrong())?;
        Ok(Zeroizing::new(plain))
    }
}

#[derive(Serialize, Deserialize, Zeroize)]
#[zeroize(drop)]
struct PlainTokens {
    access: String,
    refresh: String,
    #[zeroize(skip)]
    access_expires_at: DateTime<Utc>,
    #[zeroize(skip)]
    refresh_expires_at: Option<DateTime<Utc>>,
    /// Absent in pairs sealed before it existed.
    #[zeroize(skip)]
    #[serde(default)]
    issued_at: Option<DateTime<Utc>>,
}

/// Encrypts a token pair for `scope`.
///
/// # Errors
/// As [`MasterKey::seal`].
pub fn seal_tokens(key: &MasterKey, scope: &str, tokens: &TokenSet) -> Result<String> {
    let plain = PlainTokens {
        access: tokens.access_token.expose_secret().to_owned(),
        refresh: tokens.refresh_token.expose_secret().to_owned(),
        access_expires_at: tokens.access_expires_at,
        refresh_expires_at: tokens.refresh_expires_at,
        issued_at: tokens.issued_at,
    };
    let json = Zeroizing::new(serde_json::to_vec(&plain).map_err(|e| Error::internal(format!("tokens: {e}")))?);
    key.seal(&json, scope.as_bytes())
}

/// Decrypts a token pair stored for `scope`.
///
/// # Errors
/// As [`MasterKey::open`].
pub fn open_tokens(key: &MasterKey, scope: &str, sealed: &str) -> Result<TokenSet> {
    let json = key.open(sealed, scope.as_bytes())?;
    let plain: PlainTokens = serde_json::from_slice(&json)
        .map_err(|_| Error::internal("stored tokens decrypted to something unreadable"))?;
    Ok(TokenSet {
        access_token: SecretString::from(plain.access.clone()),
        refresh_token: SecretString::from(plain.refresh.clone()),
        access_expires_at: plain.access_expires_at,
        refresh_expires_at: plain.refresh_expires_at,
        issued_at: plain.issued_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> TokenSet {
        TokenSet {
            access_token: SecretString::from("access-PLAINTEXT".to_owned()),
            refresh_token: SecretString::from("refresh-PLAINTEXT".to_owned()),
            access_expires_at: DateTime::<Utc>::UNIX_EPOCH,
            refresh_expires_at: None,
            issued_at: None,
        }
    }

    #[test]
    fn round_trip_and_no_plaintext_at_rest() {
        let key = MasterKey::generate();
        let sealed = seal_tokens(&key, "biz-1", &tokens()).unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("PLAINTEXT"));
        let back = open_tokens(&key, "biz-1", &sealed).unwrap();
        assert_eq!(back.refresh_token.expose_secret(), "refresh-PLAINTEXT");
        // A fresh nonce each time: the same tokens seal differently.
        assert_ne!(sealed, seal_tokens(&key, "biz-1", &tokens()).unwrap());
    }

    #[test]
    fn wrong_key_scope_or_tampering_do_not_open() {
        let key = MasterKey::generate();
        let sealed = seal_tokens(&key, "biz-1", &tokens()).unwrap();
        assert!(open_tokens(&MasterKey::generate(), "biz-1", &sealed).is_err());
        assert!(open_tokens(&key, "biz-2", &sealed).is_err(), "bound to its scope");
        let mut raw = B64.decode(&sealed[3..]).unwrap();
        raw[20] ^= 1;
        assert!(open_tokens(&key, "biz-1", &format!("v1:{}", B64.encode(raw))).is_err());
    }

    #[test]
    fn master_key_parsing() {
        let good = SecretString::from(B64.encode([7u8; 32]));
        assert!(MasterKey::from_base64(&good).is_ok());
        let short = SecretString::from(B64.encode([7u8; 16]));
        assert!(MasterKey::from_base64(&short).unwrap_err().to_string().contains("32 bytes"));
        assert!(MasterKey::from_base64(&SecretString::from("not base64!".to_owned())).is_err());
        assert_eq!(format!("{:?}", MasterKey::from_base64(&good).unwrap()), "MasterKey([redacted])");
    }
}
