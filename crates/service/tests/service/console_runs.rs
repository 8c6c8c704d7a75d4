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
        snapshot: None,
    };
    w.store.finish(id, claimed.claim, RunResult { status, outcome, attempt, next_attempt_at: None }).await.unwrap();
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
