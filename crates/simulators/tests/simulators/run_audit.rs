//! The sync runs' audit end to end: the real engine and `SageProvider` against the Sage simulator,
//! the SQLite store. Each attempt keeps the requests Sage was sent and its answers, with no
//! credential in them; a refused run keeps Sage's refusal, is retried by id and syncs; an upsert's
//! page shows what changed since the previous run of the same customer.

use crate::support_engine::*;
use byte8_ledger_core::clock::Clock;
use byte8_ledger_core::store::{
    RunStatus,
    audit::{RunQuery, run_detail},
};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, Fault};
use serde_json::json;
use support::policy;

use crate::support;

/// No credential the provider holds or was issued appears in `text`.
fn assert_no_secret(text: &str) {
    for secret in ["sim-access-", "sim-refresh-", "demo-secret", DEMO_REFRESH_TOKEN] {
        assert!(!text.contains(secret), "a credential ({secret}…) was kept in the audit: {text}");
    }
}

#[tokio::test]
async fn every_attempt_keeps_the_requests_sage_was_sent_and_its_answers_without_credentials() {
    let w = World::new().await;
    let engine = w.engine(policy(json!({})));
    let inv = invoice_entity(1001, "GBP", &registered(5, "Jane", "Doe", None));
    let o = engine.sync_line(&invoice_created(&inv)).await.unwrap();
    let id = synced(&o);

    let store = w.store();
    let run = store.find_by_key(engine.scope(), "invoice.created:1001").await.unwrap().expect("the run");
    let attempts = store.attempts(run.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    let exchanges = &attempts[0].exchanges;
    let posts: Vec<_> = exchanges.iter().filter(|e| e.method == "POST" && e.url.ends_with("/sales_invoices")).collect();
    assert_eq!(posts.len() as u64, w.served("POST /sales_invoices"), "one exchange per invoice Sage was sent");
    assert_eq!(posts.len(), 1);
    let post = posts[0];
    assert_eq!(post.status, Some(201), "{post:?}");
    let sent: serde_json::Value = serde_json::from_str(post.request_body.as_deref().unwrap()).unwrap();
    assert_eq!(sent["sales_invoice"]["reference"], "000001001", "the body Sage was sent");
    let answer: serde_json::Value = serde_json::from_str(post.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(answer["id"], id.as_str(), "Sage's answer, with the id the outcome names");
    assert_eq!(
        exchanges.iter().filter(|e| e.method == "POST" && e.url.ends_with("/contacts")).count() as u64,
        w.served("POST /contacts")
    );
    assert!(exchanges.windows(2).all(|p| p[0].at <= p[1].at), "oldest first");
    assert_no_secret(&serde_json::to_string(&attempts).unwrap());
    assert_eq!(attempts[0].snapshot.as_ref().unwrap().to_value()["increment_id"], "000001001", "the entity snapshot");

    // The runs table finds it by increment id and by Sage's document number.
    for term in ["000001001", "SI-1"] {
        let page = store.query_runs(&RunQuery { search: Some(term.into()), ..RunQuery::default() }).await.unwrap();
        assert_eq!(page.runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run.id], "search {term}");
    }
}

#[tokio::test]
async fn a_refused_run_keeps_sages_refusal_and_retried_by_id_it_syncs() {
    let w = World::new().await;
    let engine = w.engine(policy(json!({})));
    let inv = invoice_entity(1002, "GBP", &registered(6, "Ann", "Lee", None));
    w.sim.script(Some("POST /sales_invoices"), Fault::AccessDenied);
    let o = engine.sync_line(&invoice_created(&inv)).await.unwrap();
    assert_eq!(o.sync_status.as_str(), "failed", "{o:?}");
    let store = w.store();
    let run = store.find_by_key(engine.scope(), "invoice.created:1002").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::DeadLettered, "a 403 is permanent");
    let attempts = store.attempts(run.id).await.unwrap();
    let refused = attempts[0].exchanges.last().expect("the refused request");
    assert_eq!((refused.method.as_str(), refused.status), ("POST", Some(403)));
    assert!(refused.url.ends_with("/sales_invoices"), "{refused:?}");
    assert!(
        refused.response_body.as_deref().unwrap_or_default().contains("MultiUserAccessDenied"),
        "Sage's own refusal: {refused:?}"
    );
    assert_no_secret(&serde_json::to_string(&attempts).unwrap());

    assert!(store.requeue_run(run.id, w.clock.now()).await.unwrap());
    let done = engine.process_due(10).await.unwrap();
    assert_eq!(done.len(), 1);
    synced(&done[0].1);
    let detail = run_detail(store.as_ref(), run.id).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Synced);
    assert_eq!(detail.attempts.len(), 2, "both attempts kept");
    assert_eq!(
        detail.attempts[1].exchanges.iter().filter(|e| e.method == "POST" && e.status == Some(201)).count(),
        1,
        "the retry's post"
    );
    let ledger = detail.ledger.expect("the ledger's record");
    assert_eq!(ledger.number.as_deref(), Some("SI-1"));
    assert!(detail.diff.is_none(), "documents have no diff");
}

#[tokio::test]
async fn an_upserts_page_shows_what_changed_since_the_previous_run_of_the_customer() {
    let w = World::new().await;
    let engine = w.engine(policy(json!({})));
    let mut c = registered(7, "Jane", "Doe", None);
    synced(&engine.sync_line(&customer_upserted(&c, "2026-11-22T10:00:00Z")).await.unwrap());
    c["email"] = json!("jane.doe@example.com");
    synced(&engine.sync_line(&customer_upserted(&c, "2026-11-22T11:00:00Z")).await.unwrap());
    let store = w.store();
    let page = store
        .query_runs(&RunQuery {
            event: Some("customer.upserted".into()),
            magento_entity_id: Some(7),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    let (newer, older) = (page.runs[0].id, page.runs[1].id);
    let detail = run_detail(store.as_ref(), newer).await.unwrap().unwrap();
    let diff = detail.diff.expect("a diff with the previous run");
    assert_eq!(diff.previous_run, older);
    let changed: Vec<_> = diff.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(changed, ["/email"], "{diff:?}");
    assert_eq!(diff.changes[0].before, Some(json!("jane@example.com")));
    assert_eq!(diff.changes[0].after, Some(json!("jane.doe@example.com")));
}
