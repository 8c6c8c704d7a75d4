//! The console's sync-runs pages over plain HTTP (the access rules of their routes are in
//! `console.rs`'s route lists): the table's filters, search and server paging, a run's page with
//! its ledger exchanges, "Retry" and "Retry all dead letters" with its confirmation.

use byte8_ledger_core::{
    clock::Clock,
    error::ErrorCode,
    http::audit::ExchangeRecord,
    outcome::{Outcome, SyncStatus},
    policy::SyncPolicy,
    store::{AttemptRecord, Dedupe, NewRun, RunId, RunResult, RunStatus, RunStore},
};
use byte8_ledger_service::store::{ApiKey, Binding, BindingStore};
use reqwest::{StatusCode, header};

use crate::console::ConsoleWorld;

/// Binds `tenant` to business `scope`.
async fn pair(w: &ConsoleWorld, tenant: &str, scope: &str) {
    let b = Binding::new(
        tenant,
        scope,
        "https://shop.example.com",
        ApiKey::generate().unwrap(),
        SyncPolicy::default(),
        w.clock.now(),
    )
    .unwrap();
    w.store.put_binding(&b).await.unwrap();
}

/// Queues `invoice.created:{n}` of `tenant` on `scope` and ends it with `status` (none: left
/// queued); a failed attempt keeps one refused exchange.
async fn run(w: &ConsoleWorld, scope: &str, tenant: &str, n: u64, status: Option<RunStatus>) -> RunId {
    let key = format!("invoice.created:{n}");
    let raw = format!(r#"{{"event":"invoice.created","payload":{{"increment_id":"{n:09}"}}}}"#);
    let id = w
        .store
        .enqueue(
            NewRun {
                scope: scope.into(),
                tenant_id: Some(tenant.into()),
                idempotency_key: key.clone(),
                event: Some("invoice.created".into()),
                magento_entity_id: Some(n),
                raw: raw.clone(),
                fingerprint: format!("f{n}"),
                policy: None,
                received_at: w.clock.now(),
            },
            Dedupe::Permanent,
        )
        .await
        .unwrap()
        .run_id();
    let Some(status) = status else { return id };
    let now = w.clock.now();
    let claimed = w.store.claim_run(id, now, now + chrono::Duration::minutes(5)).await.unwrap().unwrap();
    let synced = status == RunStatus::Synced;
    let outcome = Outcome {
        idempotency_key: Some(key),
        event: Some("invoice.created".into()),
        entity_type: Some("invoice".into()),
        magento_entity_id: Some(n),
        provider: "sage_accounting".into(),
        sync_status: if synced { SyncStatus::Synced } else { SyncStatus::Failed },
        provider_entity_id: synced.then(|| format!("L-{n}")),
        provider_reference: synced.then(|| format!("SI-{n}")),
        skip_reason: None,
        error_code: (!synced).then_some(ErrorCode::Provider),
        message: (!synced).then(|| "Sage refused the invoice".into()),
        last_sync_at: now,
    };
    let attempt = AttemptRecord {
        number: 1,
        started_at: now,
        finished_at: now,
        result: if synced { "synced".into() } else { "failed".into() },
        error_code: outcome.error_code,
        message: outcome.message.clone(),
        ledger_id: outcome.provider_entity_id.clone(),
        exchanges: vec![ExchangeRecord {
            at: now,
            method: "POST".into(),
            url: "/v3.1/sales_invoices".into(),
            status: Some(if synced { 201 } else { 403 }),
            request_body: Some(format!(r#"{{"sales_invoice":{{"reference":"{n:09}"}}}}"#)),
            response_body: Some(if synced {
                format!(r#"{{"id":"L-{n}"}}"#)
            } else {
                r#"[{"$dataCode":"MultiUserAccessDenied"}]"#.into()
            }),
            error: None,
        }],
        recording: None,
        snapshot: None,
    };
    w.store
        .finish(id, claimed.claim, RunResult { status, outcome, attempt, next_attempt_at: None, xrefs: Vec::new() })
        .await
        .unwrap();
    id
}

/// The run ids of a table page, in order.
fn rows(html: &str) -> Vec<RunId> {
    html.split("data-run=\"").skip(1).filter_map(|s| s.split('"').next()?.parse().ok()).collect()
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn the_runs_table_filters_searches_and_pages_on_the_server() {
    let w = ConsoleWorld::start().await;
    pair(&w, "shop-a", "biz-a").await;
    pair(&w, "shop-b", "biz-b").await;
    let mut ids = Vec::new();
    for n in 1..=53 {
        ids.push(run(&w, "biz-a", "shop-a", n, Some(RunStatus::Synced)).await);
        w.clock.advance(chrono::Duration::seconds(1));
    }
    let dead = run(&w, "biz-a", "shop-a", 100, Some(RunStatus::DeadLettered)).await;
    let other = run(&w, "biz-b", "shop-b", 200, None).await;
    let s = w.login().await;

    let r = w.get("/console/runs", Some(&s)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Runs 1–50 of 55"), "{html}");
    let first = rows(&html);
    assert_eq!(first.len(), 50);
    assert_eq!(&first[..2], &[other, dead], "newest first");
    let second = rows(&w.get("/console/runs?page=2", Some(&s)).await.text().await.unwrap());
    let mut expected: Vec<RunId> = ids.iter().rev().copied().collect::<Vec<_>>()[48..].to_vec();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(second, expected, "page 2 holds the rest, none repeated");

    let only = |q: &str| {
        let w = &w;
        let s = s.clone();
        let q = q.to_owned();
        async move { rows(&w.get(&format!("/console/runs?{q}"), Some(&s)).await.text().await.unwrap()) }
    };
    assert_eq!(only("status=dead_lettered").await, vec![dead]);
    assert_eq!(only("store=shop-b").await, vec![other]);
    assert_eq!(only("q=000000007").await, vec![ids[6]], "by increment id");
    assert_eq!(only("q=SI-12").await, vec![ids[11]], "by the ledger's number");
    assert_eq!(only("event=invoice.paid").await, Vec::<RunId>::new());
    assert_eq!(only("from=2026-03-03").await, Vec::<RunId>::new(), "received the day before");
    assert_eq!(only("store=shop-a&status=dead_lettered&to=2026-03-02").await, vec![dead]);

    let r = w.get("/console/runs?from=yesterday&status=lost", Some(&s)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains("from: `yesterday` is not a date (YYYY-MM-DD)"), "{html}");
    assert!(html.contains("status: `lost` is not a run status"));
    assert!(rows(&html).is_empty());
}

#[tokio::test]
async fn a_runs_page_shows_its_exchanges_and_retry_puts_it_back_in_line() {
    let w = ConsoleWorld::start().await;
    pair(&w, "shop-a", "biz-a").await;
    let dead = run(&w, "biz-a", "shop-a", 7, Some(RunStatus::DeadLettered)).await;
    let synced = run(&w, "biz-a", "shop-a", 8, Some(RunStatus::Synced)).await;
    let s = w.login().await;
    let token = w.csrf(&s).await;

    let html = w.get(&format!("/console/runs/{dead}"), Some(&s)).await.text().await.unwrap();
    assert!(html.contains("<code>POST /v3.1/sales_invoices</code> → <strong>403</strong>"), "{html}");
    assert!(html.contains("MultiUserAccessDenied"));
    assert!(html.contains(&format!(r#"action="/console/runs/{dead}/retry""#)));
    let html = w.get(&format!("/console/runs/{synced}"), Some(&s)).await.text().await.unwrap();
    assert!(html.contains("<strong>SI-8</strong>"), "the ledger's number");
    assert!(!html.contains("/retry\""), "a synced run has no Retry");
    assert_eq!(w.get("/console/runs/999999", Some(&s)).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(w.get("/console/runs/x", Some(&s)).await.status(), StatusCode::NOT_FOUND);

    let r = w.post(&format!("/console/runs/{dead}/retry"), Some(&s), &[("csrf_token", "wrong")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(w.store.get(dead).await.unwrap().unwrap().status, RunStatus::DeadLettered, "nothing done");
    let r = w.post(&format!("/console/runs/{dead}/retry"), Some(&s), &[("csrf_token", &token)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), format!("/console/runs/{dead}?done=retried"));
    let run = w.store.get(dead).await.unwrap().unwrap();
    assert_eq!((run.status, run.next_attempt_at), (RunStatus::Queued, None), "due now");
    let html = w.get(&location(&r), Some(&s)).await.text().await.unwrap();
    assert!(html.contains("The run is back in line"));
    let r = w.post(&format!("/console/runs/{synced}/retry"), Some(&s), &[("csrf_token", &token)]).await;
    assert_eq!(location(&r), format!("/console/runs/{synced}?done=not_retried"));
    assert_eq!(w.store.get(synced).await.unwrap().unwrap().status, RunStatus::Synced);
}

#[tokio::test]
async fn retry_all_dead_letters_asks_for_the_store_and_a_confirmation() {
    let w = ConsoleWorld::start().await;
    pair(&w, "shop-a", "biz-a").await;
    pair(&w, "shop-b", "biz-b").await;
    let a1 = run(&w, "biz-a", "shop-a", 1, Some(RunStatus::DeadLettered)).await;
    let a2 = run(&w, "biz-a", "shop-a", 2, Some(RunStatus::DeadLettered)).await;
    let b1 = run(&w, "biz-b", "shop-b", 3, Some(RunStatus::DeadLettered)).await;
    let s = w.login().await;
    let token = w.csrf(&s).await;

    let html = w.get("/console/runs/retry-dead-letters?store=shop-a", Some(&s)).await.text().await.unwrap();
    assert!(html.contains("2 dead-lettered runs of store <strong>shop-a</strong>"), "{html}");
    let html = w.get("/console/runs/retry-dead-letters?store=nope", Some(&s)).await.text().await.unwrap();
    assert!(html.contains("store: `nope` is not a paired store"), "{html}");

    let r = w.post("/console/runs/retry-dead-letters", Some(&s), &[("csrf_token", &token), ("store", "shop-a")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "not confirmed");
    assert!(r.text().await.unwrap().contains("confirm: tick the box to confirm"));
    assert_eq!(w.store.get(a1).await.unwrap().unwrap().status, RunStatus::DeadLettered);
    let r = w.post("/console/runs/retry-dead-letters", Some(&s), &[("csrf_token", &token), ("confirm", "yes")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "no store");

    let r = w
        .post(
            "/console/runs/retry-dead-letters",
            Some(&s),
            &[("csrf_token", &token), ("store", "shop-a"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/runs?store=shop-a&done=retried_all&retried=2");
    for id in [a1, a2] {
        assert_eq!(w.store.get(id).await.unwrap().unwrap().status, RunStatus::Queued);
    }
    assert_eq!(w.store.get(b1).await.unwrap().unwrap().status, RunStatus::DeadLettered, "another store's stay");
    let html = w.get(&location(&r), Some(&s)).await.text().await.unwrap();
    assert!(html.contains("2 dead-lettered runs are back in line"), "{html}");
}

#[tokio::test]
async fn retry_all_dead_letters_of_every_business_from_the_overview_with_a_confirmation() {
    let w = ConsoleWorld::start().await;
    pair(&w, "shop-a", "biz-a").await;
    pair(&w, "shop-b", "biz-b").await;
    let a1 = run(&w, "biz-a", "shop-a", 1, Some(RunStatus::DeadLettered)).await;
    let b1 = run(&w, "biz-b", "shop-b", 2, Some(RunStatus::DeadLettered)).await;
    let b2 = run(&w, "biz-b", "shop-b", 3, Some(RunStatus::DeadLettered)).await;
    let synced = run(&w, "biz-a", "shop-a", 4, Some(RunStatus::Synced)).await;
    let s = w.login().await;
    let token = w.csrf(&s).await;

    // The overview's dead-letter banner links to the confirmation for every business.
    let html = w.get("/console", Some(&s)).await.text().await.unwrap();
    assert!(html.contains("3 event(s) dead-lettered"), "{html}");
    assert!(html.contains(r#"href="/console/runs/retry-dead-letters?store=*""#), "{html}");
    let html = w.get("/console/runs/retry-dead-letters?store=*", Some(&s)).await.text().await.unwrap();
    assert!(html.contains("3 dead-lettered runs of <strong>every business</strong>"), "{html}");
    assert!(html.contains(r#"<option value="*" selected>Every store of every business</option>"#), "{html}");

    // A wrong CSRF token: 403, nothing retried; not confirmed: the field error, nothing retried.
    let form = |csrf: &str, confirm: bool| {
        let mut f = vec![("csrf_token".to_owned(), csrf.to_owned()), ("store".to_owned(), "*".to_owned())];
        if confirm {
            f.push(("confirm".to_owned(), "yes".to_owned()));
        }
        f
    };
    let pairs = |f: &[(String, String)]| f.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    let post = |f: Vec<(String, String)>| {
        let w = &w;
        let s = s.clone();
        async move {
            let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            w.post("/console/runs/retry-dead-letters", Some(&s), &refs).await
        }
    };
    let r = post(pairs(&form("wrong", true))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post(pairs(&form(&token, false))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("confirm: tick the box to confirm"));
    for id in [a1, b1, b2] {
        assert_eq!(w.store.get(id).await.unwrap().unwrap().status, RunStatus::DeadLettered, "nothing retried yet");
    }

    let r = post(pairs(&form(&token, true))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/runs?done=retried_all&retried=3");
    for id in [a1, b1, b2] {
        let run = w.store.get(id).await.unwrap().unwrap();
        assert_eq!((run.status, run.next_attempt_at), (RunStatus::Queued, None), "run {id} of any business, due now");
    }
    assert_eq!(w.store.get(synced).await.unwrap().unwrap().status, RunStatus::Synced, "only dead letters");
    let html = w.get(&location(&r), Some(&s)).await.text().await.unwrap();
    assert!(html.contains("3 dead-lettered runs are back in line"), "{html}");
    let html = w.get("/console", Some(&s)).await.text().await.unwrap();
    assert!(!html.contains("retry-dead-letters?store=*"), "no dead letter left: no banner link");
}

#[tokio::test]
async fn a_retried_runs_page_numbers_its_next_attempt_after_the_earlier_ones() {
    let w = ConsoleWorld::start().await;
    pair(&w, "shop-a", "biz-a").await;
    let dead = run(&w, "biz-a", "shop-a", 7, Some(RunStatus::DeadLettered)).await;
    let s = w.login().await;
    let token = w.csrf(&s).await;
    let r = w.post(&format!("/console/runs/{dead}/retry"), Some(&s), &[("csrf_token", &token)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The worker's next attempt (as the engine numbers it: the run's count plus one) fails again.
    let now = w.clock.now();
    let claimed = w.store.claim_run(dead, now, now + chrono::Duration::minutes(5)).await.unwrap().unwrap();
    assert_eq!((claimed.attempts, claimed.attempts_before_retry), (1, 1), "the count is kept across the retry");
    let mut attempts = w.store.attempts(dead).await.unwrap();
    let mut again = attempts.remove(0);
    again.number = claimed.attempts + 1;
    let outcome = claimed.outcome.clone().unwrap();
    w.store
        .finish(
            dead,
            claimed.claim,
            RunResult {
                status: RunStatus::DeadLettered,
                outcome,
                attempt: again,
                next_attempt_at: None,
                xrefs: Vec::new(),
            },
        )
        .await
        .unwrap();
    let html = w.get(&format!("/console/runs/{dead}"), Some(&s)).await.text().await.unwrap();
    assert_eq!(html.matches("Attempt 1: ").count(), 1, "{html}");
    assert_eq!(html.matches("Attempt 2: ").count(), 1, "the attempt after the retry is the second: {html}");
}

#[tokio::test]
async fn the_overview_shows_the_rate_limits_use_of_the_last_hour_per_business() {
    use byte8_ledger_core::store::{Connection, ConnectionStore};
    let w = ConsoleWorld::start().await;
    for (scope, provider) in [("biz-x", "xero"), ("biz-s", "sage_accounting")] {
        w.store
            .save_connection(&Connection {
                scope: scope.into(),
                provider: provider.into(),
                base_url: "https://ledger.example.com".into(),
                token_url: "https://ledger.example.com/token".into(),
                created_at: w.clock.now(),
                tenant_id: None,
                connections_url: None,
            })
            .await
            .unwrap();
    }
    pair(&w, "shop-x", "biz-x").await;
    // biz-x: a run whose one attempt made three requests (one refused with 429), all this hour,
    // and an earlier run whose request is two hours old; biz-s: one run's one request.
    let now = w.clock.now();
    let exchange = |at: chrono::DateTime<chrono::Utc>, status: u16| ExchangeRecord {
        at,
        method: "PUT".into(),
        url: "/api.xro/2.0/Invoices".into(),
        status: Some(status),
        request_body: None,
        response_body: None,
        error: None,
    };
    let finish_with = |scope: &'static str, tenant: &'static str, n: u64, exchanges: Vec<ExchangeRecord>| {
        let w = &w;
        async move {
            let id = run(w, scope, tenant, n, None).await;
            let claimed = w.store.claim_run(id, now, now + chrono::Duration::minutes(5)).await.unwrap().unwrap();
            let mut result = RunResult {
                status: RunStatus::Synced,
                outcome: Outcome {
                    idempotency_key: Some(format!("invoice.created:{n}")),
                    event: Some("invoice.created".into()),
                    entity_type: Some("invoice".into()),
                    magento_entity_id: Some(n),
                    provider: "xero".into(),
                    sync_status: SyncStatus::Synced,
                    provider_entity_id: Some(format!("L-{n}")),
                    provider_reference: None,
                    skip_reason: None,
                    error_code: None,
                    message: None,
                    last_sync_at: now,
                },
                attempt: AttemptRecord {
                    number: 1,
                    started_at: now,
                    finished_at: now,
                    result: "synced".into(),
                    error_code: None,
                    message: None,
                    ledger_id: Some(format!("L-{n}")),
                    exchanges: Vec::new(),
                    recording: None,
                    snapshot: None,
                },
                next_attempt_at: None,
                xrefs: Vec::new(),
            };
            result.attempt.exchanges = exchanges;
            w.store.finish(id, claimed.claim, result).await.unwrap();
        }
    };
    let minutes = |m: i64| now - chrono::Duration::minutes(m);
    finish_with(
        "biz-x",
        "shop-x",
        1,
        vec![exchange(minutes(50), 200), exchange(minutes(50), 429), exchange(minutes(49), 200)],
    )
    .await;
    finish_with("biz-x", "shop-x", 2, vec![exchange(minutes(120), 200)]).await;
    pair(&w, "shop-s", "biz-s").await;
    finish_with("biz-s", "shop-s", 3, vec![exchange(minutes(5), 200)]).await;

    let s = w.login().await;
    let html = w.get("/console", Some(&s)).await.text().await.unwrap();
    let row = |scope: &str| {
        let start = html.find(&format!(r#"<tr data-business="{scope}">"#)).unwrap_or_else(|| panic!("{scope}: {html}"));
        let end = html[start..].find("</tr>").unwrap() + start;
        html[start..end].to_owned()
    };
    // Xero: 60 a minute, 3,600 an hour; 3 of them this hour, one refused.
    let x = row("biz-x");
    assert!(x.contains("3 / 3,600 (0.1 %)"), "{x}");
    assert!(x.contains("1 refused (429)"), "{x}");
    // Sage: 200 a minute, 12,000 an hour.
    let sage = row("biz-s");
    assert!(sage.contains("1 / 12,000 (0.0 %)"), "{sage}");
    assert!(!sage.contains("429"), "{sage}");
}
