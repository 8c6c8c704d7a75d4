//! HS256 JWTs in both directions (byte8-spec.md 12.3; the module's `Model/Jwt/Signer.php` and
//! `Model/Jwt/Verifier.php`).
//!
//! - [`JwtSigner`] mints ledger → Magento tokens with the **inbound** subkey: `iss`
//!   `byte8-ledger`, `aud` `magento`, `sub` the tenant id, `iat` = `nbf` = now minus
//!   [`CLOCK_SKEW_BACKDATE`] (see below), `exp` = `iat` + the lifetime (60 s by default, at most
//!   300 s, Magento's hard ceiling), `jti` a fresh v4 UUID.
//! - [`WebhookVerifier`] checks Magento → ledger webhook tokens with the **outbound** subkey,
//!   mirroring Magento's own verifier with the 60 s lifetime ceiling of the outbound direction.
//!   The checks, in order (the first that fails is the one reported):
//!
//!   | check | refused when |
//!   |---|---|
//!   | shape | not three base64url segments without padding, or longer than 8 KiB |
//!   | header | not a JSON object with exactly `alg` = `HS256` and `typ` = `JWT` (so `none`, `HS512`, `RS256`… are refused) |
//!   | signature | HMAC-SHA256 of `header.payload` under the outbound subkey differs (compared in constant time) |
//!   | `iss` / `aud` | not the strings `magento` / `byte8-ledger` (an `aud` array is refused, as Magento does) |
//!   | `sub` | not the tenant id of the webhook URL |
//!   | `iat`, `nbf`, `exp` | missing or not integers |
//!   | `jti` | missing, not a string or empty |
//!   | `iat` | more than the leeway (30 s) in the future |
//!   | `nbf` | later than now + leeway |
//!   | `exp` | not after now |
//!   | `exp − iat` | over the ceiling (60 s) |
//!   | replay | the `jti` was seen before (the [`ReplayCache`] keeps it until its `exp`) |
//!
//!   Every refusal is [`Error::Auth`] with [`AuthFailure::InvalidCredential`] and a message naming
//!   the check; no message contains the token, a claim value or a key. A host answers it with
//!   401, which Magento's outbox dead-letters at once (byte8-spec.md 11.5); the one retryable
//!   error, a full replay cache, should be answered with 503 so that Magento retries.
//!
//! # Clock skew: the ledger's tokens are backdated
//!
//! Magento's verifier refuses `nbf > now` with **no** leeway (it allows 30 s only on `iat`). A
//! ledger whose clock runs even one second ahead of the store's would have every call refused
//! with 401 for that second, and a 401 marks the tenant `token_revoked`. So [`JwtSigner`] dates
//! `iat` and `nbf` [`CLOCK_SKEW_BACKDATE`] (5 s) in the past, which absorbs a ledger clock up to
//! 5 s ahead of Magento's. It stays inside Magento's rules: `exp − iat` is still the configured
//! lifetime (≤ 300 s), and `iat ≤ now + 30 s` holds a fortiori. The price is that a token is
//! usable for 5 s less than its lifetime (55 s by default), far more than one call needs. For a
//! lifetime under 6 s the backdate shrinks to lifetime − 1 s, so a fresh token is never already
//! expired. Keep the ledger's clock synchronised (NTP) all the same: beyond 5 s ahead, or a
//! lifetime behind, Magento refuses the tokens.
//!
//! # Why HS256 is written here rather than taken from `jsonwebtoken`
//!
//! The whole algorithm is one HMAC-SHA256 (the `hmac` crate, whose `verify_slice` compares in
//! constant time) and base64url. The protocol needs things a general JWT library does not do or
//! does differently: a header of exactly `{"alg":"HS256","typ":"JWT"}` in that byte order
//! (`jsonwebtoken` writes `typ` first), Magento's asymmetric time rules (leeway on `iat`, none
//! on `exp`), a lifetime ceiling, integer-only time claims, and a `jti` replay cache. With a
//! library those would be re-checked by hand anyway, and `jsonwebtoken`'s `rust_crypto` backend
//! would bring RSA and elliptic-curve crates this protocol never uses. About a hundred lines,
//! checked against tokens made by two other implementations (`tests/fixtures/jwt/`).

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::Mutex,
    time::Duration,
};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    PROVIDER, ReplayCache,
    keys::{Direction, SubKey},
};
use byte8_ledger_core::{
    clock::Clock,
    error::{AuthFailure, Error, Result},
};

/// The only header either side writes or accepts.
pub const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
/// `iss` of ledger → Magento tokens (and `aud` of Magento → ledger ones).
pub const LEDGER: &str = "byte8-ledger";
/// `iss` of Magento → ledger tokens (and `aud` of ledger → Magento ones).
pub const MAGENTO: &str = "magento";
/// Magento's hard ceiling on `exp − iat` of the tokens the ledger signs.
pub const MAX_INBOUND_TTL: Duration = Duration::from_secs(300);
/// The lifetime of the tokens the ledger signs unless configured otherwise.
pub const DEFAULT_INBOUND_TTL: Duration = Duration::from_secs(60);
/// The ceiling on `exp − iat` of webhook tokens (Magento's signer uses exactly 60 s).
pub const MAX_WEBHOOK_TTL: Duration = Duration::from_secs(60);
/// Clock-skew tolerance on `iat` and `nbf` of webhook tokens (Magento's own is 30 s).
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// How far in the past [`JwtSigner`] dates `iat` and `nbf`: Magento refuses `nbf > now` with no
/// leeway, so this absorbs a ledger clock up to this much ahead of the store's (see the module
/// docs).
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(5);

/// The claims of a token, in the order the module writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: `magento` or `byte8-ledger`.
    pub iss: String,
    /// The tenant id.
    pub sub: String,
    /// Audience: `byte8-ledger` or `magento`.
    pub aud: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Not before, unix seconds.
    pub nbf: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// Signs `claims` with `key`: `base64url(HEADER) . base64url(claims JSON) . base64url(HMAC)`.
/// The claims JSON is compact, in the field order of [`Claims`] (the module's order).
///
/// # Errors
/// [`Error::Internal`] if the claims cannot be serialised (they always can).
pub fn sign(key: &SubKey, claims: &Claims) -> Result<String> {
    let payload = serde_json::to_vec(claims).map_err(|e| Error::internal(format!("cannot serialise claims: {e}")))?;
    let mut token = String::with_capacity(256);
    token.push_str(&URL_SAFE_NO_PAD.encode(HEADER));
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = mac(key, token.as_bytes())?.finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

fn mac(key: &SubKey, signing_input: &[u8]) -> Result<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())
        .map_err(|_| Error::internal("HMAC-SHA256 refused a 32-byte key"))?;
    mac.update(signing_input);
    Ok(mac)
}

/// Mints ledger → Magento tokens.
#[derive(Clone)]
pub struct JwtSigner {
    key: SubKey,
    tenant_id: String,
    ttl: Duration,
    clock: std::sync::Arc<dyn Clock>,
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner").field("tenant_id", &self.tenant_id).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// A signer for `tenant_id` with the inbound subkey, 60 s tokens.
    ///
    /// # Errors
    /// [`Error::Config`] when `key` is not the inbound subkey or `tenant_id` is empty.
    pub fn new(key: SubKey, tenant_id: impl Into<String>, clock: std::sync::Arc<dyn Clock>) -> Result<Self> {
        if key.direction() != Direction::Inbound {
            return Err(Error::config(
                "magento signing key",
                "ledger → Magento tokens are signed with the inbound subkey",
            ));
        }
        let tenant_id = tenant_id.into().trim().to_owned();
        if tenant_id.is_empty() {
            return Err(Error::config("tenant_id", "must not be empty"));
        }
        Ok(Self { key, tenant_id, ttl: DEFAULT_INBOUND_TTL, clock })
    }

    /// Sets the token lifetime.
    ///
    /// # Errors
    /// [`Error::Config`] unless 1 s ≤ `ttl` ≤ 300 s (Magento refuses longer tokens).
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self> {
        if ttl < Duration::from_secs(1) || ttl > MAX_INBOUND_TTL {
            return Err(Error::config("magento token ttl", "must be between 1 s and 300 s (Magento's ceiling)"));
        }
        self.ttl = Duration::from_secs(ttl.as_secs());
        Ok(self)
    }

    /// The tenant id put in `sub`.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The claims of a fresh token: `iat` = `nbf` = now − [`CLOCK_SKEW_BACKDATE`] (less for a
    /// lifetime under 6 s, so that `exp` stays after now), `exp` = `iat` + the lifetime, and a new
    /// v4 UUID as `jti`.
    pub fn claims(&self) -> Claims {
        let now = self.clock.now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(60);
        let backdate = i64::try_from(CLOCK_SKEW_BACKDATE.as_secs()).unwrap_or(0).min(ttl - 1).max(0);
        let iat = now.saturating_sub(backdate);
        Claims {
            iss: LEDGER.to_owned(),
            sub: self.tenant_id.clone(),
            aud: MAGENTO.to_owned(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// A fresh token (a secret: it authorises calls until it expires).
    ///
    /// # Errors
    /// As [`sign`].
    pub fn token(&self) -> Result<SecretString> {
        sign(&self.key, &self.claims()).map(SecretString::from)
    }
}

/// A bounded in-memory [`ReplayCache`]. Entries are keyed by SHA-256 of the `jti` (32 bytes
/// whatever its length) and dropped once their token has expired; when `capacity` unexpired
/// entries are held, new tokens are refused with a retryable error rather than accepted
/// unrecorded or evicting a live entry.
#[derive(Debug)]
pub struct MemoryReplayCache {
    capacity: usize,
    inner: Mutex<ReplayInner>,
}

#[derive(Debug, Default)]
struct ReplayInner {
    seen: HashMap<[u8; 32], i64>,
    by_expiry: BTreeSet<(i64, [u8; 32])>,
}

impl MemoryReplayCache {
    /// Default capacity: a webhook token lives at most 90 s (60 s plus leeway), so this holds
    /// over a thousand webhooks a second.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A cache holding at most `capacity` unexpired entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new(ReplayInner::default()) }
    }

    /// Unexpired entries currently held (expired ones may linger until the next insert).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).seen.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        let key: [u8; 32] = Sha256::digest(jti.as_bytes()).into();
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A token whose exp has passed fails the exp check, so its entry is no longer needed.
        while let Some(&(exp, k)) = inner.by_expiry.first() {
            if exp > now {
                break;
            }
            inner.by_expiry.pop_first();
            inner.seen.remove(&k);
        }
        if inner.seen.contains_key(&key) {
            return Ok(false);
        }
        if inner.seen.len() >= self.capacity {
            return Err(Error::database(
                format!("the webhook replay cache is full ({} live tokens); refusing for now", self.capacity),
                true,
                None,
            ));
        }
        inner.seen.insert(key, expires_at);
        inner.by_expiry.insert((expires_at, key));
        Ok(true)
    }
}

/// Verifies Magento → ledger webhook tokens.
pub struct WebhookVerifier {
    key: SubKey,
    clock: std::sync::Arc<dyn Clock>,
    replay: std::sync::Arc<dyn ReplayCache>,
    leeway: i64,
    max_ttl: i64,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("leeway_s", &self.leeway)
            .field("max_ttl_s", &self.max_ttl)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

/// The refusal of a token whose `jti` was seen before (a replay).
pub(crate) fn replay_refused() -> Error {
    refuse("jti already seen (replay)")
}

fn refuse(check: &str) -> Error {
    Error::Auth {
        provider: PROVIDER,
        reason: AuthFailure::InvalidCredential,
        message: format!("webhook JWT refused: {check}"),
    }
}

impl WebhookVerifier {
    /// A verifier with the outbound subkey, the 30 s leeway and the 60 s ceiling.
    ///
    /// # Errors
    /// [`Error::Config`] when `key` is not the outbound subkey.
    pub fn new(key: SubKey, clock: std::sync::Arc<dyn Clock>, replay: std::sync::Arc<dyn ReplayCache>) -> Result<Self> {
        if key.direction() != Direction::Outbound {
            return Err(Error::config("magento webhook key", "webhooks are verified with the outbound subkey"));
        }
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Ok(Self { key, clock, replay, leeway: secs(LEEWAY), max_ttl: secs(MAX_WEBHOOK_TTL) })
    }

    /// Verifies the value of an `Authorization` header (`Bearer <token>`, scheme in any case).
    ///
    /// # Errors
    /// As [`WebhookVerifier::verify`]; a missing or non-bearer header is refused too.
    pub async fn verify_authorization(&self, header: Option<&str>, tenant_id: &str) -> Result<Claims> {
        let header = header.ok_or_else(|| refuse("no Authorization header"))?.trim();
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(refuse("the Authorization header is not `Bearer <token>`")),
        };
        self.verify(token, tenant_id).await
    }

    /// Verifies a webhook token for the tenant of the URL and records its `jti`.
    ///
    /// # Errors
    /// [`Error::Auth`] with [`AuthFailure::InvalidCredential`] naming the failed check; a
    /// retryable error from the replay cache.
    pub async fn verify(&self, token: &str, tenant_id: &str) -> Result<Claims> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(refuse("token longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refuse("malformed token: expected three dot-separated segments"));
        };
        let header = decode_object(header_b64).map_err(|why| refuse(&format!("header {why}")))?;
        check_header(&header)?;
        let signature = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| refuse("signature segment is not base64url without padding"))?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = token.get(..signing_input_len).ok_or_else(|| refuse("malformed token"))?;
        mac(&self.key, signing_input.as_bytes())?.verify_slice(&signature).map_err(|_| refuse("signature mismatch"))?;

        let claims = decode_object(payload_b64).map_err(|why| refuse(&format!("payload {why}")))?;
        let claims = self.check_claims(&claims, tenant_id)?;
        if !self.replay.check_and_record(&claims.jti, claims.exp, self.clock.now().timestamp()).await? {
            return Err(replay_refused());
        }
        Ok(claims)
    }

    fn check_claims(&self, claims: &Map<String, Value>, tenant_id: &str) -> Result<Claims> {
        let string = |name: &str| claims.get(name).and_then(Value::as_str);
        if string("iss") != Some(MAGENTO) {
            return Err(refuse("iss is not `magento`"));
        }
        if string("aud") != Some(LEDGER) {
            return Err(refuse("aud is not `byte8-ledger`"));
        }
        if tenant_id.is_empty() || string("sub") != Some(tenant_id) {
            return Err(refuse("sub is not the tenant id of the URL"));
        }
        let int = |name: &'static str| {
            claims
                .get(name)
                .and_then(|v| if v.is_i64() || v.is_u64() { v.as_i64() } else { None })
                .ok_or_else(|| refuse(&format!("{name} missing or not an integer")))
        };
        let (iat, nbf, exp) = (int("iat")?, int("nbf")?, int("exp")?);
        let jti = match string("jti") {
            Some(j) if !j.is_empty() => j.to_owned(),
            _ => return Err(refuse("jti missing or empty")),
        };
        let now = self.clock.now().timestamp();
        if iat > now.saturating_add(self.leeway) {
            return Err(refuse("iat is in the future beyond the 30 s leeway"));
        }
        if nbf > now.saturating_add(self.leeway) {
            return Err(refuse("not yet valid (nbf is in the future beyond the 30 s leeway)"));
        }
        if exp <= now {
            return Err(refuse("expired (exp is not after now)"));
        }
        if exp.saturating_sub(iat) > self.max_ttl {
            return Err(refuse("lifetime exp − iat exceeds the 60 s ceiling"));
        }
        Ok(Claims { iss: MAGENTO.to_owned(), sub: tenant_id.to_owned(), aud: LEDGER.to_owned(), iat, nbf, exp, jti })
    }
}

fn check_header(header: &Map<String, Value>) -> Result<()> {
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(refuse("header alg is not HS256 (no other algorithm, `none` included, is accepted)"));
    }
    if header.get("typ").and_then(Value::as_str) != Some("JWT") {
        return Err(refuse("header typ is not JWT"));
    }
    if header.len() != 2 {
        return Err(refuse("header has members other than alg and typ"));
    }
    Ok(())
}

/// Decodes a base64url segment holding a JSON object; the error says what is wrong, never what
/// the segment holds.
fn decode_object(segment: &str) -> std::result::Result<Map<String, Value>, &'static str> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| "segment is not base64url without padding")?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("segment is not a JSON object"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::DateTime;
    use serde_json::json;

    use super::*;
    use crate::magento::keys::ApiKey;
    use byte8_ledger_core::clock::ManualClock;

    const TENANT: &str = "6f1c2b4e-0d1a-4e7b-9a51-3c2d1e0f9a8b";
    const NOW: i64 = 1_795_000_000;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(DateTime::from_timestamp(NOW, 0).unwrap()))
    }

    fn keys() -> crate::magento::keys::MagentoKeys {
        ApiKey::new("test-master-key").unwrap().derive()
    }

    fn verifier(clock: Arc<ManualClock>) -> WebhookVerifier {
        WebhookVerifier::new(keys().outbound, clock, Arc::new(MemoryReplayCache::default())).unwrap()
    }

    fn webhook_claims() -> Map<String, Value> {
        json!({"iss": "magento", "sub": TENANT, "aud": "byte8-ledger", "iat": NOW, "nbf": NOW, "exp": NOW + 60,
               "jti": "0b8e2d55-7d0f-4b51-8a6f-5a8f7c1d2e3f"})
        .as_object()
        .cloned()
        .unwrap()
    }

    /// Signs any header and claims JSON with `key`, like a foreign implementation would.
    fn raw_token(header: &str, claims: &Map<String, Value>, key: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        m.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
    }

    fn with(f: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = webhook_claims();
        f(&mut c);
        raw_token(HEADER, &c, keys().outbound.expose_secret())
    }

    async fn refused(token: &str, check: &str) {
        let err = verifier(clock()).verify(token, TENANT).await.unwrap_err();
        match &err {
            Error::Auth { provider: "magento", reason: AuthFailure::InvalidCredential, message } => {
                assert!(message.contains(check), "expected `{check}`, got `{message}`");
                assert!(!message.contains(token), "the message echoes the token");
            }
            other => panic!("not an invalid-credential error: {other:?}"),
        }
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn accepts_a_good_webhook_token() {
        let c = verifier(clock()).verify(&with(|_| {}), TENANT).await.unwrap();
        assert_eq!((c.iss.as_str(), c.aud.as_str(), c.sub.as_str()), ("magento", "byte8-ledger", TENANT));
        assert_eq!((c.iat, c.exp), (NOW, NOW + 60));
    }

    #[tokio::test]
    async fn forged_signature_is_refused() {
        let mut c = webhook_claims();
        // Signed with the wrong key, then with the right key but a payload changed afterwards.
        refused(&raw_token(HEADER, &c, keys().inbound.expose_secret()), "signature mismatch").await;
        refused(&raw_token(HEADER, &c, b"test-master-key"), "signature mismatch").await;
        let good = raw_token(HEADER, &c, keys().outbound.expose_secret());
        c.insert("sub".into(), json!("another-tenant"));
        let other_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = &other_payload;
        refused(&parts.join("."), "signature mismatch").await;
        // A truncated signature.
        refused(&good[..good.len() - 4], "signature").await;
    }

    #[tokio::test]
    async fn other_algorithms_are_refused() {
        let c = webhook_claims();
        let key = keys().outbound.expose_secret().to_vec();
        refused(&raw_token(r#"{"alg":"none","typ":"JWT"}"#, &c, &key), "alg is not HS256").await;
        refused(&raw_token(r#"{"alg":"HS512","typ":"JWT"}"#, &c, &key), "alg is not HS256").await;
        refused(&raw_token(r#"{"alg":"hs256","typ":"JWT"}"#, &c, &key), "alg is not HS256").await;
        refused(&raw_token(r#"{"typ":"JWT"}"#, &c, &key), "alg is not HS256").await;
        refused(&raw_token(r#"{"alg":"HS256","typ":"JWS"}"#, &c, &key), "typ is not JWT").await;
        refused(&raw_token(r#"{"alg":"HS256","typ":"JWT","kid":"x"}"#, &c, &key), "other than alg and typ").await;
        // An unsigned token: `none` with an empty signature segment.
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
        );
        refused(&unsigned, "alg is not HS256").await;
        // The same header in another member order is still HS256/JWT.
        verifier(clock()).verify(&raw_token(r#"{"typ":"JWT","alg":"HS256"}"#, &c, &key), TENANT).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_issuer_audience_or_subject_is_refused() {
        refused(&with(|c| _ = c.insert("iss".into(), json!("byte8-ledger"))), "iss").await;
        refused(&with(|c| _ = c.remove("iss")), "iss").await;
        refused(&with(|c| _ = c.insert("aud".into(), json!("magento"))), "aud").await;
        refused(&with(|c| _ = c.insert("aud".into(), json!(["byte8-ledger"]))), "aud").await;
        refused(&with(|c| _ = c.insert("sub".into(), json!("someone-else"))), "sub is not the tenant id").await;
        let err = verifier(clock()).verify(&with(|_| {}), "").await.unwrap_err();
        assert!(err.to_string().contains("sub is not the tenant id"), "{err}");
    }

    #[tokio::test]
    async fn time_claims_are_checked() {
        // Expired: exp == now is already refused.
        refused(&with(|c| _ = c.insert("exp".into(), json!(NOW))), "expired").await;
        refused(&with(|c| c.extend([("iat".into(), json!(NOW - 70)), ("exp".into(), json!(NOW - 10))])), "expired")
            .await;
        // Not yet valid beyond the leeway; within it is fine.
        refused(&with(|c| _ = c.insert("nbf".into(), json!(NOW + 31))), "not yet valid").await;
        verifier(clock()).verify(&with(|c| _ = c.insert("nbf".into(), json!(NOW + 30))), TENANT).await.unwrap();
        // iat in the future beyond the leeway.
        refused(&with(|c| c.extend([("iat".into(), json!(NOW + 31)), ("exp".into(), json!(NOW + 60))])), "iat").await;
        verifier(clock())
            .verify(&with(|c| c.extend([("iat".into(), json!(NOW + 30)), ("exp".into(), json!(NOW + 90))])), TENANT)
            .await
            .unwrap();
        // Lifetime over the ceiling.
        refused(&with(|c| _ = c.insert("exp".into(), json!(NOW + 61))), "exceeds the 60 s ceiling").await;
        // Missing or non-integer time claims.
        refused(&with(|c| _ = c.remove("exp")), "exp missing or not an integer").await;
        refused(&with(|c| _ = c.insert("iat".into(), json!(1.795e9))), "iat missing or not an integer").await;
        refused(&with(|c| _ = c.insert("nbf".into(), json!("1795000000"))), "nbf missing or not an integer").await;
    }

    #[tokio::test]
    async fn jti_is_required_and_single_use() {
        refused(&with(|c| _ = c.remove("jti")), "jti missing").await;
        refused(&with(|c| _ = c.insert("jti".into(), json!(""))), "jti missing").await;
        refused(&with(|c| _ = c.insert("jti".into(), json!(42))), "jti missing").await;
        let clock = clock();
        let v = verifier(Arc::clone(&clock));
        let token = with(|_| {});
        v.verify(&token, TENANT).await.unwrap();
        let err = v.verify(&token, TENANT).await.unwrap_err();
        assert!(err.to_string().contains("jti already seen"), "{err}");
        // Another token with the same jti is a replay too.
        let again = with(|c| _ = c.insert("iat".into(), json!(NOW + 1)));
        assert!(v.verify(&again, TENANT).await.unwrap_err().to_string().contains("replay"));
        // A refused token does not burn its jti.
        let fresh = with(|c| _ = c.insert("jti".into(), json!("fresh")));
        let mut broken = fresh.clone();
        broken.push('A');
        assert!(v.verify(&broken, TENANT).await.is_err());
        v.verify(&fresh, TENANT).await.unwrap();
    }

    #[tokio::test]
    async fn malformed_tokens_are_refused_without_panicking() {
        let good = with(|_| {});
        let (h, rest) = good.split_once('.').unwrap();
        let cases = [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{good}.x"),
            format!("{h}=.{rest}"),
            format!("!!!.{rest}"),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[1,2]")),
            format!("{h}.{}.sig", URL_SAFE_NO_PAD.encode("not json")),
            "é.é.é".into(),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ];
        for t in cases {
            let err = verifier(clock()).verify(&t, TENANT).await.unwrap_err();
            assert!(matches!(err, Error::Auth { reason: AuthFailure::InvalidCredential, .. }), "{t}: {err}");
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(token in ".{0,200}", dots in "[A-Za-z0-9_.-]{0,120}") {
            for t in [token, dots] {
                let r = block_on(verifier(clock()).verify(&t, TENANT));
                let refused = matches!(r, Err(Error::Auth { reason: AuthFailure::InvalidCredential, .. }));
                proptest::prop_assert!(refused);
            }
        }

        #[test]
        fn correctly_signed_arbitrary_claims_never_panic(
            iat in proptest::prelude::any::<i64>(),
            nbf in proptest::prelude::any::<i64>(),
            exp in proptest::prelude::any::<u64>(),
            jti in ".{0,12}",
            sub in proptest::prop_oneof![proptest::strategy::Just(TENANT.to_owned()), ".{0,8}"],
        ) {
            let token = with(|c| c.extend([
                ("iat".into(), json!(iat)),
                ("nbf".into(), json!(nbf)),
                ("exp".into(), json!(exp)),
                ("jti".into(), json!(jti)),
                ("sub".into(), json!(sub)),
            ]));
            // Accepted or refused, never a panic; accepted only inside the rules.
            if let Ok(c) = block_on(verifier(clock()).verify(&token, TENANT)) {
                proptest::prop_assert!(c.exp > NOW && c.exp - c.iat <= 60 && c.iat <= NOW + 30 && c.nbf <= NOW + 30);
            }
        }
    }

    #[tokio::test]
    async fn authorization_header_forms() {
        let v = verifier(clock());
        let token = with(|_| {});
        v.verify_authorization(Some(&format!("bearer {token}")), TENANT).await.unwrap();
        for h in [None, Some("Basic abc"), Some(token.as_str()), Some("Bearer")] {
            let err = v.verify_authorization(h, TENANT).await.unwrap_err();
            assert!(matches!(err, Error::Auth { reason: AuthFailure::InvalidCredential, .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn replay_cache_expires_and_is_bounded() {
        let cache = MemoryReplayCache::new(2);
        assert!(cache.check_and_record("a", NOW + 10, NOW).await.unwrap());
        assert!(!cache.check_and_record("a", NOW + 10, NOW + 5).await.unwrap());
        assert!(cache.check_and_record("b", NOW + 20, NOW).await.unwrap());
        let full = cache.check_and_record("c", NOW + 20, NOW).await.unwrap_err();
        assert!(full.is_retryable(), "{full}");
        // At a's exp its entry goes, which makes room.
        assert!(cache.check_and_record("c", NOW + 30, NOW + 10).await.unwrap());
        assert_eq!(cache.len(), 2);
        // Once b expires, a jti whose entry has gone may be recorded again.
        assert!(cache.check_and_record("a", NOW + 40, NOW + 20).await.unwrap());
        assert!(!cache.check_and_record("c", NOW + 30, NOW + 20).await.unwrap());
    }

    #[test]
    fn signer_claims_and_limits() {
        let clock = clock();
        let s = JwtSigner::new(keys().inbound, TENANT, clock).unwrap();
        let (a, b) = (s.claims(), s.claims());
        assert_eq!((a.iss.as_str(), a.aud.as_str(), a.sub.as_str()), ("byte8-ledger", "magento", TENANT));
        // Backdated by 5 s (Magento refuses nbf > now with no leeway); 60 s from iat to exp.
        assert_eq!((a.iat, a.nbf, a.exp), (NOW - 5, NOW - 5, NOW + 55));
        assert_ne!(a.jti, b.jti);
        assert!(uuid::Uuid::parse_str(&a.jti).is_ok());
        let s300 = s.clone().with_ttl(Duration::from_secs(300)).unwrap();
        assert_eq!(s300.claims().exp - s300.claims().iat, 300);
        assert!(s.clone().with_ttl(Duration::from_secs(301)).is_err());
        assert!(s.clone().with_ttl(Duration::ZERO).is_err());
        assert!(JwtSigner::new(keys().outbound, TENANT, clock_dyn()).is_err());
        assert!(JwtSigner::new(keys().inbound, " ", clock_dyn()).is_err());
        assert!(WebhookVerifier::new(keys().inbound, clock_dyn(), Arc::new(MemoryReplayCache::default())).is_err());
    }

    /// Magento's verifier rules on a ledger token (`Model/Jwt/Verifier.php`, byte8-spec.md 12.3),
    /// written out here rather than taken from the signer: `iat ≤ now + 30`, `nbf ≤ now` (no
    /// leeway), `exp > now`, `exp − iat ≤ 300`.
    fn magento_accepts(c: &Claims, magento_now: i64) -> bool {
        c.iat <= magento_now + 30 && c.nbf <= magento_now && c.exp > magento_now && c.exp - c.iat <= 300
    }

    #[test]
    fn backdating_absorbs_a_ledger_clock_a_few_seconds_ahead() {
        for ttl in [60u64, 300] {
            for skew in 0..=5 {
                // The ledger's clock is `skew` seconds ahead of Magento's.
                let ledger = Arc::new(ManualClock::new(DateTime::from_timestamp(NOW + skew, 0).unwrap()));
                let s =
                    JwtSigner::new(keys().inbound, TENANT, ledger).unwrap().with_ttl(Duration::from_secs(ttl)).unwrap();
                let c = s.claims();
                assert!(magento_accepts(&c, NOW), "ttl {ttl}, ledger {skew} s ahead: {c:?}");
                assert_eq!(
                    c.exp - c.iat,
                    i64::try_from(ttl).unwrap(),
                    "the lifetime Magento checks is the configured one"
                );
                assert_eq!(c.iat, c.nbf);
            }
            // 6 s ahead is beyond what the backdate absorbs.
            let ledger = Arc::new(ManualClock::new(DateTime::from_timestamp(NOW + 6, 0).unwrap()));
            let s = JwtSigner::new(keys().inbound, TENANT, ledger).unwrap().with_ttl(Duration::from_secs(ttl)).unwrap();
            assert!(!magento_accepts(&s.claims(), NOW));
        }
        // A clock behind Magento's is fine too, as long as the token has not expired there.
        let behind = Arc::new(ManualClock::new(DateTime::from_timestamp(NOW - 30, 0).unwrap()));
        assert!(magento_accepts(&JwtSigner::new(keys().inbound, TENANT, behind).unwrap().claims(), NOW));
        // Very short lifetimes are backdated less, so a fresh token is never already expired.
        for ttl in 1..=7u64 {
            let s =
                JwtSigner::new(keys().inbound, TENANT, clock()).unwrap().with_ttl(Duration::from_secs(ttl)).unwrap();
            let c = s.claims();
            assert!(c.exp > NOW && c.nbf <= NOW && c.exp - c.iat == i64::try_from(ttl).unwrap(), "ttl {ttl}: {c:?}");
        }
    }

    fn clock_dyn() -> Arc<dyn Clock> {
        clock()
    }

    #[test]
    fn signed_token_has_the_exact_header_and_verifies_with_the_inbound_key() {
        let s = JwtSigner::new(keys().inbound, TENANT, clock()).unwrap();
        let token = secrecy::ExposeSecret::expose_secret(&s.token().unwrap()).to_owned();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), HEADER.as_bytes());
        assert!(!token.contains('='));
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(keys().inbound.expose_secret()).unwrap();
        m.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        m.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims.iss, "byte8-ledger");
        assert!(!format!("{s:?}").contains(&token[..20]));
    }
}
