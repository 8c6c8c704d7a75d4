//! Pairing: how the master key reaches Magento (byte8-spec.md 12.1; the module's
//! `Model/Setup/Pair.php` and `SECURITY.md` §4).
//!
//! 1. The merchant generates a code in the Magento admin. Magento keeps only its SHA-256 hex and
//!    the time it was issued. [`PairingCode::generate`], [`PairingCode::hash_hex`] and
//!    [`check_code`] do the same here, for simulators and tests of the handshake.
//! 2. The merchant types the code and the store's base URL into the dashboard.
//! 3. The ledger generates a 256-bit [`ApiKey`] and sends
//!    `POST {magento_base_url}/rest/V1/byte8/setup/pair` with
//!    `{pairing_code, tenant_id, byte8_api_key, ledger_base_url}` and no `Authorization` header:
//!    the route is anonymous, the code is the credential ([`PairRequest::send`]).
//! 4. Magento trims every field and drops trailing `/` from `ledger_base_url`, refuses an empty
//!    field or a `ledger_base_url` that is not `http(s)://host…` with 400, and a missing,
//!    expired (older than 1800 s) or wrong code with one generic 401. On success it stores the
//!    key and burns the code (single use). Sending again with a new key and a new code rotates
//!    the key.
//!
//! [`PairRequest::new`] applies Magento's trimming and checks before anything is sent, so that a
//! request Magento would refuse with 400 is reported with the field named and the code is not
//! spent on it.
//!
//! Codes are opaque strings: Magento's are 32 lower-case hex characters (128 bits), but its docs
//! show `J3K7-XQ9F-RP2M`, so any non-empty code is accepted and sent as typed, trimmed
//! (byte8-spec.md 14.2).

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;
use zeroize::Zeroizing;

use super::{
    Call, PROVIDER, endpoint,
    keys::{ApiKey, fill_random, hex_lower},
    magento_base_url, magento_message,
};
use byte8_ledger_core::{
    clock::Clock,
    error::{AuthFailure, Error, FieldError, ProviderFieldError, Result},
    http::{Request, RetryConfig},
};

/// How long a pairing code stays valid after it is issued (Magento's `PAIRING_CODE_TTL_SECONDS`).
pub const PAIRING_CODE_TTL: Duration = Duration::from_secs(1800);

/// The message of every refused code, whatever the reason (no oracle).
pub const INVALID_CODE: &str = "invalid or expired pairing code";

/// A pairing code: a short-lived, single-use secret.
#[derive(Clone)]
pub struct PairingCode(SecretString);

impl PairingCode {
    /// A fresh code in the module's format: 128 bits from the operating system's CSPRNG as 32
    /// lower-case hex characters.
    ///
    /// # Errors
    /// [`Error::Internal`] when the operating system gives no random bytes.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 16]);
        fill_random(bytes.as_mut())?;
        Ok(Self(SecretString::from(hex_lower(bytes.as_ref()))))
    }

    /// A code as typed, trimmed; any non-empty text is accepted (codes are opaque).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `pairing_code` when it is empty after trimming.
    pub fn new(code: impl Into<String>) -> Result<Self> {
        let raw = Zeroizing::new(code.into());
        let code = raw.trim();
        if code.is_empty() {
            return Err(Error::invalid("pairing request", "pairing_code", "required"));
        }
        Ok(Self(SecretString::from(code.to_owned())))
    }

    /// The code text.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// SHA-256 of the code as lower-case hex: what Magento stores instead of the code.
    pub fn hash_hex(&self) -> String {
        hash_code(self.expose_secret())
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingCode([REDACTED])")
    }
}

/// SHA-256 of `code` (trimmed, as Magento hashes it) as lower-case hex.
pub fn hash_code(code: &str) -> String {
    hex_lower(&Sha256::digest(code.trim().as_bytes()))
}

/// Compares two strings in time that depends only on their lengths (`subtle`).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// True when a code issued at `issued_at` is no longer valid at `now`: older than
/// [`PAIRING_CODE_TTL`]. A code exactly 1800 s old is still valid, as in Magento.
pub fn is_expired(issued_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let ttl = chrono::Duration::from_std(PAIRING_CODE_TTL).unwrap_or(chrono::Duration::minutes(30));
    now.signed_duration_since(issued_at) > ttl
}

/// Magento's check of a presented code against the pending one (`stored_hash`, issued at
/// `issued_at`; `None` when no code is pending): pending, not expired, and the SHA-256 of the
/// trimmed code equal to the stored hash in constant time.
///
/// # Errors
/// [`Error::Auth`] with [`AuthFailure::InvalidCredential`] and the same message for all three
/// failures, as Magento answers one generic 401.
pub fn check_code(
    presented: &str,
    stored_hash: Option<&str>,
    issued_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let refused =
        || Error::Auth { provider: PROVIDER, reason: AuthFailure::InvalidCredential, message: INVALID_CODE.into() };
    let (Some(stored), Some(issued_at)) = (stored_hash, issued_at) else { return Err(refused()) };
    if is_expired(issued_at, now) {
        return Err(refused());
    }
    let presented = hash_code(presented);
    if !constant_time_eq(&presented, &stored.trim().to_ascii_lowercase()) {
        return Err(refused());
    }
    Ok(())
}

/// `POST {magento_base_url}/rest/V1/byte8/setup/pair`, checked and normalised as Magento will.
pub struct PairRequest {
    magento_base_url: Url,
    pairing_code: PairingCode,
    tenant_id: String,
    api_key: ApiKey,
    ledger_base_url: String,
}

impl fmt::Debug for PairRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairRequest")
            .field("magento_base_url", &self.magento_base_url.as_str())
            .field("tenant_id", &self.tenant_id)
            .field("ledger_base_url", &self.ledger_base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct PairBody<'a> {
    pairing_code: &'a str,
    tenant_id: &'a str,
    byte8_api_key: &'a str,
    ledger_base_url: &'a str,
}

/// Retries of the pairing call: a person is waiting at the dashboard.
const PAIR_RETRY: RetryConfig = RetryConfig {
    max_retries: 2,
    initial_backoff: Duration::from_millis(500),
    max_backoff: Duration::from_secs(4),
    retry_timeout: Duration::from_secs(10),
};

impl PairRequest {
    /// Builds the request with Magento's rules: every field trimmed, trailing `/` dropped from
    /// `ledger_base_url`, none empty, `ledger_base_url` of the form `http(s)://host…`; and the
    /// Magento base URL as for [`MagentoClient`](super::MagentoClient).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming every refused field.
    pub fn new(
        magento_base_url: &str,
        pairing_code: &str,
        tenant_id: &str,
        api_key: ApiKey,
        ledger_base_url: &str,
    ) -> Result<Self> {
        let mut errors = Vec::new();
        let base = magento_base_url_or(&mut errors, magento_base_url);
        let code = PairingCode::new(pairing_code).map_err(|e| errors.extend(e.field_errors().iter().cloned())).ok();
        let tenant_id = tenant_id.trim().to_owned();
        if tenant_id.is_empty() {
            errors.push(FieldError::new("tenant_id", "required"));
        }
        let ledger_base_url = ledger_base_url.trim().trim_end_matches('/').to_owned();
        if ledger_base_url.is_empty() {
            errors.push(FieldError::new("ledger_base_url", "required"));
        } else if !is_http_url_with_host(&ledger_base_url) {
            errors.push(FieldError::new("ledger_base_url", "must be an absolute http(s) URL"));
        }
        match (base, code) {
            (Some(magento_base_url), Some(pairing_code)) if errors.is_empty() => {
                Ok(Self { magento_base_url, pairing_code, tenant_id, api_key, ledger_base_url })
            }
            _ => Err(Error::Invalid { what: "pairing request", errors }),
        }
    }

    /// The URL the request goes to.
    ///
    /// # Errors
    /// Never in practice: the base URL was checked.
    pub fn endpoint(&self) -> Result<Url> {
        endpoint(&self.magento_base_url, "setup/pair")
    }

    /// The Magento base URL, normalised.
    pub fn magento_base_url(&self) -> &Url {
        &self.magento_base_url
    }

    /// The tenant id, trimmed.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The master key being delivered.
    pub fn api_key(&self) -> &ApiKey {
        &self.api_key
    }

    /// The ledger base URL, trimmed and without trailing `/`.
    pub fn ledger_base_url(&self) -> &str {
        &self.ledger_base_url
    }

    /// Sends the request (no `Authorization` header). Connection failures before sending and
    /// 429 are retried briefly; nothing sent is re-sent, since Magento burns the code on success.
    ///
    /// # Errors
    /// - 400 (or another 4xx but 401/404/429): [`Error::Rejected`] carrying Magento's message,
    ///   which names what it refused; this includes the 422 that Byte8's docs (not its code) give
    ///   for a replayed code (byte8-spec.md 14.3);
    /// - 401: [`Error::Auth`] with [`AuthFailure::InvalidCredential`], "invalid or expired
    ///   pairing code" (none pending, older than 30 minutes, or wrong: Magento does not say);
    /// - 404: [`Error::NotFound`]: the store has no Byte8 module;
    /// - 5xx or a timeout after sending: a retryable error whose `outcome_unknown()` is true (the
    ///   key may have been stored);
    /// - network failures: [`Error::Http`].
    pub async fn send(&self, http: &reqwest::Client, clock: &dyn Clock) -> Result<()> {
        let body = Zeroizing::new(
            serde_json::to_vec(&PairBody {
                pairing_code: self.pairing_code.expose_secret(),
                tenant_id: &self.tenant_id,
                byte8_api_key: self.api_key.expose_secret(),
                ledger_base_url: &self.ledger_base_url,
            })
            .map_err(|e| Error::internal(format!("cannot serialise the pairing request: {e}")))?,
        );
        let request = Request::new(Method::POST, self.endpoint()?, "setup/pair")
            .label("POST setup/pair")
            .idempotent(false)
            .timeout(super::REQUEST_TIMEOUT)
            // The body carries the tenant's new key: an exchange observer sees its size only.
            .secret_json(body.to_vec());
        let reply = Call { http, request, signer: None, retry: &PAIR_RETRY, clock, observer: None }.execute().await?;
        match reply.status {
            200..=299 => Ok(()),
            401 => Err(Error::Auth {
                provider: PROVIDER,
                reason: AuthFailure::InvalidCredential,
                message: format!("{INVALID_CODE}: generate a new code in the Magento admin and pair again"),
            }),
            404 => Err(Error::NotFound {
                what: "Magento pairing endpoint (is the Byte8 module installed?)".into(),
                id: "/rest/V1/byte8/setup/pair".into(),
            }),
            429 => Err(Error::RateLimited { provider: PROVIDER, retry_after: reply.retry_after }),
            // Not followed: the pairing body carries the new key (nothing was stored).
            s @ 300..=399 => Err(Error::Provider {
                provider: PROVIDER,
                status: Some(s),
                message: super::redirect_message("POST setup/pair", s),
                retryable: false,
                source: None,
            }),
            s @ 400..=499 => {
                let message = magento_message(&reply.body);
                let field = ["pairing_code", "tenant_id", "byte8_api_key", "ledger_base_url"]
                    .into_iter()
                    .filter(|f| message.contains(f))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(Error::Rejected {
                    provider: PROVIDER,
                    status: s,
                    errors: vec![ProviderFieldError { code: String::new(), field, message }],
                })
            }
            s => Err(Error::Provider {
                provider: PROVIDER,
                status: Some(s),
                message: format!(
                    "pairing failed: {}; the key may have been stored, so generate a new code and pair again",
                    magento_message(&reply.body)
                ),
                retryable: s >= 500,
                source: None,
            }),
        }
    }
}

fn magento_base_url_or(errors: &mut Vec<FieldError>, text: &str) -> Option<Url> {
    magento_base_url("magento_base_url", text).map_err(|e| errors.push(e)).ok()
}

/// Magento's `#^https?://[^/]+#`: `http://` or `https://` (lower case) and at least one more
/// character that is not `/`.
fn is_http_url_with_host(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| r.chars().next().is_some_and(|c| c != '/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn generated_codes_have_the_module_format() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let c = PairingCode::generate().unwrap();
            let s = c.expose_secret();
            assert_eq!(s.len(), 32, "{s}");
            assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{s}");
            assert!(seen.insert(s.to_owned()));
        }
    }

    #[test]
    fn codes_are_opaque_and_trimmed() {
        let c = PairingCode::new("  J3K7-XQ9F-RP2M \n").unwrap();
        assert_eq!(c.expose_secret(), "J3K7-XQ9F-RP2M");
        assert!(PairingCode::new("   ").is_err());
        assert!(!format!("{c:?}").contains("J3K7"));
    }

    #[test]
    fn hash_is_sha256_hex_of_the_trimmed_code() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hash_code("abc"), abc);
        assert_eq!(hash_code(" abc\n"), abc);
        assert_eq!(PairingCode::new("abc").unwrap().hash_hex(), abc);
    }

    #[test]
    fn ttl_edges() {
        let issued = t("2026-11-22T10:00:00Z");
        assert!(!is_expired(issued, issued));
        assert!(!is_expired(issued, t("2026-11-22T10:29:59Z")));
        assert!(!is_expired(issued, t("2026-11-22T10:30:00Z")), "exactly 1800 s is still valid");
        assert!(is_expired(issued, t("2026-11-22T10:30:01Z")));
        // A code from the future (clock moved back) is not expired.
        assert!(!is_expired(issued, t("2026-11-22T09:00:00Z")));
    }

    #[test]
    fn check_code_refuses_all_three_the_same_way() {
        let code = PairingCode::generate().unwrap();
        let hash = code.hash_hex();
        let issued = t("2026-11-22T10:00:00Z");
        check_code(code.expose_secret(), Some(&hash), Some(issued), t("2026-11-22T10:30:00Z")).unwrap();
        check_code(&format!(" {} ", code.expose_secret()), Some(&hash.to_uppercase()), Some(issued), issued).unwrap();
        let failures = [
            check_code(code.expose_secret(), None, None, issued),
            check_code(code.expose_secret(), Some(&hash), Some(issued), t("2026-11-22T10:30:01Z")),
            check_code("0123456789abcdef0123456789abcdef", Some(&hash), Some(issued), issued),
            check_code("", Some(&hash), Some(issued), issued),
        ];
        for f in failures {
            let e = f.unwrap_err();
            assert!(matches!(e, Error::Auth { reason: AuthFailure::InvalidCredential, .. }));
            assert_eq!(
                e.to_string(),
                "magento: authorisation failed (InvalidCredential): invalid or expired pairing code"
            );
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "a"));
        assert!(constant_time_eq("", ""));
    }

    #[test]
    fn pair_request_applies_magentos_rules() {
        let key = ApiKey::generate().unwrap();
        let r = PairRequest::new(
            " https://shop.example.com/ ",
            " abc ",
            " tenant-1 ",
            key.clone(),
            " https://ledger.example.com/// ",
        )
        .unwrap();
        assert_eq!(r.endpoint().unwrap().as_str(), "https://shop.example.com/rest/V1/byte8/setup/pair");
        assert_eq!(r.tenant_id(), "tenant-1");
        assert_eq!(r.ledger_base_url(), "https://ledger.example.com");
        let dump = format!("{r:?}");
        assert!(!dump.contains(key.expose_secret()) && !dump.contains("abc"), "{dump}");

        let err = PairRequest::new("", " ", "", key.clone(), "/").unwrap_err();
        let fields: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(fields, ["magento_base_url", "pairing_code", "tenant_id", "ledger_base_url"]);
        for bad in ["ledger.example.com", "ftp://ledger", "HTTPS://ledger", "https:///x", "https://"] {
            let err = PairRequest::new("https://s.example", "c", "t", key.clone(), bad).unwrap_err();
            assert!(err.to_string().contains("ledger_base_url: must be an absolute http(s) URL"), "{bad}: {err}");
        }
        assert!(PairRequest::new("https://s.example", "c", "t", key, "http://ledger:8080/x").is_ok());
    }
}
