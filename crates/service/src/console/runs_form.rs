//! What the console's sync-runs pages read and do, independent of how they are rendered: the
//! runs table's form (query string) read into a [`RunQuery`] with every bad field named, the
//! paging links, and the retry actions with their operator-facing results.
//!
//! The table's form fields (`GET /console/runs?…`, [`super::runs`]):
//!
//! | field | meaning |
//! |---|---|
//! | `store` | the tenant (paired Magento store) |
//! | `event` | one of the five event names |
//! | `status` | `queued`, `running`, `synced`, `skipped`, `dead_lettered` |
//! | `from`, `to` | received on or after `from`, on or before `to` (dates `YYYY-MM-DD`, UTC days) |
//! | `q` | an increment id, ledger document number or id, idempotency key or entity id ([`byte8_ledger_core::store::audit`]'s "Search") |
//! | `page` | 1-based page number ([`PAGE_SIZE`] runs a page) |

use byte8_ledger_core::{
    canonical::EventKind,
    error::FieldError,
    store::{
        RunStatus,
        audit::{RunPage, RunQuery},
    },
};
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Deserialize;

/// Runs on one page of the table.
pub(crate) const PAGE_SIZE: u32 = 50;

/// The longest search term read (a longer one is refused, naming `q`).
const MAX_SEARCH: usize = 200;

/// The runs table's form, as the query string gives it (every field optional; blank is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct RunsForm {
    #[serde(default)]
    pub(crate) store: Option<String>,
    #[serde(default)]
    pub(crate) event: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) from: Option<String>,
    #[serde(default)]
    pub(crate) to: Option<String>,
    #[serde(default)]
    pub(crate) q: Option<String>,
    #[serde(default)]
    pub(crate) page: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn day(field: &str, text: &str) -> Result<NaiveDate, FieldError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| FieldError::new(field, format!("`{text}` is not a date (YYYY-MM-DD)")))
}

fn start_of(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t.and_utc())
}

impl RunsForm {
    /// The 1-based page asked for (1 when absent or unreadable: a bad page number is not worth
    /// an error).
    pub(crate) fn page(&self) -> u64 {
        given(&self.page).and_then(|p| p.parse::<u64>().ok()).filter(|p| *p > 0).unwrap_or(1)
    }

    /// The store query of this form, or every field that breaks a rule.
    pub(crate) fn to_query(&self) -> Result<RunQuery, Vec<FieldError>> {
        let mut errors = Vec::new();
        let event = given(&self.event).map(str::to_owned);
        if let Some(e) = &event
            && !EventKind::ALL.iter().any(|k| k.as_str() == e)
        {
            errors.push(FieldError::new("event", format!("`{e}` is not an event name")));
        }
        let status = match given(&self.status) {
            None => None,
            Some(s) => match RunStatus::parse(s) {
                Some(s) => Some(s),
                None => {
                    errors.push(FieldError::new("status", format!("`{s}` is not a run status")));
                    None
                }
            },
        };
        let from = given(&self.from).map(|t| day("from", t)).transpose().map_err(|e| errors.push(e)).ok().flatten();
        let to = given(&self.to).map(|t| day("to", t)).transpose().map_err(|e| errors.push(e)).ok().flatten();
        if let (Some(f), Some(t)) = (from, to)
            && t < f
        {
            errors.push(FieldError::new("to", "must not be before `from`"));
        }
        let search = given(&self.q).map(str::to_owned);
        if search.as_ref().is_some_and(|q| q.chars().count() > MAX_SEARCH) {
            errors.push(FieldError::new("q", format!("at most {MAX_SEARCH} characters")));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RunQuery {
            tenant_id: given(&self.store).map(str::to_owned),
            event,
            status,
            from: from.map(start_of),
            // `to` is a whole day: received before the next one.
            until: to.and_then(|t| t.checked_add_days(Days::new(1))).map(start_of),
            search,
            offset: (self.page() - 1).saturating_mul(u64::from(PAGE_SIZE)),
            limit: PAGE_SIZE,
            ..RunQuery::default()
        })
    }

    /// The query string of this form at `page` (what the paging links carry), without blank
    /// fields.
    pub(crate) fn query_string(&self, page: u64) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("store", &self.store),
            ("event", &self.event),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
        ] {
            if let Some(v) = given(v) {
                q.append_pair(k, v);
            }
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        q.finish()
    }
}

/// Where a page of the table stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paging {
    /// This page (1-based).
    pub(crate) page: u64,
    /// How many pages there are (at least 1).
    pub(crate) pages: u64,
    /// Runs matching in all.
    pub(crate) total: u64,
    /// The 1-based position of the first run on this page (0 when none).
    pub(crate) first: u64,
    /// The position of the last run on this page.
    pub(crate) last: u64,
}

impl Paging {
    /// The paging of `page` of `result`.
    pub(crate) fn of(page: u64, result: &RunPage) -> Self {
        let size = u64::from(PAGE_SIZE);
        let pages = result.total.div_ceil(size).max(1);
        let shown = u64::try_from(result.runs.len()).unwrap_or(0);
        let first = if shown == 0 { 0 } else { (page - 1) * size + 1 };
        Self { page, pages, total: result.total, first, last: if shown == 0 { 0 } else { first + shown - 1 } }
    }

    /// The previous page, if any.
    pub(crate) fn previous(&self) -> Option<u64> {
        (self.page > 1).then(|| (self.page - 1).min(self.pages))
    }

    /// The next page, if any.
    pub(crate) fn next(&self) -> Option<u64> {
        (self.page < self.pages).then_some(self.page + 1)
    }
}

/// Whether the console offers "Retry" for a run: dead-lettered, or queued after a failed attempt
/// (waiting for its retry time).
pub(crate) fn retryable(status: RunStatus, has_outcome: bool) -> bool {
    status == RunStatus::DeadLettered || (status == RunStatus::Queued && has_outcome)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn form(pairs: &[(&str, &str)]) -> RunsForm {
        let text = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        parse_query(&text)
    }

    /// What axum's `Query` does: the query string into the form.
    fn parse_query(text: &str) -> RunsForm {
        let mut f = RunsForm::default();
        for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
            let v = Some(v.into_owned());
            match &*k {
                "store" => f.store = v,
                "event" => f.event = v,
                "status" => f.status = v,
                "from" => f.from = v,
                "to" => f.to = v,
                "q" => f.q = v,
                "page" => f.page = v,
                _ => {}
            }
        }
        f
    }

    #[test]
    fn a_full_form_becomes_the_stores_query() {
        let q = form(&[
            ("store", "shop-1"),
            ("event", "invoice.created"),
            ("status", "dead_lettered"),
            ("from", "2026-11-01"),
            ("to", "2026-11-30"),
            ("q", " 000000123 "),
            ("page", "3"),
        ])
        .to_query()
        .unwrap();
        assert_eq!(q.tenant_id.as_deref(), Some("shop-1"));
        assert_eq!(q.event.as_deref(), Some("invoice.created"));
        assert_eq!(q.status, Some(RunStatus::DeadLettered));
        assert_eq!(q.from, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single());
        assert_eq!(q.until, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single(), "the whole of the 30th");
        assert_eq!(q.search_term(), Some("000000123"));
        assert_eq!((q.offset, q.limit), (100, PAGE_SIZE));
        assert_eq!(q.scope, None, "operators see every business");
    }

    #[test]
    fn blank_fields_do_not_filter_and_bad_ones_are_named() {
        let q = form(&[("store", " "), ("event", ""), ("page", "x")]).to_query().unwrap();
        assert_eq!(q, RunQuery { limit: PAGE_SIZE, ..RunQuery::default() });
        let errors =
            form(&[("event", "order.placed"), ("status", "lost"), ("from", "1/11/2026"), ("to", "2026-02-30")])
                .to_query()
                .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(fields, ["event", "status", "from", "to"]);
        let errors = form(&[("from", "2026-11-02"), ("to", "2026-11-01")]).to_query().unwrap_err();
        assert_eq!(errors[0].path, "to");
        let errors = form(&[("q", &"x".repeat(MAX_SEARCH + 1))]).to_query().unwrap_err();
        assert_eq!(errors[0].path, "q");
    }

    #[test]
    fn paging_links_keep_the_filters() {
        let f = form(&[("status", "synced"), ("q", "SI 1&2"), ("store", "")]);
        assert_eq!(f.query_string(1), "status=synced&q=SI+1%262");
        assert_eq!(f.query_string(2), "status=synced&q=SI+1%262&page=2");
    }

    #[test]
    fn paging_counts_pages_and_positions() {
        let page = |total, shown| RunPage { runs: vec![dummy(); shown], total };
        let p = Paging::of(1, &page(0, 0));
        assert_eq!((p.pages, p.first, p.last, p.previous(), p.next()), (1, 0, 0, None, None));
        let p = Paging::of(2, &page(120, 50));
        assert_eq!((p.pages, p.first, p.last, p.previous(), p.next()), (3, 51, 100, Some(1), Some(3)));
        let p = Paging::of(3, &page(120, 20));
        assert_eq!((p.first, p.last, p.next()), (101, 120, None));
        let p = Paging::of(9, &page(120, 0));
        assert_eq!((p.first, p.previous()), (0, Some(3)), "past the end: back to the last page");
    }

    #[test]
    fn retry_is_offered_for_dead_letters_and_failed_waiting_runs() {
        assert!(retryable(RunStatus::DeadLettered, true));
        assert!(retryable(RunStatus::Queued, true));
        assert!(!retryable(RunStatus::Queued, false), "a fresh run is already due");
        assert!(!retryable(RunStatus::Synced, true));
        assert!(!retryable(RunStatus::Running, true));
    }

    fn dummy() -> byte8_ledger_core::store::Run {
        byte8_ledger_core::store::Run {
            id: 1,
            scope: "b".into(),
            tenant_id: None,
            claim: 0,
            idempotency_key: "k".into(),
            event: None,
            magento_entity_id: None,
            raw: String::new(),
            policy: None,
            status: RunStatus::Queued,
            attempts: 0,
            attempts_before_retry: 0,
            next_attempt_at: None,
            outcome: None,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }
}

/// What the console does for the sync-runs pages, given the service's shared state (the routes
/// add the session check, the CSRF check and the layout).
pub(crate) mod actions {
    use crate::store::BindingInfo;
    use byte8_ledger_core::{
        Result,
        error::FieldError,
        store::{
            Run, RunId, RunStatus,
            audit::{RunDetail, RunPage, RunQuery, run_detail},
        },
    };

    use super::RunsForm;
    use crate::Shared;

    /// The runs table: the stores for the filter, and the page (or the form's errors).
    pub(crate) async fn list(
        shared: &Shared,
        form: &RunsForm,
    ) -> Result<(Vec<BindingInfo>, std::result::Result<RunPage, Vec<FieldError>>)> {
        let stores = shared.store.bindings().await?;
        let page = match form.to_query() {
            Ok(q) => Ok(shared.store.query_runs(&q).await?),
            Err(errors) => Err(errors),
        };
        Ok((stores, page))
    }

    /// A run's page, `None` when there is no such run.
    pub(crate) async fn show(shared: &Shared, id: RunId) -> Result<Option<RunDetail>> {
        run_detail(shared.store.as_ref(), id).await
    }

    /// "Retry": the run back in line, due now (false: it is not dead-lettered nor waiting after
    /// a failure), and its tenant's workers told at once ([`Shared::announce`]).
    pub(crate) async fn retry(shared: &Shared, run: &Run) -> Result<bool> {
        if !shared.store.requeue_run(run.id, shared.clock.now()).await? {
            return Ok(false);
        }
        if let Some(tenant) = &run.tenant_id
            && let Some(b) = shared.store.binding(tenant).await?
            && b.is_active()
        {
            shared.announce(b.info()).await;
        }
        Ok(true)
    }

    /// The `store` value of "Retry all dead letters" that means every store of every business.
    pub(crate) const EVERY_STORE: &str = "*";

    /// The dead letters of `store` (a tenant id): its binding, and how many there are.
    pub(crate) async fn dead_letters_of(
        shared: &Shared,
        store: &str,
    ) -> Result<std::result::Result<(BindingInfo, u64), FieldError>> {
        let Some(b) = shared.store.bindings().await?.into_iter().find(|b| b.tenant_id == store) else {
            return Ok(Err(FieldError::new("store", format!("`{store}` is not a paired store"))));
        };
        let q = RunQuery {
            scope: Some(b.scope.clone()),
            tenant_id: Some(b.tenant_id.clone()),
            status: Some(byte8_ledger_core::store::RunStatus::DeadLettered),
            limit: 1,
            ..RunQuery::default()
        };
        let n = shared.store.query_runs(&q).await?.total;
        Ok(Ok((b, n)))
    }

    /// Every business the console knows (connected or paired), by id.
    async fn businesses(shared: &Shared) -> Result<Vec<String>> {
        let mut scopes: std::collections::BTreeSet<String> =
            shared.store.connections().await?.into_iter().map(|c| c.scope).collect();
        scopes.extend(shared.store.bindings().await?.into_iter().map(|b| b.scope));
        Ok(scopes.into_iter().collect())
    }

    /// The dead letters of every business: (business, how many), the businesses with none left
    /// out.
    pub(crate) async fn dead_letters_everywhere(shared: &Shared) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for scope in businesses(shared).await? {
            let n = shared.store.counts(&scope).await?.get(&RunStatus::DeadLettered).copied().unwrap_or(0);
            if n > 0 {
                out.push((scope, n));
            }
        }
        Ok(out)
    }

    /// "Retry all dead letters" of `store` ([`EVERY_STORE`]: of every business), confirmed: how
    /// many went back in line.
    pub(crate) async fn retry_all(
        shared: &Shared,
        store: &str,
        confirmed: bool,
    ) -> Result<std::result::Result<u64, Vec<FieldError>>> {
        let mut errors = Vec::new();
        if !confirmed {
            errors.push(FieldError::new("confirm", "tick the box to confirm"));
        }
        if store.trim() == EVERY_STORE {
            if !errors.is_empty() {
                return Ok(Err(errors));
            }
            let now = shared.clock.now();
            let mut n = 0;
            let mut requeued_in = Vec::new();
            for scope in businesses(shared).await? {
                let requeued = shared.store.requeue_dead_letters(&scope, None, now).await?;
                if requeued > 0 {
                    requeued_in.push(scope);
                }
                n += requeued;
            }
            shared.announce_businesses(&requeued_in).await?;
            tracing::info!(count = n, "console: the dead letters of every business requeued by an operator");
            return Ok(Ok(n));
        }
        let binding = if store.trim().is_empty() {
            errors.push(FieldError::new("store", "required: choose a store"));
            None
        } else {
            match dead_letters_of(shared, store.trim()).await? {
                Ok((b, _)) => Some(b),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        };
        let Some(b) = binding.filter(|_| errors.is_empty()) else { return Ok(Err(errors)) };
        let n = shared.store.requeue_dead_letters(&b.scope, Some(&b.tenant_id), shared.clock.now()).await?;
        if n > 0 && b.is_active() {
            shared.announce(b.clone()).await;
        }
        tracing::info!(tenant = %b.tenant_id, count = n, "console: dead letters requeued by an operator");
        Ok(Ok(n))
    }
}
