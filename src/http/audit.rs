//! The audit of a run's ledger exchanges: every HTTP request a provider's client sends while a
//! run is processed, with the answer, kept with the run's attempt
//! ([`AttemptRecord::exchanges`](crate::store::AttemptRecord::exchanges)) for operators.
//!
//! # How it stays ledger-agnostic
//!
//! The engine knows nothing of HTTP: it opens a [`Recorder`] per attempt and runs the provider
//! calls of that attempt inside [`Recorder::scope`], which makes the recorder the **task-local**
//! one. The Sage and Xero providers are built with the [`RunAudit`] observer of the shared
//! request loop ([`crate::http::exchange`]), which calls [`record`] after every attempt (answered
//! or not); outside a recording (a CLI `reference` command, a test calling the provider directly)
//! [`record`] does nothing. Another provider gets the same audit by giving its requests' loop a
//! [`RunAudit`] observer (or by calling [`record`]). A provider that spawns tasks of its own would record nothing from them (task-locals do
//! not cross `tokio::spawn`); none of this crate's providers does. Token refreshes
//! ([`crate::auth::TokenManager`]) are not recorded: they carry nothing about the run and
//! everything about the secrets.
//!
//! # What is kept, and what never is
//!
//! - the method, the URL's **path and query** (scheme, host and port are the connection's own),
//!   the status (none when no answer came: the error says why), when it was sent, the request and
//!   answer bodies;
//! - **never** a header: `Authorization`, `X-Business`, `xero-tenant-id`, `Idempotency-Key` and
//!   cookies are not read at all;
//! - in bodies and queries, the value of every field whose name says it holds a secret
//!   ([`is_secret_name`]: `access_token`, `refresh_token`, `client_secret`, `password`, `api_key`,
//!   …) is replaced by [`REDACTED`], at any depth of a JSON body and in form-encoded bodies, and a
//!   `Bearer …` credential anywhere in a body is masked too;
//! - each body is cut at [`MAX_BODY_CHARS`] characters (the cut is marked), and a recording keeps
//!   the bodies of its last [`MAX_EXCHANGES`] exchanges (a long list walk keeps its end, where a
//!   failure is); the earlier ones keep their time, method, URL, status and error, so that every
//!   request is still counted (up to [`MAX_EXCHANGE_ROWS`] per recording).
//!
//! # Recordings: a batch's exchanges are kept once
//!
//! Every [`Recorder`] has an id ([`Recorder::id`]) and numbers its exchanges from 0. An attempt
//! keeps a [`RecordingRef`] (the recording and which of its exchanges the attempt saw) beside
//! the exchanges themselves. A single run's attempt has a recording of its own; the runs of one
//! batch (Xero takes up to 50 invoices in one request) share their batch's recording, and a store
//! keeps each exchange of a recording **once** (keyed by recording id and number), however many
//! runs point at it. That is what makes the count of a business's ledger requests
//! ([`crate::store::RunStore::ledger_requests`], the console's "rate limit's use") exact.

use std::{
    borrow::Cow,
    fmt,
    future::Future,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::exchange::{Exchange, ExchangeObserver};
use crate::clock::Clock;

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// The most characters of one body kept.
pub const MAX_BODY_CHARS: usize = 16 * 1024;

/// The most exchanges of one recording that keep their bodies (the last ones).
pub const MAX_EXCHANGES: usize = 200;

/// The most exchanges one recording keeps at all (the oldest are dropped past it): far more
/// than an attempt makes (at Sage's 200 requests a minute, 25 minutes of requests).
pub const MAX_EXCHANGE_ROWS: usize = 5_000;

/// Which exchanges of a recording an attempt saw: `count` exchanges from number `first` of
/// recording `id` (see the module's "Recordings").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRef {
    /// The recording's id ([`Recorder::id`]).
    pub id: String,
    /// The number of the first exchange the attempt saw (0 unless the oldest were dropped).
    pub first: u64,
    /// How many exchanges from `first` the attempt saw.
    pub count: u64,
}

/// One request a provider sent to its ledger, and the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// When the request was sent.
    pub at: DateTime<Utc>,
    /// `GET`, `POST`, `PUT`, `DELETE`.
    pub method: String,
    /// The URL's path and query (secret query parameters redacted).
    pub url: String,
    /// The answer's HTTP status; `None` when no answer came (see `error`).
    pub status: Option<u16>,
    /// The request body, redacted and cut (see the module's docs).
    pub request_body: Option<String>,
    /// The answer's body, redacted and cut.
    pub response_body: Option<String>,
    /// Why no answer came (a timeout, a refused connection), when none did.
    pub error: Option<String>,
}

#[derive(Debug)]
struct State {
    id: String,
    /// The kept exchanges, oldest first; the first one's number is `first`.
    exchanges: std::collections::VecDeque<ExchangeRecord>,
    first: u64,
    snapshot: Option<Snapshot>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            exchanges: std::collections::VecDeque::new(),
            first: 0,
            snapshot: None,
        }
    }
}

/// Collects the exchanges (and the entity snapshot) of one attempt, or of one batch's attempts:
/// the engine opens one per attempt (per batch) and runs it inside [`Recorder::scope`]. Each
/// recorder has a unique id (see the module's "Recordings").
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<State>>);

tokio::task_local! {
    static CURRENT: Recorder;
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` with this recorder as the task's: what [`record`] writes during `f` lands here.
    pub async fn scope<F: Future>(&self, f: F) -> F::Output {
        CURRENT.scope(self.clone(), f).await
    }

    /// The recording's id (a random UUID, unique to this recorder).
    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    /// Adds one exchange: past [`MAX_EXCHANGES`] the bodies of the oldest kept one with bodies
    /// are dropped, past [`MAX_EXCHANGE_ROWS`] the oldest exchange.
    pub fn push(&self, exchange: ExchangeRecord) {
        let mut s = self.lock();
        if s.exchanges.len() >= MAX_EXCHANGE_ROWS {
            s.exchanges.pop_front();
            s.first += 1;
        }
        s.exchanges.push_back(exchange);
        let n = s.exchanges.len();
        if n > MAX_EXCHANGES
            && let Some(old) = s.exchanges.get_mut(n - MAX_EXCHANGES - 1)
        {
            old.request_body = None;
            old.response_body = None;
        }
    }

    /// The exchanges recorded so far, oldest first.
    pub fn exchanges(&self) -> Vec<ExchangeRecord> {
        self.lock().exchanges.iter().cloned().collect()
    }

    /// The exchanges recorded so far with where they sit in the recording (`None` before the
    /// first exchange).
    pub fn recorded(&self) -> (Vec<ExchangeRecord>, Option<RecordingRef>) {
        let s = self.lock();
        if s.exchanges.is_empty() {
            return (Vec::new(), None);
        }
        let count = u64::try_from(s.exchanges.len()).unwrap_or(u64::MAX);
        (s.exchanges.iter().cloned().collect(), Some(RecordingRef { id: s.id.clone(), first: s.first, count }))
    }

    /// Keeps the canonical entity the attempt worked on (what a run's page compares with the
    /// previous run of the same entity), as [`Snapshot::of`] or [`Snapshot::from`] made it: its
    /// secret-named fields redacted like a body's.
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        self.lock().snapshot = Some(snapshot);
    }

    /// The entity snapshot, if one was kept.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.lock().snapshot.clone()
    }
}

/// An attempt's entity snapshot ([`AttemptRecord::snapshot`](crate::store::AttemptRecord::snapshot)):
/// the canonical entity's JSON text, its secret-named fields redacted ([`redact_value`]). It is kept as text:
/// the engine serialises the entity once, a store writes the text as it is, and only a run's page
/// parses it ([`Snapshot::to_value`]). Two snapshots are equal when their texts are.
///
/// Serialised (in an attempt's JSON) as the JSON value it holds, not as a string. Its increment
/// id is read in place ([`Snapshot::increment_id`], beside the event line's reading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(String);

impl Snapshot {
    /// The snapshot of `entity`: serialised to JSON text once; parsed and written again only when
    /// a secret-named field has a value to redact.
    ///
    /// # Errors
    /// When `entity` cannot be serialised as JSON (a map with keys that are not strings).
    pub fn of<T: Serialize + ?Sized>(entity: &T) -> serde_json::Result<Self> {
        Ok(Self(redact_json_text(serde_json::to_string(entity)?)))
    }

    /// A snapshot as a store kept it: `None` unless `text` is one JSON value.
    pub fn from_stored(text: String) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_str(&text);
        serde::de::IgnoredAny::deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(Self(text))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The snapshot as a JSON value. A snapshot made by [`Snapshot::of`] or [`Snapshot::from`],
    /// or read by [`Snapshot::from_stored`], always parses; `Null` otherwise.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl From<Value> for Snapshot {
    /// A snapshot of a JSON value, redacted as [`Snapshot::of`] redacts.
    fn from(mut v: Value) -> Self {
        redact_value(&mut v);
        Self(v.to_string())
    }
}

impl Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Value::deserialize(d).map(Self::from)
    }
}

/// The task's recorder, if the current task is inside [`Recorder::scope`].
pub fn current() -> Option<Recorder> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Records one exchange in the task's recorder, if any (nothing otherwise): what a provider's
/// HTTP layer calls after each answer or network failure. Headers are not taken at all; bodies
/// and the query are redacted and cut here ([`redact_body`], [`redact_url`]).
pub fn record(
    at: DateTime<Utc>,
    method: &str,
    url: &Url,
    request_body: Option<&[u8]>,
    status: Option<u16>,
    response_body: Option<&[u8]>,
    error: Option<&str>,
) {
    let Some(recorder) = current() else { return };
    recorder.push(ExchangeRecord {
        at,
        method: method.to_owned(),
        url: redact_url(url),
        status,
        request_body: request_body.map(redact_body),
        response_body: response_body.map(redact_body),
        error: error.map(|e| cut(mask_bearer(Cow::Borrowed(e)))),
    });
}

/// The [`ExchangeObserver`] the Sage and Xero providers are built with: every exchange of the
/// shared request loop ([`crate::http::exchange::send`]) goes to the task's [`Recorder`] (when a
/// run is being processed) and then to the observer the host gave the builder, if any. The time
/// recorded is when the request was sent, by the provider's clock.
pub struct RunAudit {
    clock: Arc<dyn Clock>,
    inner: Option<Arc<dyn ExchangeObserver>>,
}

impl fmt::Debug for RunAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunAudit").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl RunAudit {
    /// The observer recording into the task's run and then showing `inner` each exchange.
    pub fn observer(clock: Arc<dyn Clock>, inner: Option<Arc<dyn ExchangeObserver>>) -> Arc<dyn ExchangeObserver> {
        Arc::new(Self { clock, inner })
    }
}

impl ExchangeObserver for RunAudit {
    fn exchange(&self, e: &Exchange<'_>) {
        if let Some(inner) = &self.inner {
            inner.exchange(e);
        }
        let elapsed = chrono::Duration::from_std(e.elapsed).unwrap_or_default();
        let now = self.clock.now();
        let at = now.checked_sub_signed(elapsed).unwrap_or(now);
        record(at, e.method.as_str(), e.url, e.request_body, e.status, e.response_body, e.failure);
    }
}

/// True for a field or parameter name that holds a secret: one containing `token`, `secret`,
/// `password`, `passwd`, `authorization`, `api_key`, `apikey`, `private_key`, `signature`,
/// `cookie`, `code_verifier` or `client_assertion` (case and `-`/`_` ignored).
pub fn is_secret_name(name: &str) -> bool {
    // Every field name of every recorded body goes through here (profiled: 2.5 % of `serve`'s CPU
    // when it built a lowercase copy of each). An ASCII name that fits folds on the stack; any
    // other is folded as Unicode says (the Kelvin sign lowercases to an ASCII `k`).
    const FOLDED_MAX: usize = 64;
    if name.is_ascii() && name.len() <= FOLDED_MAX {
        let mut folded = [0u8; FOLDED_MAX];
        let mut n = 0;
        for b in name.bytes().filter(|b| !matches!(b, b'-' | b'_')) {
            folded[n] = b.to_ascii_lowercase();
            n += 1;
        }
        return SECRET_PARTS.is_match(&folded[..n]);
    }
    let n: String = name.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect();
    SECRET_PARTS.is_match(&n)
}

/// [`SECRET_NAME_PARTS`] as one automaton: a folded name is read once, a byte a step, instead of
/// every part compared at every position (eleven parts, each at up to 60 positions: under
/// `arbitrary_precision` every JSON number is a map whose one key, 28 bytes, is a field name
/// here). A deterministic automaton: eleven short patterns make a small one.
static SECRET_PARTS: std::sync::LazyLock<aho_corasick::AhoCorasick> = std::sync::LazyLock::new(|| {
    aho_corasick::AhoCorasick::builder()
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build(SECRET_NAME_PARTS)
        .expect("eleven short literal patterns make an automaton")
});

/// What [`is_secret_name`] looks for in a name folded to lowercase without `-` and `_`.
const SECRET_NAME_PARTS: [&str; 11] = [
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "apikey",
    "privatekey",
    "signature",
    "cookie",
    "codeverifier",
    "clientassertion",
];

/// The path and query of `url`, with the value of every secret-named query parameter redacted.
pub fn redact_url(url: &Url) -> String {
    let mut out = url.path().to_owned();
    if let Some(q) = url.query() {
        out.push('?');
        out.push_str(&redact_form(q));
    }
    out
}

/// A body as kept: text (invalid UTF-8 replaced), secret-named fields of a JSON or form-encoded
/// body redacted, `Bearer` credentials masked, cut at [`MAX_BODY_CHARS`].
///
/// Every body a run sends or receives comes through here, and nearly none holds a secret. A JSON
/// body is first scanned (`json_has_secret`: its field names read in place, nothing built) and
/// kept as sent when no secret-named field has a value; only a body with one is parsed into a
/// [`Value`], redacted and written again. A body whose secret the parsed value no longer shows
/// (a field named twice: the parse keeps the last one) is masked as text instead
/// (`mask_json_text`), so that the earlier one does not leak.
pub fn redact_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    let redacted: Cow<'_, str> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        redact_json(text)
    } else if looks_like_form(&text) {
        Cow::Owned(redact_form(&text))
    } else {
        text
    };
    cut(mask_bearer(redacted))
}

/// JSON text with the value of every secret-named field redacted, as [`redact_body`] redacts a
/// JSON body (uncut): the text itself when no such field has a value.
pub(crate) fn redact_json_text(text: String) -> String {
    redact_json(Cow::Owned(text)).into_owned()
}

/// [`redact_body`]'s JSON case: `text` kept when no secret-named field has a value, else parsed,
/// redacted and written again, or masked as text when it does not parse (a body cut off or
/// broken) or its parse no longer shows the secret (a field named twice).
fn redact_json(text: Cow<'_, str>) -> Cow<'_, str> {
    match json_has_secret(&text) {
        Ok(false) => text,
        Ok(true) => {
            let parsed = serde_json::from_str::<Value>(&text).ok().and_then(|mut v| redact_value(&mut v).then_some(v));
            Cow::Owned(parsed.map_or_else(|| mask_json_text(&text), |v| v.to_string()))
        }
        Err(_) => Cow::Owned(mask_json_text(&text)),
    }
}

/// Whether the JSON `text` has a field with a secret name ([`is_secret_name`]) and a value other
/// than `null`, at any depth; an error where parsing it as a [`Value`] fails (the same
/// deserializer reads it, to its end). Field names are read in place (copied only when they hold
/// an escape), and nothing of the document is kept.
fn json_has_secret(text: &str) -> serde_json::Result<bool> {
    let mut de = serde_json::Deserializer::from_str(text);
    let scan = serde::de::DeserializeSeed::deserialize(SecretScan, &mut de)?;
    de.end()?;
    Ok(scan.secret)
}

/// What [`SecretScan`] found in one JSON value.
struct Scanned {
    /// A secret-named field with a value other than `null` inside it.
    secret: bool,
    /// The value is `null`.
    null: bool,
}

/// Reads one JSON value for [`json_has_secret`].
#[derive(Clone, Copy)]
struct SecretScan;

/// Reads one field name for [`json_has_secret`]: whether it is a secret's.
struct SecretName;

impl<'de> serde::de::DeserializeSeed<'de> for SecretScan {
    type Value = Scanned;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Scanned, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SecretScan {
    type Value = Scanned;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> std::result::Result<Scanned, E> {
        Ok(Scanned { secret: false, null: true })
    }

    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Scanned, E> {
        self.visit_unit()
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Scanned, E> {
        Ok(Scanned { secret: false, null: false })
    }

    fn visit_i64<E>(self, _: i64) -> std::result::Result<Scanned, E> {
        Ok(Scanned { secret: false, null: false })
    }

    fn visit_u64<E>(self, _: u64) -> std::result::Result<Scanned, E> {
        Ok(Scanned { secret: false, null: false })
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Scanned, E> {
        Ok(Scanned { secret: false, null: false })
    }

    fn visit_str<E>(self, _: &str) -> std::result::Result<Scanned, E> {
        Ok(Scanned { secret: false, null: false })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Scanned, A::Error> {
        let mut secret = false;
        while let Some(item) = seq.next_element_seed(SecretScan)? {
            secret |= item.secret;
        }
        Ok(Scanned { secret, null: false })
    }

    // A number is a map of one private field under `arbitrary_precision`: read as any other.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Scanned, A::Error> {
        let mut secret = false;
        while let Some(named) = map.next_key_seed(SecretName)? {
            let value = map.next_value_seed(SecretScan)?;
            secret |= value.secret || (named && !value.null);
        }
        Ok(Scanned { secret, null: false })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for SecretName {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for SecretName {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> std::result::Result<bool, E> {
        Ok(is_secret_name(name))
    }
}

/// Replaces the value of every secret-named field of `v`, at any depth; true when one was
/// replaced.
pub fn redact_value(v: &mut Value) -> bool {
    // Every field is visited (no early return): a body may hold several secrets.
    let mut replaced = false;
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if is_secret_name(k) && !x.is_null() {
                    *x = Value::String(REDACTED.to_owned());
                    replaced = true;
                } else {
                    replaced |= redact_value(x);
                }
            }
        }
        Value::Array(items) => {
            for x in items {
                replaced |= redact_value(x);
            }
        }
        _ => {}
    }
    replaced
}

fn looks_like_form(text: &str) -> bool {
    !text.is_empty()
        && text.contains('=')
        && !text.chars().any(|c| c.is_whitespace() || matches!(c, '{' | '}' | '<' | '"'))
}

fn redact_form(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_name(&percent_decode(k)) => format!("{k}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("{s}=").as_bytes()).next().map(|(k, _)| k.into_owned()).unwrap_or_default()
}

/// Masks `"secret_name": "value"` in JSON text that does not parse (a cut-off body).
fn mask_json_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let Some(end) = after[1..].find('"') else {
            out.push_str(after);
            return out;
        };
        let name = &after[1..=end];
        let tail = &after[end + 2..];
        out.push('"');
        out.push_str(name);
        out.push('"');
        let value_start = tail.trim_start();
        if is_secret_name(name) && value_start.starts_with(':') {
            let v = value_start[1..].trim_start();
            if let Some(v) = v.strip_prefix('"') {
                // Skip the string value (escapes respected).
                let mut escaped = false;
                let mut len = v.len();
                for (i, c) in v.char_indices() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        len = i + 1;
                        break;
                    }
                }
                out.push_str(&format!(":\"{REDACTED}\""));
                rest = &v[len.min(v.len())..];
                continue;
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Masks `Bearer <credential>` wherever it appears.
fn mask_bearer(text: Cow<'_, str>) -> Cow<'_, str> {
    // Found without a lowercase copy of the text: the needle is ASCII, so a match starts and ends
    // on character boundaries.
    const NEEDLE: &[u8] = b"bearer ";
    let find = |from: usize| {
        text.as_bytes()[from..].windows(NEEDLE.len()).position(|w| w.eq_ignore_ascii_case(NEEDLE)).map(|p| from + p)
    };
    let Some(first) = find(0) else { return text };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut found = Some(first);
    while let Some(pos) = found {
        let start = pos + NEEDLE.len();
        out.push_str(&text[i..start]);
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']'))
            .map_or(text.len(), |e| start + e);
        if end > start {
            out.push_str(REDACTED);
        }
        i = end;
        found = find(i);
    }
    out.push_str(&text[i..]);
    Cow::Owned(out)
}

fn cut(text: Cow<'_, str>) -> String {
    // No more bytes than the limit: no more characters either.
    if text.len() <= MAX_BODY_CHARS {
        return text.into_owned();
    }
    match text.char_indices().nth(MAX_BODY_CHARS) {
        None => text.into_owned(),
        Some((at, _)) => format!("{}… [cut: {} more bytes]", &text[..at], text.len() - at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
    }

    #[test]
    fn secret_fields_are_redacted_at_any_depth() {
        let body = br#"{"access_token":"AT-123","nested":{"Refresh-Token":"RT-9","list":[{"client_secret":"cs"}]},
            "contact":{"name":"Jane","password":"hunter2","api_key":"k"},"amount":"10.00","id_token":null}"#;
        let out = redact_body(body);
        for secret in ["AT-123", "RT-9", "\"cs\"", "hunter2", "\"k\""] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["access_token"], REDACTED);
        assert_eq!(v["nested"]["Refresh-Token"], REDACTED);
        assert_eq!(v["nested"]["list"][0]["client_secret"], REDACTED);
        assert_eq!(v["contact"]["name"], "Jane", "ordinary fields stay");
        assert_eq!(v["amount"], "10.00");
        assert!(v["id_token"].is_null(), "a null says nothing and stays null");
    }

    #[test]
    fn form_bodies_queries_and_bearer_credentials_are_masked() {
        let out = redact_body(b"grant_type=refresh_token&refresh_token=RT-1&client_id=app&client_secret=S3");
        assert_eq!(out, "grant_type=refresh_token&refresh_token=[redacted]&client_id=app&client_secret=[redacted]");
        let url = Url::parse("https://api.example.com/v3.1/contacts?search=jane&access_token=AT&page=2").unwrap();
        assert_eq!(redact_url(&url), "/v3.1/contacts?search=jane&access_token=[redacted]&page=2");
        let out = redact_body(b"upstream said: Authorization: Bearer eyJhbGciOi.abc.def was refused");
        assert_eq!(out, "upstream said: Authorization: Bearer [redacted] was refused");
        // A JSON body that does not parse (cut off) still loses its secrets.
        let out = redact_body(br#"{"name":"x","access_token":"AT-\"q\"-1","more":"#);
        assert!(!out.contains("AT-"), "{out}");
        assert!(out.contains(r#""name":"x""#), "{out}");
    }

    #[test]
    fn secret_names_are_recognised() {
        for yes in ["access_token", "refreshToken", "CLIENT_SECRET", "x-api-key", "Password", "code_verifier"] {
            assert!(is_secret_name(yes), "{yes}");
        }
        for no in ["name", "tax_rate_id", "reference", "contact_type", "code", "total_amount"] {
            assert!(!is_secret_name(no), "{no}");
        }
    }

    /// The definition [`is_secret_name`] had before its ASCII path: every name folded as
    /// Unicode, into a new string. The model the fast path must agree with.
    fn secret_name_as_unicode_folds_it(name: &str) -> bool {
        let n: String = name.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect();
        ["token", "secret", "password", "passwd", "authorization", "apikey", "privatekey", "signature", "cookie"]
            .into_iter()
            .chain(["codeverifier", "clientassertion"])
            .any(|s| n.contains(s))
    }

    proptest::proptest! {
        /// Names built from the parts' letters, `-`, `_`, case changes and a few non-ASCII
        /// characters (the Kelvin sign folds to `k`), around the 64-byte stack fold's edge.
        #[test]
        fn the_ascii_path_agrees_with_unicode_folding(
            name in "[A-Za-z_\\-]{0,3}((TOK|t_o-k)(EN|e_n)|Se-CrEt|pass_wd|api-KEY|coo\u{212A}ie|x{50,70})?[a-zA-Z\\-_\u{212A}\u{130}é]{0,8}"
        ) {
            proptest::prop_assert_eq!(is_secret_name(&name), secret_name_as_unicode_folds_it(&name), "{:?}", name);
        }
    }

    #[test]
    fn names_at_the_stack_folds_edge_are_read_whole() {
        for (name, secret) in [
            (format!("{}token", "x".repeat(59)), true),   // 64 bytes: folded on the stack
            (format!("{}token", "x".repeat(60)), true),   // 65: folded as Unicode
            (format!("{}_-token", "x".repeat(59)), true), // 66 bytes, 64 once folded
            (format!("{}tokex", "x".repeat(59)), false),
            ("coo\u{212A}ie".to_owned(), true), // the Kelvin sign is a `k` once lowercased
        ] {
            assert_eq!(is_secret_name(&name), secret, "{name}");
            assert_eq!(secret_name_as_unicode_folds_it(&name), secret, "the model, {name}");
        }
    }

    #[test]
    fn a_body_without_secrets_is_kept_as_sent_and_one_with_them_is_rewritten() {
        let plain = b"{ \"name\": \"Jane\",\n  \"total\": 10.50, \"lines\": [ {\"qty\": 1.0} ] }";
        assert_eq!(redact_body(plain), String::from_utf8_lossy(plain), "spacing and 1.0 kept");
        let secret = b"{ \"name\": \"Jane\",\n  \"lines\": [ {\"Api-Key\": \"k-1\"} ] }";
        assert_eq!(redact_body(secret), r#"{"lines":[{"Api-Key":"[redacted]"}],"name":"Jane"}"#);
        let mut v: Value = serde_json::from_slice(plain).unwrap();
        assert!(!redact_value(&mut v), "nothing replaced");
        let mut v: Value = serde_json::from_slice(secret).unwrap();
        assert!(redact_value(&mut v), "one field replaced, inside an array");
    }

    /// The body as [`redact_body`] kept it before it scanned: every JSON body parsed into a
    /// [`Value`], a lowercase copy of the text searched for `bearer `. The model the scan must
    /// agree with, but for a field named twice (below).
    fn redact_body_as_parsed(body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body).into_owned();
        let trimmed = text.trim_start();
        let redacted = if trimmed.starts_with('{') || trimmed.starts_with('[') {
            match serde_json::from_str::<Value>(&text) {
                Ok(mut v) => {
                    if redact_value(&mut v) {
                        v.to_string()
                    } else {
                        text.clone()
                    }
                }
                Err(_) => mask_json_text(&text),
            }
        } else if looks_like_form(&text) {
            redact_form(&text)
        } else {
            text.clone()
        };
        let lower = redacted.to_ascii_lowercase();
        let mut masked = String::new();
        let mut i = 0;
        while let Some(pos) = lower[i..].find("bearer ") {
            let start = i + pos + "bearer ".len();
            masked.push_str(&redacted[i..start]);
            let end = redacted[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']'))
                .map_or(redacted.len(), |e| start + e);
            if end > start {
                masked.push_str(REDACTED);
            }
            i = end;
        }
        masked.push_str(&redacted[i..]);
        match masked.char_indices().nth(MAX_BODY_CHARS) {
            None => masked,
            Some((at, _)) => format!("{}… [cut: {} more bytes]", &masked[..at], masked.len() - at),
        }
    }

    /// JSON documents with secret-named and other fields (distinct names in each object), values
    /// of every kind (`null` among them, big and exact numbers, escapes, `Bearer` in strings).
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "(1e400|12345678901234567890123|-0\\.10|3\\.140)".prop_map(|n| serde_json::from_str::<Value>(&n).unwrap()),
            "[a-zA-Z \\\"é\u{1F600}]{0,12}|(Bearer|BEARER|bearer) [a-z.]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    "(name|total|id|access_token|Api-Key|x_\\u0074oken|client\\\"secret|passwd|é)",
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Scanned, a JSON body (as compact or pretty text, whole or cut short, with text around
        /// it) is kept exactly as the parse-everything model keeps it.
        #[test]
        fn the_scan_keeps_what_parsing_kept(
            v in json_value(),
            pretty: bool,
            cut_at in proptest::option::of(0usize..200),
            around in "( |\n)?(x)?",
        ) {
            let mut text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            if let Some(at) = cut_at {
                let at = text.char_indices().nth(at).map_or(text.len(), |(i, _)| i);
                text.truncate(at);
            }
            let body = format!("{around}{text}{around}");
            proptest::prop_assert_eq!(redact_body(body.as_bytes()), redact_body_as_parsed(body.as_bytes()), "{}", body);
        }

        /// Any text at all (forms, `Bearer` credentials, bytes that are not UTF-8), long or short.
        #[test]
        fn any_body_is_kept_as_the_model_keeps_it(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            words in "((bEaReR |token=|&|a=b|\\{|\"|é| )[a-z0-9]{0,4}){0,8}",
            long: bool,
        ) {
            let mut all = words.into_bytes();
            all.extend(body);
            if long {
                all = all.repeat(MAX_BODY_CHARS / all.len().max(1) + 2);
            }
            proptest::prop_assert_eq!(redact_body(&all), redact_body_as_parsed(&all));
        }
    }

    #[test]
    fn a_secret_named_twice_does_not_leak_its_first_value() {
        // The parse keeps the last `token` (null): the model kept the text, and the first value.
        let body = br#"{"token":"T-1","name":"Jane","token":null}"#;
        assert!(redact_body_as_parsed(body).contains("T-1"), "the model leaks it");
        let out = redact_body(body);
        assert!(!out.contains("T-1"), "{out}");
        assert!(out.contains(r#""name":"Jane""#), "{out}");
    }

    #[test]
    fn long_bodies_are_cut_and_say_so() {
        let long = "x".repeat(MAX_BODY_CHARS + 10);
        let out = redact_body(long.as_bytes());
        assert!(out.starts_with(&"x".repeat(MAX_BODY_CHARS)));
        assert!(out.ends_with("… [cut: 10 more bytes]"), "{}", &out[out.len() - 40..]);
        assert_eq!(redact_body("é".repeat(3).as_bytes()), "ééé", "multi-byte text is not split");
    }

    #[tokio::test]
    async fn record_writes_only_inside_a_scope() {
        let url = Url::parse("http://127.0.0.1/v3.1/contacts?x=1").unwrap();
        record(t(), "GET", &url, None, Some(200), Some(b"{}"), None);
        let rec = Recorder::new();
        rec.scope(async {
            record(t(), "POST", &url, Some(br#"{"password":"p"}"#), Some(422), Some(b"bad"), None);
            record(t(), "GET", &url, None, None, None, Some("timed out"));
        })
        .await;
        let got = rec.exchanges();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].url, "/v3.1/contacts?x=1");
        assert_eq!(got[0].status, Some(422));
        assert_eq!(got[0].request_body.as_deref(), Some(r#"{"password":"[redacted]"}"#));
        assert_eq!(got[1].error.as_deref(), Some("timed out"));
        assert!(current().is_none());
    }

    #[test]
    fn a_recording_keeps_the_bodies_of_its_last_exchanges_and_counts_every_one() {
        let rec = Recorder::new();
        for i in 0..MAX_EXCHANGES + 5 {
            rec.push(ExchangeRecord {
                at: t(),
                method: "GET".into(),
                url: format!("/p/{i}"),
                status: Some(200),
                request_body: Some(format!("q{i}")),
                response_body: Some(format!("a{i}")),
                error: None,
            });
        }
        let (got, at) = rec.recorded();
        assert_eq!(got.len(), MAX_EXCHANGES + 5, "every request is kept");
        assert_eq!(at, Some(RecordingRef { id: rec.id(), first: 0, count: (MAX_EXCHANGES + 5) as u64 }));
        assert!(
            got[..5].iter().all(|e| e.request_body.is_none() && e.response_body.is_none()),
            "the oldest lose their bodies"
        );
        assert_eq!(got[4].url, "/p/4", "but keep their URL");
        assert_eq!(got[5].request_body.as_deref(), Some("q5"));
        assert_eq!(
            got.last().and_then(|e| e.response_body.as_deref()),
            Some(format!("a{}", MAX_EXCHANGES + 4).as_str())
        );
        assert_ne!(Recorder::new().id(), rec.id(), "each recording has its own id");
    }

    #[test]
    fn a_recording_drops_its_oldest_exchanges_past_the_row_limit() {
        let rec = Recorder::new();
        for i in 0..MAX_EXCHANGE_ROWS + 5 {
            rec.push(ExchangeRecord {
                at: t(),
                method: "GET".into(),
                url: format!("/p/{i}"),
                status: Some(200),
                request_body: None,
                response_body: None,
                error: None,
            });
        }
        let (got, at) = rec.recorded();
        assert_eq!(got.len(), MAX_EXCHANGE_ROWS);
        assert_eq!(got[0].url, "/p/5");
        assert_eq!(at.map(|r| (r.first, r.count)), Some((5, MAX_EXCHANGE_ROWS as u64)));
        assert_eq!(got.last().map(|e| e.url.as_str()), Some(format!("/p/{}", MAX_EXCHANGE_ROWS + 4).as_str()));
    }
}
