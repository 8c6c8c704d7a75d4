//! The sync runs' audit, as an operator reads it: the runs table ([`RunQuery`] →
//! [`RunStore::query_runs`]), one run's page ([`run_detail`]: the event, every attempt with its
//! ledger exchanges, the outcome, the ledger's document, and for an upsert what changed since the
//! previous run of the same entity, [`snapshot_diff`]), the retries
//! ([`RunStore::requeue_run`], [`RunStore::requeue_dead_letters`]), and a business's ledger
//! requests over a time ([`RunStore::ledger_requests`]).
//!
//! # Exchanges, kept once
//!
//! An attempt's ledger requests and answers ([`AttemptRecord::exchanges`]) belong to a
//! recording ([`crate::http::audit`]'s "Recordings"): the attempt's own, or the one the runs of a
//! batch share. The stores keep each exchange once, keyed by its recording and number; an attempt
//! keeps where its exchanges sit ([`AttemptRecord::recording`]: first number and count), so a run's
//! page shows every request and answer its attempts saw, and counting a business's requests
//! counts each once. The requests a business makes outside any run (reference data loaded for a
//! worker or on an operator's demand, the engine's capabilities and policy check) are kept as
//! recordings of their own ([`recorded_outside_runs`], [`RunStore::record_exchanges`], for
//! [`LOOSE_EXCHANGES_KEPT`]), so that [`RunStore::ledger_requests`] counts every request the
//! business's providers made through the shared HTTP loop. Not counted: token requests (to the
//! identity server, outside the API's limit) and the connect flow's listing of the businesses a
//! new token reaches (no business's yet).
//!
//! # Retries and attempt numbers
//!
//! A retry keeps the run's attempt count ([`Run::attempts`](super::Run::attempts)): the next
//! attempt is numbered after the earlier ones. The engine counts its `max_attempts` and retry
//! ladder from the retry ([`Run::attempts_before_retry`](super::Run::attempts_before_retry)).
//!
//! # The runs table
//!
//! Runs are listed **newest first** (received time, then id, both descending: a stable order, so
//! that paging by offset neither repeats nor skips a run while nothing new arrives), filtered by
//! business, tenant (paired store), event name, status and received time (`from` inclusive,
//! `until` exclusive), and searched ([`RunQuery::search`]). A page holds at most
//! [`MAX_PAGE_SIZE`] runs, and the answer counts every run that matches ([`RunPage::total`]).
//!
//! # Search
//!
//! A search term (trimmed) finds the runs whose **increment id** (the Magento document number,
//! `000000123`), **ledger document number** (the outcome's `provider_reference`), **ledger id**
//! or **idempotency key** equals it, ASCII letters compared without case; a term of digits also
//! finds the runs of that Magento entity id. A run's increment id is read from its event when it
//! is queued (`entity.increment_id`, else `payload.increment_id`), else from the first entity
//! snapshot that has one (the service's events carry no entity: it is fetched when processed).
//! Customers and products have no increment id: they are found by key or entity id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AttemptRecord, Run, RunId, RunStatus, RunStore};
use crate::http::audit::Snapshot;
use crate::{
    error::Result,
    http::audit::{ExchangeRecord, RecordingRef},
};

/// A business's ledger requests in a time span ([`RunStore::ledger_requests`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// Requests sent (answered or not), each once.
    pub requests: u64,
    /// Of which the ledger answered 429 (too many requests).
    pub rate_limited: u64,
}

impl RequestCount {
    /// Counts `exchanges` at or after `since` (the in-memory reference of the SQL stores' count).
    pub fn of<'a>(exchanges: impl IntoIterator<Item = &'a ExchangeRecord>, since: DateTime<Utc>) -> Self {
        exchanges.into_iter().filter(|e| e.at >= since).fold(Self::default(), |mut c, e| {
            c.requests += 1;
            c.rate_limited += u64::from(e.status == Some(429));
            c
        })
    }
}

/// How long the exchanges made outside any run ([`RunStore::record_exchanges`]) are kept: the
/// console's overview reads the last hour.
pub const LOOSE_EXCHANGES_KEPT: chrono::Duration = chrono::Duration::days(1);

/// Runs `f` (ledger requests a business makes outside any run, such as loading its reference
/// data) with a [`Recorder`](crate::http::audit::Recorder) of its own, then keeps what it
/// recorded with [`RunStore::record_exchanges`] under `scope`, so that the business's count of
/// ledger requests includes them. Inside a run's recording (the engine's), `f` is recorded with
/// the run instead. A store that cannot keep them only costs the count (a warning is logged).
pub async fn recorded_outside_runs<T>(
    store: &(impl RunStore + ?Sized),
    scope: &str,
    now: DateTime<Utc>,
    f: impl std::future::Future<Output = T>,
) -> T {
    if crate::http::audit::current().is_some() {
        return f.await;
    }
    let recorder = crate::http::audit::Recorder::new();
    let out = recorder.scope(f).await;
    if let (exchanges, Some(recording)) = recorder.recorded()
        && let Err(e) = store.record_exchanges(scope, &recording, &exchanges, now).await
    {
        tracing::warn!(business = %scope, error = %e, "cannot keep the ledger requests made outside a run; they are not counted");
    }
    out
}

/// The most runs one page of [`RunStore::query_runs`] holds.
pub const MAX_PAGE_SIZE: u32 = 200;

/// The page size when a query names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// What the runs table asks for: every field narrows the list, `None` does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// The business (scope).
    pub scope: Option<String>,
    /// The tenant (paired Magento store) that queued the runs.
    pub tenant_id: Option<String>,
    /// The event name (`invoice.created`).
    pub event: Option<String>,
    /// The run's status.
    pub status: Option<RunStatus>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// A search term (see the module's "Search").
    pub search: Option<String>,
    /// The Magento entity id.
    pub magento_entity_id: Option<u64>,
    /// Only runs with a smaller id (the runs before a given one).
    pub before_id: Option<RunId>,
    /// Runs skipped from the start of the list.
    pub offset: u64,
    /// The page size: 0 means [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`].
    pub limit: u32,
}

impl RunQuery {
    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }

    /// The trimmed search term, if any.
    pub fn search_term(&self) -> Option<&str> {
        self.search.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// The search term as an entity id, when it is all digits.
    pub fn search_entity_id(&self) -> Option<i64> {
        self.search_term().filter(|s| s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse().ok())
    }

    /// Whether `run`, whose search fields are `fields`, matches (the in-memory reference of what
    /// the SQL stores' `WHERE` does).
    pub fn matches(&self, run: &Run, fields: &SearchFields) -> bool {
        let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
        self.scope.as_deref().is_none_or(|s| run.scope == s)
            && self.tenant_id.as_deref().is_none_or(|t| run.tenant_id.as_deref() == Some(t))
            && self.event.as_deref().is_none_or(|e| run.event.as_deref() == Some(e))
            && self.status.is_none_or(|s| run.status == s)
            && self.from.is_none_or(|t| run.created_at >= t)
            && self.until.is_none_or(|t| run.created_at < t)
            && self.magento_entity_id.is_none_or(|e| run.magento_entity_id == Some(e))
            && self.before_id.is_none_or(|b| run.id < b)
            && self.search_term().is_none_or(|term| {
                eq(&fields.increment_id, term)
                    || eq(&fields.ledger_reference, term)
                    || eq(&fields.ledger_id, term)
                    || run.idempotency_key.eq_ignore_ascii_case(term)
                    || self
                        .search_entity_id()
                        .is_some_and(|n| run.magento_entity_id.and_then(|m| i64::try_from(m).ok()) == Some(n))
            })
    }
}

/// What a run is searched by besides its key and entity id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFields {
    /// The Magento increment id.
    pub increment_id: Option<String>,
    /// The ledger document number of the last outcome.
    pub ledger_reference: Option<String>,
    /// The ledger id of the last outcome.
    pub ledger_id: Option<String>,
}

/// One page of the runs table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPage {
    /// The runs of the page, newest first.
    pub runs: Vec<Run>,
    /// How many runs match the query in all.
    pub total: u64,
}

/// The increment id an event line names: `entity.increment_id`, else `payload.increment_id`
/// (a string or a number); `None` when the line is not a JSON object or names none.
///
/// Every event queued goes through here, so the line is read in place: only the two objects'
/// `increment_id` values are built, every other field is skipped unbuilt. A field named twice
/// counts as its last, as when the line is parsed into a [`Value`].
pub fn increment_id_of_raw(raw: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let line = serde::de::DeserializeSeed::deserialize(FieldsOf(&["entity", "payload"]), &mut de).ok()?;
    de.end().ok()?;
    let [entity, payload] = <[Option<Value>; 2]>::try_from(line?).ok()?;
    entity.as_ref().and_then(increment_id_of_value).or_else(|| payload.as_ref().and_then(increment_id_of_value))
}

/// The `increment_id` of a snapshot (or any JSON object).
pub fn increment_id_in(v: Option<&Value>) -> Option<String> {
    increment_id_of_value(v?.get("increment_id")?)
}

/// An increment id's value: a string (trimmed, not empty) or a number.
fn increment_id_of_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads one JSON value and keeps the named fields of it, when it is an object: `Some` with one
/// entry per name, `None` for any other value. A field named `"increment_id"` is kept as its
/// value; a field named otherwise is read with `FieldsOf(&["increment_id"])` and kept as that
/// `increment_id`'s value (`None` when it is not an object or has none). An entry is `None` when
/// its field is absent; a field named twice counts as its last. Everything else is skipped
/// without being built.
struct FieldsOf(&'static [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for FieldsOf {
    type Value = Option<Vec<Option<Value>>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldsOf {
    type Value = Option<Vec<Option<Value>>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut kept = vec![None; self.0.len()];
        while let Some(named) = map.next_key_seed(NameIn(self.0))? {
            match named {
                Some(i) if self.0[i] == "increment_id" => kept[i] = Some(map.next_value::<Value>()?),
                Some(i) => {
                    kept[i] = map.next_value_seed(FieldsOf(&["increment_id"]))?.and_then(|mut f| f.pop().flatten());
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Some(kept))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
}

/// Reads a field name for [`FieldsOf`]: where it is among the names kept, read in place.
struct NameIn(&'static [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for NameIn {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for NameIn {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.0.iter().position(|n| *n == name))
    }
}

// The snapshot's increment id is read here, with the event line's (`FieldsOf`).
impl Snapshot {
    /// The `increment_id` of the entity (as [`increment_id_in`] reads it), read in place.
    pub fn increment_id(&self) -> Option<String> {
        let mut de = serde_json::Deserializer::from_str(self.as_str());
        let fields = serde::de::DeserializeSeed::deserialize(FieldsOf(&["increment_id"]), &mut de).ok()??;
        increment_id_of_value(&fields.into_iter().next()??)
    }
}

/// One change between two snapshots of an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Where, as a JSON pointer (`/addresses/0/postcode`; `""` for the whole value).
    pub path: String,
    /// The value before (`None`: added).
    pub before: Option<Value>,
    /// The value after (`None`: removed).
    pub after: Option<Value>,
}

/// What changed from `before` to `after`, leaf by leaf: objects are compared key by key (in key
/// order), arrays element by element at the same index (an element added or removed at the end is
/// one change; one inserted in the middle shows as changes of every later index, which is what an
/// accountant reading a customer's addresses expects to see), and anything else by value. Equal
/// snapshots give no change.
pub fn snapshot_diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_at(String::new(), before, after, &mut out);
    out
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn diff_at(path: String, before: &Value, after: &Value, out: &mut Vec<Change>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{}", pointer_escape(k));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_at(p, x, y, out),
                    (Some(x), None) => out.push(Change { path: p, before: Some(x.clone()), after: None }),
                    (None, Some(y)) => out.push(Change { path: p, before: None, after: Some(y.clone()) }),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let p = format!("{path}/{i}");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => diff_at(p, x, y, out),
                    (Some(x), None) => out.push(Change { path: p, before: Some(x.clone()), after: None }),
                    (None, Some(y)) => out.push(Change { path: p, before: None, after: Some(y.clone()) }),
                    (None, None) => {}
                }
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(Change { path, before: Some(x.clone()), after: Some(y.clone()) }),
    }
}

/// The ledger record a run reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLink {
    /// The ledger's id of the record.
    pub id: String,
    /// The document number the ledger gave it, when it has one.
    pub number: Option<String>,
}

/// The diff of an upsert with the previous run of the same entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDiff {
    /// The previous run whose snapshot is compared with.
    pub previous_run: RunId,
    /// What changed since (empty: the same snapshot).
    pub changes: Vec<Change>,
}

/// Everything a run's page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    /// The run (its raw event and last outcome).
    pub run: Run,
    /// The event as JSON, when the raw line is JSON.
    pub event: Option<Value>,
    /// Every attempt, oldest first, with its exchanges.
    pub attempts: Vec<AttemptRecord>,
    /// The ledger record the run reached, when it synced.
    pub ledger: Option<LedgerLink>,
    /// For an upsert (`customer.upserted`, `product.upserted`): the changes since the previous
    /// run of the same entity (same business, tenant, event and entity id) that kept a snapshot;
    /// `None` for documents, for the first run of an entity, and while no attempt kept one.
    pub diff: Option<SnapshotDiff>,
}

/// True for the events whose runs are compared with the previous run's snapshot.
pub fn is_upsert(event: Option<&str>) -> bool {
    matches!(event, Some("customer.upserted" | "product.upserted"))
}

/// The latest snapshot of a run's attempts.
pub fn last_snapshot(attempts: &[AttemptRecord]) -> Option<&Snapshot> {
    attempts.iter().rev().find_map(|a| a.snapshot.as_ref())
}

/// How many earlier runs of an entity [`run_detail`] looks through for a snapshot.
const PREVIOUS_RUNS_LOOKED_AT: u32 = 20;

/// A run's page: the run, its event, its attempts, its ledger record and, for an upsert, the
/// diff with the previous run of the same entity. `None` when there is no such run.
///
/// # Errors
/// Store failures ([`crate::Error::Unsupported`] from a store that cannot query its runs).
pub async fn run_detail(store: &(impl RunStore + ?Sized), id: RunId) -> Result<Option<RunDetail>> {
    let Some(run) = store.get(id).await? else { return Ok(None) };
    let attempts = store.attempts(id).await?;
    let event = serde_json::from_str::<Value>(&run.raw).ok();
    let ledger = run
        .outcome
        .as_ref()
        .and_then(|o| o.provider_entity_id.clone().map(|id| LedgerLink { id, number: o.provider_reference.clone() }));
    let mut diff = None;
    if let (true, Some(current), Some(entity)) =
        (is_upsert(run.event.as_deref()), last_snapshot(&attempts).map(Snapshot::to_value), run.magento_entity_id)
    {
        let earlier = store
            .query_runs(&RunQuery {
                scope: Some(run.scope.clone()),
                event: run.event.clone(),
                magento_entity_id: Some(entity),
                before_id: Some(run.id),
                limit: PREVIOUS_RUNS_LOOKED_AT,
                ..RunQuery::default()
            })
            .await?;
        for prev in earlier.runs.iter().filter(|p| p.tenant_id == run.tenant_id) {
            let prev_attempts = store.attempts(prev.id).await?;
            if let Some(before) = last_snapshot(&prev_attempts) {
                diff =
                    Some(SnapshotDiff { previous_run: prev.id, changes: snapshot_diff(&before.to_value(), &current) });
                break;
            }
        }
    }
    Ok(Some(RunDetail { run, event, attempts, ledger, diff }))
}

/// Where an attempt's exchanges are stored: its [`AttemptRecord::recording`] with `count` set to
/// the exchanges it carries, or a recording of its own when it names none; `None` without an
/// exchange. Every store keeps exchanges under this (see [`crate::http::audit`]'s "Recordings").
pub(crate) fn recording_of(a: &AttemptRecord) -> Option<RecordingRef> {
    if a.exchanges.is_empty() {
        return None;
    }
    let count = u64::try_from(a.exchanges.len()).unwrap_or(u64::MAX);
    Some(match &a.recording {
        Some(r) => RecordingRef { id: r.id.clone(), first: r.first, count },
        None => RecordingRef { id: uuid::Uuid::new_v4().simple().to_string(), first: 0, count },
    })
}

/// The exchanges of `recording` with their numbers in it (`first`, `first + 1`, …).
pub(crate) fn numbered<'a>(
    recording: &RecordingRef,
    exchanges: &'a [ExchangeRecord],
) -> impl Iterator<Item = (i64, &'a ExchangeRecord)> {
    let first = recording.first;
    exchanges.iter().enumerate().map(move |(i, e)| {
        let n = first.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
        (i64::try_from(n).unwrap_or(i64::MAX), e)
    })
}

/// The exchanges one `INSERT` of the SQLite store writes at most (its bound parameters: 10 a
/// row). PostgreSQL binds them as arrays, one statement however many.
#[cfg(feature = "sqlite")]
pub(crate) const EXCHANGES_PER_INSERT: usize = 500;

/// Reads a stored `snapshot` column (`None` for NULL or text that is not one JSON value).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn read_snapshot(text: Option<String>) -> Option<Snapshot> {
    text.and_then(Snapshot::from_stored)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_snapshots_have_no_change() {
        let v = json!({"email": "a@x", "addresses": [{"city": "Leeds"}], "n": 1});
        assert!(snapshot_diff(&v, &v.clone()).is_empty());
    }

    #[test]
    fn changes_are_listed_leaf_by_leaf_with_pointers() {
        let before = json!({"email": "a@x", "name/first": "Jo", "addresses": [{"city": "Leeds", "line": "1 St"}],
            "gone": true, "group": {"id": 1}});
        let after = json!({"email": "b@x", "name/first": "Jo", "addresses": [{"city": "York", "line": "1 St"}, {"city": "Hull"}],
            "new": null, "group": 5});
        let changes = snapshot_diff(&before, &after);
        let expected = vec![
            Change { path: "/addresses/0/city".into(), before: Some(json!("Leeds")), after: Some(json!("York")) },
            Change { path: "/addresses/1".into(), before: None, after: Some(json!({"city": "Hull"})) },
            Change { path: "/email".into(), before: Some(json!("a@x")), after: Some(json!("b@x")) },
            Change { path: "/gone".into(), before: Some(json!(true)), after: None },
            Change { path: "/group".into(), before: Some(json!({"id": 1})), after: Some(json!(5)) },
            Change { path: "/new".into(), before: None, after: Some(json!(null)) },
        ];
        assert_eq!(changes, expected);
        // The escaped key is addressed by its pointer.
        let renamed = snapshot_diff(&json!({"a/b~c": 1}), &json!({"a/b~c": 2}));
        assert_eq!(renamed[0].path, "/a~1b~0c");
        assert_eq!(json!({"a/b~c": 2}).pointer(&renamed[0].path), Some(&json!(2)));
    }

    #[test]
    fn a_removed_array_tail_and_a_whole_value_change() {
        let changes = snapshot_diff(&json!([1, 2, 3]), &json!([1]));
        assert_eq!(changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["/1", "/2"]);
        assert!(changes.iter().all(|c| c.after.is_none()));
        assert_eq!(
            snapshot_diff(&json!("x"), &json!(1)),
            vec![Change { path: String::new(), before: Some(json!("x")), after: Some(json!(1)) }]
        );
    }

    #[test]
    fn increment_ids_are_read_from_the_entity_then_the_payload() {
        assert_eq!(
            increment_id_of_raw(r#"{"entity":{"increment_id":"000000123"},"payload":{"increment_id":"x"}}"#).as_deref(),
            Some("000000123")
        );
        assert_eq!(increment_id_of_raw(r#"{"payload":{"increment_id":42}}"#).as_deref(), Some("42"));
        assert_eq!(increment_id_of_raw(r#"{"payload":{"increment_id":"  "}}"#), None);
        assert_eq!(increment_id_of_raw("not json"), None);
        assert_eq!(increment_id_of_raw("[1]"), None);
    }

    /// The reading `increment_id_of_raw` replaced: the whole line parsed into a [`Value`].
    fn increment_id_as_parsed(raw: &str) -> Option<String> {
        let v: Value = serde_json::from_str(raw).ok()?;
        increment_id_in(v.get("entity")).or_else(|| increment_id_in(v.get("payload")))
    }

    #[test]
    fn increment_ids_read_in_place_agree_with_the_parsed_line() {
        let lines = [
            r#"{"entity":{"increment_id":"000000123"},"payload":{"increment_id":"x"}}"#,
            r#"{"entity":{"lines":[{"increment_id":"nested"}],"increment_id":" 7 "},"x":[1,{"a":null}]}"#,
            r#"{"entity":"text","payload":{"increment_id":9}}"#,
            r#"{"entity":null,"payload":{"increment_id":1.50}}"#,
            r#"{"entity":{"increment_id":"1"},"entity":{"other":true},"payload":{"increment_id":"2"}}"#,
            r#"{"entity":{"increment_id":"1","increment_id":"3"}}"#,
            r#"{"entity":{"increment_id":"escaped"}}"#,
            r#"{"entity":{"increment_id":["a"]},"payload":{"increment_id":false}}"#,
            r#"{"entity":{"increment_id":"1"}} trailing"#,
            r#"{"entity":{"increment_id":"1"}"#,
            r#"{"payload":[{"increment_id":"in a list"}]}"#,
            r#"{}"#,
            "42",
            "null",
        ];
        for raw in lines {
            assert_eq!(increment_id_of_raw(raw), increment_id_as_parsed(raw), "{raw}");
        }
        assert_eq!(increment_id_of_raw(lines[4]).as_deref(), Some("2"), "the last `entity` counts");
        assert_eq!(increment_id_of_raw(lines[5]).as_deref(), Some("3"), "the last `increment_id` counts");
        assert_eq!(increment_id_of_raw(lines[6]).as_deref(), Some("escaped"));
        assert_eq!(increment_id_of_raw(lines[3]).as_deref(), Some("1.50"), "a number as written");
    }

    proptest::proptest! {
        /// Any line of an entity and a payload, each any JSON value (an object with or without an
        /// `increment_id` of any kind, or something else): read in place as parsed whole.
        #[test]
        fn increment_ids_of_any_line_agree_with_the_parsed_line(
            entity in increment_holder(),
            payload in increment_holder(),
            other in proptest::option::of(json_leaf()),
        ) {
            let mut line = serde_json::Map::new();
            if let Some(v) = other {
                line.insert("other".into(), v);
            }
            for (name, v) in [("entity", entity), ("payload", payload)] {
                if let Some(v) = v {
                    line.insert(name.into(), v);
                }
            }
            let raw = Value::Object(line).to_string();
            proptest::prop_assert_eq!(increment_id_of_raw(&raw), increment_id_as_parsed(&raw), "{}", raw);
        }

        /// A snapshot's increment id, read in place, is the one its parsed value holds.
        #[test]
        fn a_snapshot_s_increment_id_is_its_value_s(entity in increment_holder()) {
            let value = entity.unwrap_or(Value::Null);
            let snapshot = Snapshot::from(value.clone());
            proptest::prop_assert_eq!(snapshot.increment_id(), increment_id_in(Some(&value)));
        }
    }

    fn json_leaf() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ a-z0-9]{0,6}".prop_map(Value::String),
        ]
    }

    /// An `entity` or `payload` field: absent, a leaf, a list, or an object with other fields and
    /// perhaps an `increment_id` (a leaf, or a list of one).
    fn increment_holder() -> impl proptest::strategy::Strategy<Value = Option<Value>> {
        use proptest::prelude::*;
        let id = prop_oneof![json_leaf(), json_leaf().prop_map(|v| Value::Array(vec![v]))];
        let object = (proptest::option::of(id), proptest::collection::btree_map("[a-z_]{1,12}", json_leaf(), 0..4))
            .prop_map(|(id, fields)| {
                let mut map: serde_json::Map<String, Value> = fields.into_iter().collect();
                if let Some(id) = id {
                    map.insert("increment_id".into(), id);
                }
                Value::Object(map)
            });
        proptest::option::of(prop_oneof![
            json_leaf(),
            proptest::collection::vec(json_leaf(), 0..3).prop_map(Value::Array),
            object
        ])
    }

    #[test]
    fn a_snapshot_is_the_entity_s_text_and_redacts_only_secrets() {
        #[derive(Serialize)]
        struct Entity<'a> {
            increment_id: &'a str,
            email: &'a str,
            password: Option<&'a str>,
        }
        let plain = Entity { increment_id: "000000081", email: "a@x", password: None };
        let snapshot = Snapshot::of(&plain).unwrap();
        assert_eq!(snapshot.as_str(), r#"{"increment_id":"000000081","email":"a@x","password":null}"#, "as written");
        assert_eq!(snapshot.increment_id().as_deref(), Some("000000081"));
        let secret = Snapshot::of(&Entity { password: Some("hunter2"), ..plain }).unwrap();
        assert!(!secret.as_str().contains("hunter2"), "{}", secret.as_str());
        assert_eq!(secret.to_value()["password"], crate::http::audit::REDACTED);
        assert_eq!(secret.to_value()["email"], "a@x");
        assert_eq!(Snapshot::from(json!({"token": "t", "n": 1})).to_value(), json!({"token": "[redacted]", "n": 1}));
    }

    #[test]
    fn a_snapshot_reads_back_from_its_text_and_serialises_as_its_value() {
        let snapshot = Snapshot::from(json!({"increment_id": "7", "lines": [{"qty": "2"}]}));
        assert_eq!(Snapshot::from_stored(snapshot.as_str().to_owned()), Some(snapshot.clone()));
        for broken in ["", "{", r#"{"a":1} {"b":2}"#, "not json"] {
            assert_eq!(Snapshot::from_stored(broken.to_owned()), None, "{broken:?}");
        }
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json, json!({"increment_id": "7", "lines": [{"qty": "2"}]}), "a value, not a string");
        let back: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back.to_value(), snapshot.to_value());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(RunQuery::default().page_size(), DEFAULT_PAGE_SIZE);
        assert_eq!(RunQuery { limit: 10_000, ..RunQuery::default() }.page_size(), MAX_PAGE_SIZE);
        assert_eq!(RunQuery { limit: 7, ..RunQuery::default() }.page_size(), 7);
        assert_eq!(RunQuery { search: Some(" 0012 ".into()), ..RunQuery::default() }.search_entity_id(), Some(12));
        assert_eq!(RunQuery { search: Some("SI-1".into()), ..RunQuery::default() }.search_entity_id(), None);
    }
}
