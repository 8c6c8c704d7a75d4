//! The tenant's master `api_key` and the two HKDF subkeys derived from it (byte8-spec.md 12.2,
//! the module's `Model/KeyDerivation.php` and `SECURITY.md` §3).
//!
//! ```text
//! outbound = HKDF-SHA256(ikm = api_key, salt = "", info = "byte8-magento-outbound-v1", L = 32)
//! inbound  = HKDF-SHA256(ikm = api_key, salt = "", info = "byte8-magento-inbound-v1",  L = 32)
//! ```
//!
//! The outbound subkey signs Magento → ledger webhooks (the ledger verifies with it); the inbound
//! subkey signs ledger → Magento calls. The master never signs anything itself.
//!
//! # What the input key material is
//!
//! The IKM is **the UTF-8 bytes of the `api_key` text, after trimming surrounding whitespace**,
//! never a hex- or base64-decoding of it. That is what the module does: `/setup/pair` trims
//! `byte8_api_key` and stores the string, and `KeyDerivation` passes that string to PHP's
//! `hash_hkdf('sha256', $master, 32, $info, '')`, which works on its bytes. Decoding the text
//! here would give subkeys Magento never computes. [`ApiKey::new`] trims the same way, so a key
//! read with a stray newline derives what Magento derives.
//!
//! The keys this crate generates ([`ApiKey::generate`]) are 32 bytes from the operating
//! system's CSPRNG written as 64 lower-case hex characters: 256 bits of entropy in plain ASCII,
//! which nothing between the two sides (JSON, Magento's trimming, its encryptor) can alter.
//!
//! An empty salt is what the module passes; RFC 5869 makes it equal to a salt of 32 zero bytes.
//!
//! # Secrecy
//!
//! [`ApiKey`] is a [`SecretString`] and [`SubKey`] a [`SecretBox`] of 32 bytes: both are zeroed
//! when dropped, and neither `Debug` nor any error message of this module shows them.

use std::fmt;

use hkdf::Hkdf;
use rand::{TryRngCore, rngs::OsRng};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use byte8_ledger_core::error::{Error, Result};

/// HKDF `info` of the Magento → ledger subkey (webhooks the ledger verifies).
pub const OUTBOUND_INFO: &str = "byte8-magento-outbound-v1";
/// HKDF `info` of the ledger → Magento subkey (calls the ledger signs).
pub const INBOUND_INFO: &str = "byte8-magento-inbound-v1";
/// Length of each subkey in bytes.
pub const SUBKEY_LEN: usize = 32;

/// The tenant's master key, shared with Magento at pairing time.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps a key as Magento stores it: surrounding whitespace is trimmed (as `/setup/pair`
    /// does) and the result must not be empty.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the key is empty after trimming (the message never shows the key).
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let raw = Zeroizing::new(key.into());
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Error::invalid("magento api key", "api_key", "must not be empty"));
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
    }

    /// A fresh key: 256 bits from the operating system's CSPRNG as 64 lower-case hex characters.
    ///
    /// # Errors
    /// [`Error::Internal`] when the operating system gives no random bytes.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(bytes.as_mut())?;
        Ok(Self(SecretString::from(hex_lower(bytes.as_ref()))))
    }

    /// The key text, for sending it to Magento at pairing time.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Derives both subkeys.
    pub fn derive(&self) -> MagentoKeys {
        MagentoKeys {
            outbound: SubKey::derive(self.expose_secret().as_bytes(), Direction::Outbound),
            inbound: SubKey::derive(self.expose_secret().as_bytes(), Direction::Inbound),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// Which way a subkey signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Magento → ledger: webhooks, which the ledger verifies.
    Outbound,
    /// Ledger → Magento: REST calls and the sync-state callback, which the ledger signs.
    Inbound,
}

impl Direction {
    /// The HKDF `info` string of this direction.
    pub fn info(self) -> &'static str {
        match self {
            Self::Outbound => OUTBOUND_INFO,
            Self::Inbound => INBOUND_INFO,
        }
    }
}

/// One 32-byte HMAC-SHA256 key derived from the master.
pub struct SubKey {
    direction: Direction,
    key: SecretBox<[u8; SUBKEY_LEN]>,
}

impl SubKey {
    fn derive(ikm: &[u8], direction: Direction) -> Self {
        let mut okm = Box::new([0u8; SUBKEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32, so expansion cannot fail.
        let _ = hkdf_sha256(&[], ikm, direction.info().as_bytes(), okm.as_mut());
        Self { direction, key: SecretBox::new(okm) }
    }

    /// The direction this key signs.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The key bytes, for the HMAC.
    pub fn expose_secret(&self) -> &[u8; SUBKEY_LEN] {
        self.key.expose_secret()
    }
}

impl Clone for SubKey {
    fn clone(&self) -> Self {
        Self { direction: self.direction, key: SecretBox::new(Box::new(*self.key.expose_secret())) }
    }
}

impl fmt::Debug for SubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubKey").field("direction", &self.direction).finish_non_exhaustive()
    }
}

/// Both subkeys of a tenant.
#[derive(Clone)]
pub struct MagentoKeys {
    /// Verifies Magento → ledger webhooks.
    pub outbound: SubKey,
    /// Signs ledger → Magento calls.
    pub inbound: SubKey,
}

impl fmt::Debug for MagentoKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MagentoKeys").finish_non_exhaustive()
    }
}

/// RFC 5869 HKDF with SHA-256: extract with `salt` (empty = 32 zero bytes), expand with `info`
/// into `okm`.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm)
        .map_err(|_| Error::internal(format!("HKDF-SHA256 cannot produce {} bytes", okm.len())))
}

/// Fills `buf` from the operating system's CSPRNG (keys, pairing codes).
///
/// # Errors
/// [`Error::Internal`] when the operating system cannot give random bytes.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    OsRng.try_fill_bytes(buf).map_err(|e| Error::internal(format!("the operating system's CSPRNG failed: {e}")))
}

/// `bytes` as lower-case hex, two characters a byte (how generated keys and codes are written).
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 5869 appendix A: (IKM, salt, info, L, PRK is not checked, OKM).
    const RFC5869: [(&str, &str, &str, usize, &str); 3] = [
        // A.1 basic test case with SHA-256
        (
            "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        // A.2 longer inputs and outputs
        (
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
             202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
             404142434445464748494a4b4c4d4e4f",
            "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
             808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f\
             a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf\
             d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef\
             f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            82,
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
             59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
             cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        // A.3 zero-length salt and info: the module's empty-salt case
        (
            "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "",
            "",
            42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ];

    #[test]
    fn hkdf_matches_rfc5869_vectors() {
        for (i, (ikm, salt, info, len, okm)) in RFC5869.iter().enumerate() {
            let mut out = vec![0u8; *len];
            hkdf_sha256(&unhex(salt), &unhex(ikm), &unhex(info), &mut out).unwrap();
            assert_eq!(hex_lower(&out), *okm, "RFC 5869 A.{}", i + 1);
        }
    }

    #[test]
    fn empty_salt_equals_zero_salt() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        hkdf_sha256(&[], b"k", OUTBOUND_INFO.as_bytes(), &mut a).unwrap();
        hkdf_sha256(&[0u8; 32], b"k", OUTBOUND_INFO.as_bytes(), &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn subkeys_use_the_info_strings_and_the_key_text() {
        let key = ApiKey::new("  the-master-key\n").unwrap();
        let keys = key.derive();
        let mut expected = [0u8; 32];
        hkdf_sha256(&[], b"the-master-key", b"byte8-magento-outbound-v1", &mut expected).unwrap();
        assert_eq!(keys.outbound.expose_secret(), &expected);
        hkdf_sha256(&[], b"the-master-key", b"byte8-magento-inbound-v1", &mut expected).unwrap();
        assert_eq!(keys.inbound.expose_secret(), &expected);
        assert_ne!(keys.inbound.expose_secret(), keys.outbound.expose_secret());
        assert_eq!(keys.outbound.direction(), Direction::Outbound);
        assert_eq!(keys.inbound.direction(), Direction::Inbound);
    }

    #[test]
    fn hkdf_refuses_oversized_output() {
        let mut out = vec![0u8; 255 * 32 + 1];
        assert!(hkdf_sha256(&[], b"k", b"i", &mut out).is_err());
    }

    #[test]
    fn generated_keys_are_64_hex_and_distinct() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        for k in [&a, &b] {
            assert_eq!(k.expose_secret().len(), 64);
            assert!(k.expose_secret().bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        }
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn empty_key_is_refused() {
        let err = ApiKey::new(" \n").unwrap_err();
        assert!(err.to_string().contains("api_key: must not be empty"), "{err}");
    }

    #[test]
    fn secrets_never_reach_debug() {
        let key = ApiKey::new("sUp3r-s3cret-master").unwrap();
        let keys = key.derive();
        let out_hex = hex_lower(keys.outbound.expose_secret());
        let in_hex = hex_lower(keys.inbound.expose_secret());
        let dumps = [
            format!("{key:?}"),
            format!("{keys:?}"),
            format!("{:?}", keys.outbound),
            format!("{:#?}", keys.inbound),
            format!("{:?}", keys.clone()),
        ];
        for d in dumps {
            assert!(!d.contains("sUp3r"), "{d}");
            assert!(!d.contains(&out_hex[..16]) && !d.contains(&in_hex[..16]), "{d}");
            // No byte list either ([12, 200, ...]).
            let first = keys.outbound.expose_secret()[0];
            assert!(!d.contains(&format!("[{first},")), "{d}");
        }
    }
}
