//! The conformance of the sync runs' audit ([`crate::store::audit`]): attempts keep their
//! exchanges and snapshot, the runs table filters, searches and pages the same in every store, a
//! run's page diffs an upsert with the previous run, and runs are retried one by one or all the
//! dead letters of a tenant at once.

use chrono::Duration;
use serde_json::json;

use super::{new_run, result, t0};
use crate::{
    http::audit::ExchangeRecord,
    store::{
        Dedupe, NewRun, RunId, RunResult, RunStatus, Store,
        audit::{Change, RunQuery, run_detail},
    },
};

/// `key` queued in `scope` by `tenant` at `t0 + hours`, with `raw`.
fn queued(scope: &str, tenant: Option<&str>, key: &str, raw: &str, hours: i64) -> NewRun {
    NewRun {
        tenant_id: tenant.map(str::to_owned),
        received_at: t0() + Duration::hours(hours),
        ..new_run(scope, key, raw)
    }
}

/// Claims `id` and finishes it with `status`, the ledger's `id`/`number` (when synced) and
/// `snapshot` on its attempt.
async fn finish(
    store: &dyn Store,
    id: RunId,
    key: &str,
    status: RunStatus,
    ledger: Option<(&str, &str)>,
    snapshot: Option<serde_json::Value>,
) {
    let run = store.claim_run(id, t0(), t0() + Duration::days(400)).await.expect("claim").expect("claimable");
    let mut r: RunResult = result(key, status, run.attempts + 1, None);
    if let Some((lid, number)) = ledger {
        r.outcome.provider_entity_id = Some(lid.into());
        r.outcome.provider_reference = Some(number.into());
        r.attempt.ledger_id = Some(lid.into());
    }
    r.attempt.snapshot = snapshot.map(crate::http::audit::Snapshot::from);
    store.finish(id, run.claim, r).await.expect("finish");
}

fn ids(page: &crate::store::audit::RunPage) -> Vec<RunId> {
    page.runs.iter().map(|r| r.id).collect()
}

/// An attempt's exchanges and entity snapshot are stored and read back as they were recorded.
pub async fn attempts_keep_their_exchanges_and_snapshot(store: &dyn Store, scope: &str) {
    let key = "invoice.created:81";
    let id = store.enqueue(new_run(scope, key, "{}"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
    let mut r = result(key, RunStatus::Synced, 1, None);
    r.attempt.exchanges = vec![
        ExchangeRecord {
            at: t0(),
            method: "POST".into(),
            url: "/v3.1/sales_invoices?x=1".into(),
            status: Some(201),
            request_body: Some(r#"{"sales_invoice":{"reference":"000000081"}}"#.into()),
            response_body: Some(r#"{"id":"L1","displayed_as":"SI-81"}"#.into()),
            error: None,
        },
        ExchangeRecord {
            at: t0() + Duration::seconds(1),
            method: "GET".into(),
            url: "/v3.1/contacts".into(),
            status: None,
            request_body: None,
            response_body: None,
            error: Some("timed out".into()),
        },
    ];
    r.attempt.snapshot = Some(json!({"increment_id": "000000081", "lines": [{"sku": "A", "qty": "2"}]}).into());
    let mut expected = r.attempt.clone();
    store.finish(id, run.claim, r).await.expect("finish");
    let attempts = store.attempts(id).await.expect("attempts");
    // Recorded without a recording: the store gave the attempt one of its own.
    let given = attempts.first().and_then(|a| a.recording.clone()).expect("a recording of its own");
    assert_eq!((given.first, given.count), (0, 2), "attempts_keep_their_exchanges_and_snapshot: its two exchanges");
    expected.recording = Some(given);
    assert_eq!(attempts, vec![expected], "attempts_keep_their_exchanges_and_snapshot: read back as recorded");
}

fn exchange(at_secs: i64, method: &str, url: &str, status: u16) -> ExchangeRecord {
    ExchangeRecord {
        at: t0() + Duration::seconds(at_secs),
        method: method.into(),
        url: url.into(),
        status: Some(status),
        request_body: Some(format!("{{\"at\":{at_secs}}}")),
        response_body: Some("{}".into()),
        error: None,
    }
}

/// The runs of one batch (Xero: one request carries up to 50 invoices) share their batch's
/// recording: each run's page shows the exchanges it saw, while the store keeps and counts each
/// request once ([`crate::store::RunStore::ledger_requests`]: requests since a time, and the
/// 429s among them, per business).
pub async fn a_batchs_exchanges_are_kept_and_counted_once(store: &dyn Store, scope: &str) {
    let batch = [
        exchange(10, "GET", "/api.xro/2.0/Contacts?where=x", 200),
        exchange(11, "POST", "/api.xro/2.0/Invoices", 429),
        exchange(20, "POST", "/api.xro/2.0/Invoices", 200),
    ];
    let recording = crate::http::audit::RecordingRef { id: format!("{scope}-batch"), first: 0, count: 3 };
    let mut ids = Vec::new();
    for i in 0..4 {
        let key = format!("invoice.created:{i}");
        let id = store.enqueue(new_run(scope, &key, "{}"), Dedupe::Permanent).await.expect("enqueue").run_id();
        let run = store.claim_run(id, t0(), t0() + Duration::days(400)).await.expect("claim").expect("claimable");
        let mut r = result(&key, RunStatus::Synced, 1, None);
        // The first run was decided after the batch's first request (its contact was known): it
        // saw one exchange; the others saw the whole batch.
        let seen = if i == 0 { 1 } else { 3 };
        r.attempt.exchanges = batch[..seen].to_vec();
        r.attempt.recording = Some(crate::http::audit::RecordingRef { count: seen as u64, ..recording.clone() });
        store.finish(id, run.claim, r).await.expect("finish");
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate() {
        let attempts = store.attempts(*id).await.expect("attempts");
        let expected = if i == 0 { &batch[..1] } else { &batch[..] };
        assert_eq!(attempts[0].exchanges, expected, "a_batchs_exchanges: run {i} shows what it saw");
        assert_eq!(attempts[0].recording.as_ref().map(|r| r.id.as_str()), Some(recording.id.as_str()));
    }
    let counted = store.ledger_requests(scope, t0()).await.expect("count");
    assert_eq!(
        counted,
        crate::store::audit::RequestCount { requests: 3, rate_limited: 1 },
        "a_batchs_exchanges: three requests, one refused, however many runs carried them"
    );
    let later = store.ledger_requests(scope, t0() + Duration::seconds(15)).await.expect("count");
    assert_eq!(later, crate::store::audit::RequestCount { requests: 1, rate_limited: 0 }, "counted since a time");
    // A single run's attempt (its own recording) adds its requests; another business's do not.
    let key = "invoice.created:9";
    let id = store.enqueue(new_run(scope, key, "{}"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let run = store.claim_run(id, t0(), t0() + Duration::days(400)).await.expect("claim").expect("claimable");
    let mut r = result(key, RunStatus::Synced, 1, None);
    r.attempt.exchanges = vec![exchange(30, "POST", "/api.xro/2.0/Invoices", 200), exchange(31, "GET", "/x", 429)];
    store.finish(id, run.claim, r).await.expect("finish");
    let other = format!("{scope}-other");
    let oid = store.enqueue(new_run(&other, key, "{}"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let orun = store.claim_run(oid, t0(), t0() + Duration::days(400)).await.expect("claim").expect("claimable");
    let mut r = result(key, RunStatus::Synced, 1, None);
    r.attempt.exchanges = vec![exchange(30, "POST", "/api.xro/2.0/Invoices", 200)];
    store.finish(oid, orun.claim, r).await.expect("finish");
    assert_eq!(
        store.ledger_requests(scope, t0()).await.expect("count"),
        crate::store::audit::RequestCount { requests: 5, rate_limited: 2 },
        "a_batchs_exchanges: the single run's two requests are added"
    );
    assert_eq!(store.ledger_requests(&other, t0()).await.expect("count").requests, 1, "per business");
}

/// A finish refused for its claim writes nothing at all: not the run (its status, outcome,
/// ledger ids, increment id), not an attempt, not one of the exchanges it carried (neither under
/// a recording of its own nor under a batch's recording, whose numbers the current claim's finish
/// then fills with its own exchanges).
pub async fn a_refused_finish_writes_nothing(store: &dyn Store, scope: &str) {
    let key = "invoice.created:91";
    let id = store.enqueue(new_run(scope, key, "{}"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let slow = store.claim_run(id, t0(), t0() + Duration::seconds(30)).await.expect("claim").expect("claimable");
    let fast = store
        .claim_run(id, t0() + Duration::seconds(31), t0() + Duration::seconds(90))
        .await
        .expect("claim")
        .expect("a_refused_finish_writes_nothing: an expired lease is claimable");
    let before = store.get(id).await.expect("get").expect("run");
    let batch = crate::http::audit::RecordingRef { id: format!("{scope}-batch"), first: 0, count: 2 };
    for recording in [None, Some(batch.clone())] {
        let mut late = result(key, RunStatus::DeadLettered, 1, None);
        late.outcome.provider_entity_id = Some("LATE".into());
        late.outcome.provider_reference = Some("SI-LATE".into());
        late.attempt.ledger_id = Some("LATE".into());
        late.attempt.snapshot = Some(json!({"increment_id": "000000091"}).into());
        late.attempt.exchanges =
            vec![exchange(1, "POST", "/late/sales_invoices", 201), exchange(2, "GET", "/late/contacts", 429)];
        late.attempt.recording = recording;
        let err = store
            .finish(id, slow.claim, late)
            .await
            .expect_err("a_refused_finish_writes_nothing: a lapsed claim is refused");
        assert!(err.to_string().contains("claim"), "a_refused_finish_writes_nothing: the error says why: {err}");
        assert_eq!(
            store.get(id).await.expect("get").as_ref(),
            Some(&before),
            "a_refused_finish_writes_nothing: the run is as the current claim left it"
        );
        assert!(store.attempts(id).await.expect("attempts").is_empty(), "a_refused_finish_writes_nothing: no attempt");
        assert_eq!(
            store.ledger_requests(scope, t0() - Duration::days(1)).await.expect("count"),
            crate::store::audit::RequestCount::default(),
            "a_refused_finish_writes_nothing: no exchange stored"
        );
    }
    // The current claim finishes with its own exchanges under the batch's recording: they are
    // the ones stored (the refused finish took none of the recording's numbers).
    let mut r = result(key, RunStatus::Synced, 1, None);
    let own = vec![exchange(5, "POST", "/api.xro/2.0/Invoices", 200), exchange(6, "GET", "/api.xro/2.0/Contacts", 200)];
    r.attempt.exchanges = own.clone();
    r.attempt.recording = Some(batch);
    store.finish(id, fast.claim, r).await.expect("a_refused_finish_writes_nothing: the current claim finishes");
    let attempts = store.attempts(id).await.expect("attempts");
    assert_eq!(attempts.len(), 1, "a_refused_finish_writes_nothing: the current claim's attempt only");
    assert_eq!(attempts[0].exchanges, own, "a_refused_finish_writes_nothing: the current claim's exchanges");
    assert_eq!(store.get(id).await.expect("get").map(|r| r.status), Some(RunStatus::Synced));
}

/// An attempt with many exchanges (more than a SQL store writes in one `INSERT` of placeholders)
/// keeps them all, in order, each counted once.
pub async fn an_attempts_many_exchanges_are_kept_in_order(store: &dyn Store, scope: &str) {
    const N: i64 = 1_234;
    let key = "invoice.created:92";
    let id = store.enqueue(new_run(scope, key, "{}"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
    let exchanges: Vec<ExchangeRecord> = (0..N)
        .map(|i| ExchangeRecord {
            at: t0() + Duration::milliseconds(i),
            method: if i % 2 == 0 { "GET" } else { "POST" }.into(),
            url: format!("/v3.1/contacts?page={i}"),
            // Every seventh refused, every eleventh unanswered.
            status: if i % 11 == 0 {
                None
            } else if i % 7 == 0 {
                Some(429)
            } else {
                Some(200)
            },
            request_body: (i % 3 != 0).then(|| format!("{{\"n\":{i}}}")),
            response_body: Some(format!("[{i}]")),
            error: (i % 11 == 0).then(|| format!("timed out #{i}")),
        })
        .collect();
    let refused = (0..N).filter(|i| i % 11 != 0 && i % 7 == 0).count() as u64;
    let mut r = result(key, RunStatus::Synced, 1, None);
    r.attempt.exchanges = exchanges.clone();
    store.finish(id, run.claim, r).await.expect("finish");
    let attempts = store.attempts(id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].recording.as_ref().map(|r| (r.first, r.count)),
        Some((0, N as u64)),
        "an_attempts_many_exchanges: one recording of them all"
    );
    assert!(
        attempts[0].exchanges == exchanges,
        "an_attempts_many_exchanges: {} read back, not the {N} recorded in order",
        attempts[0].exchanges.len()
    );
    assert_eq!(
        store.ledger_requests(scope, t0()).await.expect("count"),
        crate::store::audit::RequestCount { requests: N as u64, rate_limited: refused },
        "an_attempts_many_exchanges: each counted once"
    );
}

/// A retried run's attempt numbers continue: after two failed attempts and a retry, the run
/// keeps its count (2) and records the retry point ([`crate::store::Run::attempts_before_retry`]),
/// for "Retry", "Retry all dead letters" and the command's `requeue` alike.
pub async fn retried_runs_keep_counting_their_attempts(store: &dyn Store, scope: &str) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let key = format!("invoice.created:{i}");
        let id = store.enqueue(new_run(scope, &key, "{}"), Dedupe::Permanent).await.expect("enqueue").run_id();
        let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
        store
            .finish(id, run.claim, result(&key, RunStatus::Queued, run.attempts + 1, Some(t0())))
            .await
            .expect("finish 1");
        let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
        assert_eq!(run.attempts, 1);
        store
            .finish(id, run.claim, result(&key, RunStatus::DeadLettered, run.attempts + 1, None))
            .await
            .expect("finish 2");
        ids.push(id);
    }
    let now = t0() + Duration::days(1);
    assert!(store.requeue_run(ids[0], now).await.expect("retry"));
    assert!(store.requeue(scope, "invoice.created:1", now).await.expect("requeue"));
    assert_eq!(store.requeue_dead_letters(scope, None, now).await.expect("retry all"), 1);
    for id in &ids {
        let run = store.get(*id).await.expect("get").expect("run");
        assert_eq!(
            (run.status, run.attempts, run.attempts_before_retry),
            (RunStatus::Queued, 2, 2),
            "retried_runs_keep_counting: run {id} keeps its two attempts and starts a fresh set"
        );
    }
    // The next attempt is number 3; a second retry moves the retry point again.
    let run = store.claim_run(ids[0], now, now + Duration::seconds(60)).await.expect("claim").expect("claimable");
    store
        .finish(ids[0], run.claim, result("invoice.created:0", RunStatus::DeadLettered, run.attempts + 1, None))
        .await
        .expect("finish 3");
    assert!(store.requeue_run(ids[0], now).await.expect("retry"));
    let run = store.get(ids[0]).await.expect("get").expect("run");
    assert_eq!((run.attempts, run.attempts_before_retry), (3, 3), "retried_runs_keep_counting: after a second retry");
    let numbers: Vec<u32> = store.attempts(ids[0]).await.expect("attempts").iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3], "retried_runs_keep_counting: the attempts, in order");
}

/// The runs table: every filter narrows, the order is newest first (id breaks ties), paging by
/// offset neither repeats nor skips, `total` counts every match, and the search finds a run by
/// increment id (from the event or a snapshot), ledger number or id, key, or entity id.
pub async fn runs_are_queried_filtered_and_paged(store: &dyn Store, scope: &str) {
    let other = format!("{scope}-other");
    let (ta, tb) = (format!("{scope}-ta"), format!("{scope}-tb"));
    let enqueue = |n: NewRun| async move { store.enqueue(n, Dedupe::Permanent).await.expect("enqueue").run_id() };
    let inv1 = enqueue(queued(
        scope,
        Some(&ta),
        "invoice.created:1",
        r#"{"entity":{"increment_id":"000000101"},"payload":{"increment_id":"x"}}"#,
        0,
    ))
    .await;
    let elsewhere = enqueue(queued(&other, Some(&ta), "invoice.created:1", "{}", 0)).await;
    let inv2 =
        enqueue(queued(scope, Some(&ta), "invoice.created:2", r#"{"payload":{"increment_id":"000000102"}}"#, 1)).await;
    let paid = enqueue(queued(scope, Some(&tb), "invoice.paid:3", "{}", 2)).await;
    let product = enqueue(queued(scope, None, "product.upserted:9", "not json", 3)).await;
    finish(store, inv1, "invoice.created:1", RunStatus::Synced, Some(("L-1", "SI-1")), None).await;
    finish(store, inv2, "invoice.created:2", RunStatus::DeadLettered, None, None).await;
    finish(
        store,
        paid,
        "invoice.paid:3",
        RunStatus::Synced,
        Some(("P-3", "PAY-3")),
        Some(json!({"increment_id": "000000103"})),
    )
    .await;

    let q = |f: &dyn Fn(&mut RunQuery)| {
        let mut q = RunQuery { scope: Some(scope.to_owned()), ..RunQuery::default() };
        f(&mut q);
        q
    };
    let all = store.query_runs(&q(&|_| {})).await.expect("query");
    assert_eq!(ids(&all), vec![product, paid, inv2, inv1], "runs_are_queried: the business's runs, newest first");
    assert_eq!(all.total, 4, "runs_are_queried: total");

    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let page = store.query_runs(&q(&|q| (q.offset, q.limit) = (offset, 2))).await.expect("page");
        assert_eq!(page.total, 4, "runs_are_queried: every page counts every match");
        assert!(page.runs.len() <= 2, "runs_are_queried: the page size holds");
        seen.extend(ids(&page));
    }
    assert_eq!(seen, vec![product, paid, inv2, inv1], "runs_are_queried: pages neither repeat nor skip");

    // A tenant across businesses; equal received times are ordered by id, newest first.
    let by_tenant =
        store.query_runs(&RunQuery { tenant_id: Some(ta.clone()), ..RunQuery::default() }).await.expect("query");
    assert_eq!(ids(&by_tenant), vec![inv2, elsewhere, inv1], "runs_are_queried: by tenant, ties by id");

    let cases: Vec<(&str, RunQuery, Vec<RunId>)> = vec![
        ("event", q(&|q| q.event = Some("invoice.created".into())), vec![inv2, inv1]),
        ("status", q(&|q| q.status = Some(RunStatus::DeadLettered)), vec![inv2]),
        ("queued", q(&|q| q.status = Some(RunStatus::Queued)), vec![product]),
        ("tenant", q(&|q| q.tenant_id = Some(tb.clone())), vec![paid]),
        (
            "from inclusive, until exclusive",
            q(&|q| (q.from, q.until) = (Some(t0() + Duration::hours(1)), Some(t0() + Duration::hours(3)))),
            vec![paid, inv2],
        ),
        ("entity", q(&|q| q.magento_entity_id = Some(9)), vec![product]),
        ("before", q(&|q| q.before_id = Some(paid)), vec![inv2, inv1]),
        ("increment id of the event", q(&|q| q.search = Some(" 000000101 ".into())), vec![inv1]),
        ("increment id of the payload", q(&|q| q.search = Some("000000102".into())), vec![inv2]),
        ("increment id of a snapshot", q(&|q| q.search = Some("000000103".into())), vec![paid]),
        ("ledger number, any case", q(&|q| q.search = Some("si-1".into())), vec![inv1]),
        ("ledger id", q(&|q| q.search = Some("P-3".into())), vec![paid]),
        ("key", q(&|q| q.search = Some("invoice.created:2".into())), vec![inv2]),
        ("entity id", q(&|q| q.search = Some("9".into())), vec![product]),
        ("no substring match", q(&|q| q.search = Some("00000010".into())), vec![]),
        ("nothing", q(&|q| q.search = Some("nothing".into())), vec![]),
        ("blank search", q(&|q| q.search = Some("  ".into())), vec![product, paid, inv2, inv1]),
    ];
    for (what, query, expected) in cases {
        let page = store.query_runs(&query).await.expect("query");
        assert_eq!(ids(&page), expected, "runs_are_queried: {what}");
        assert_eq!(page.total, u64::try_from(expected.len()).unwrap_or(0), "runs_are_queried: {what}: total");
    }
}

/// A run's page: the event, the attempts, the ledger's record, and for an upsert the changes
/// since the previous run of the same entity and tenant.
pub async fn run_detail_diffs_an_upsert_with_the_previous_run(store: &dyn Store, scope: &str) {
    let tenant = format!("{scope}-t");
    let key = "customer.upserted:5";
    let upsert = |raw: &str, hours| queued(scope, Some(&tenant), key, raw, hours);
    let first = store.enqueue(upsert(r#"{"v":1}"#, 0), Dedupe::WhileQueued).await.expect("enqueue").run_id();
    finish(store, first, key, RunStatus::Synced, Some(("C-5", "JANE")), Some(json!({"email": "a@x", "name": "Jane"})))
        .await;
    // Another tenant's run of the same entity id (another store's customer 5) is not compared.
    let foreign = store
        .enqueue(queued(scope, Some("someone-else"), key, r#"{"v":9}"#, 1), Dedupe::WhileQueued)
        .await
        .expect("enqueue")
        .run_id();
    finish(store, foreign, key, RunStatus::Synced, Some(("C-9", "X")), Some(json!({"email": "other@x"}))).await;
    let second = store.enqueue(upsert(r#"{"v":2}"#, 2), Dedupe::WhileQueued).await.expect("enqueue").run_id();
    assert_ne!(second, first, "run_detail: a later upsert after the first finished is a new run");
    finish(store, second, key, RunStatus::Synced, Some(("C-5", "JANE")), Some(json!({"email": "b@x", "name": "Jane"})))
        .await;

    let detail = run_detail(store, second).await.expect("detail").expect("run_detail: the run exists");
    assert_eq!(detail.event, Some(json!({"v": 2})), "run_detail: the event as JSON");
    assert_eq!(detail.attempts.len(), 1, "run_detail: its attempts");
    let ledger = detail.ledger.expect("run_detail: the ledger's record");
    assert_eq!((ledger.id.as_str(), ledger.number.as_deref()), ("C-5", Some("JANE")));
    let diff = detail.diff.expect("run_detail: an upsert with an earlier run has a diff");
    assert_eq!(diff.previous_run, first, "run_detail: compared with the same tenant's previous run");
    assert_eq!(
        diff.changes,
        vec![Change { path: "/email".into(), before: Some(json!("a@x")), after: Some(json!("b@x")) }],
        "run_detail: what changed"
    );
    let first_detail = run_detail(store, first).await.expect("detail").expect("run");
    assert!(first_detail.diff.is_none(), "run_detail: the first run of an entity has nothing to compare with");
    assert!(run_detail(store, -1).await.expect("detail").is_none(), "run_detail: no such run");
}

/// "Retry" puts one dead-lettered or waiting run back in line, due now, and nothing else; "Retry
/// all dead letters" does it for a tenant's (or the whole business's) dead letters.
pub async fn runs_are_retried_one_by_one_or_all_dead_letters(store: &dyn Store, scope: &str) {
    let (ta, tb) = (format!("{scope}-ta"), format!("{scope}-tb"));
    let mut dead = Vec::new();
    for (i, tenant) in [(1, Some(&ta)), (2, Some(&ta)), (3, Some(&tb)), (4, None)] {
        let key = format!("invoice.created:{i}");
        let id = store
            .enqueue(queued(scope, tenant.map(String::as_str), &key, "{}", 0), Dedupe::Permanent)
            .await
            .expect("enqueue")
            .run_id();
        finish(store, id, &key, RunStatus::DeadLettered, None, None).await;
        dead.push(id);
    }
    let synced = store
        .enqueue(queued(scope, Some(&ta), "invoice.created:5", "{}", 0), Dedupe::Permanent)
        .await
        .expect("enqueue")
        .run_id();
    finish(store, synced, "invoice.created:5", RunStatus::Synced, Some(("L", "N")), None).await;
    let now = t0() + Duration::days(1);

    assert!(store.requeue_run(dead[0], now).await.expect("requeue"), "retry: a dead letter is requeued");
    let run = store.get(dead[0]).await.expect("get").expect("run");
    assert_eq!((run.status, run.next_attempt_at), (RunStatus::Queued, None), "retry: due now");
    assert_eq!((run.attempts, run.attempts_before_retry), (1, 1), "retry: the attempt count is kept");
    assert_eq!(store.attempts(dead[0]).await.expect("attempts").len(), 1, "retry: earlier attempts are kept");
    assert!(store.claim_run(dead[0], now, now + Duration::seconds(60)).await.expect("claim").is_some());
    assert!(!store.requeue_run(synced, now).await.expect("requeue"), "retry: a synced run is not requeued");
    assert_eq!(store.get(synced).await.expect("get").map(|r| r.status), Some(RunStatus::Synced));
    assert!(!store.requeue_run(dead[0], now).await.expect("requeue"), "retry: a running run is not requeued");
    assert!(!store.requeue_run(-5, now).await.expect("requeue"), "retry: no such run");

    assert_eq!(store.requeue_dead_letters(scope, Some(&ta), now).await.expect("retry all"), 1, "retry all: ta's");
    assert_eq!(store.get(dead[1]).await.expect("get").map(|r| r.status), Some(RunStatus::Queued));
    assert_eq!(store.get(dead[2]).await.expect("get").map(|r| r.status), Some(RunStatus::DeadLettered));
    assert_eq!(
        store.requeue_dead_letters(&format!("{scope}-nothing"), None, now).await.expect("retry all"),
        0,
        "retry all: another business's are not touched"
    );
    assert_eq!(store.get(dead[3]).await.expect("get").map(|r| r.status), Some(RunStatus::DeadLettered));
    assert_eq!(store.requeue_dead_letters(scope, None, now).await.expect("retry all"), 2, "retry all: the rest");
    for id in &dead[1..] {
        let run = store.get(*id).await.expect("get").expect("run");
        assert_eq!((run.status, run.next_attempt_at), (RunStatus::Queued, None), "retry all: {id} due now");
    }
    assert_eq!(store.get(synced).await.expect("get").map(|r| r.status), Some(RunStatus::Synced));
}

/// Every audit behaviour, each under its own sub-scope of `scope`.
pub async fn run_all(store: &dyn Store, scope: &str) {
    attempts_keep_their_exchanges_and_snapshot(store, &format!("{scope}-exchanges")).await;
    runs_are_queried_filtered_and_paged(store, &format!("{scope}-query")).await;
    run_detail_diffs_an_upsert_with_the_previous_run(store, &format!("{scope}-detail")).await;
    runs_are_retried_one_by_one_or_all_dead_letters(store, &format!("{scope}-retry")).await;
    a_batchs_exchanges_are_kept_and_counted_once(store, &format!("{scope}-batch")).await;
    retried_runs_keep_counting_their_attempts(store, &format!("{scope}-renumber")).await;
    a_refused_finish_writes_nothing(store, &format!("{scope}-refused")).await;
    an_attempts_many_exchanges_are_kept_in_order(store, &format!("{scope}-many")).await;
}
