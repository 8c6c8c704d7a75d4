//! The webhook route's cache of bindings on PostgreSQL: a webhook verified against a cached
//! binding is queued only while the binding is still the version it was read at. Another
//! process (here: a second store with its own pool) revokes the tenant, rotates its key, changes
//! its policy or moves it to another business, and the serving process, its cache warm, must act
//! on the binding as it is now: refuse the revoked tenant, accept the new key and not the old
//! one, snapshot the new policy into the run, and judge the provider a webhook names by the new
//! business.
//!
//! Skipped (with a message) without `BYTE8_TEST_DATABASE_URL`.

use crate::support_magento as magento;
use crate::support_postgres as pg;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use byte8_ledger_core::{
    clock::{Clock, SystemClock},
    policy::SyncPolicy,
    providers::{AccountingProvider, memory::InMemoryProvider},
    store::{Connection, ConnectionStore, RunStore, crypto::MasterKey},
};
use byte8_ledger_service::{
    HttpLimits, ProviderFactory, Service, ServiceConfig,
    magento::ApiKey,
    store::{Binding, BindingStatus, BindingStore},
};
use magento::FakeMagento;
use secrecy::SecretString;
use serde_json::Value;

#[derive(Debug)]
struct OneLedger(Arc<InMemoryProvider>);

#[async_trait]
impl ProviderFactory for OneLedger {
    async fn provider(&self, _: &Binding) -> byte8_ledger_core::Result<Arc<dyn AccountingProvider>> {
        Ok(Arc::clone(&self.0) as Arc<dyn AccountingProvider>)
    }
}

fn policy(prefix: &str) -> SyncPolicy {
    SyncPolicy::from_json(&format!(r#"{{"invoice_number_prefix":"{prefix}","default_tax_rate_id":"GB_STANDARD"}}"#))
        .expect("a valid policy")
}

fn master_key() -> MasterKey {
    MasterKey::from_base64(&SecretString::from("d2ViaG9vay1iaW5kaW5ncy10ZXN0LW1hc3Rlci1rISE=".to_owned()))
        .expect("a master key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_binding_never_outlives_a_change_made_elsewhere() {
    let Some(url) = pg::url("a_cached_binding_never_outlives_a_change_made_elsewhere") else {
        return;
    };
    // The serving process's store, and another process's (its own pool) that changes the binding.
    let serving = Arc::new(pg::store(&url, 4, Some(master_key())).await);
    let other = pg::store(&url, 2, Some(master_key())).await;
    let shop = pg::unique("cache");
    let tenant = format!("tenant-{shop}");
    let scope = format!("biz-{shop}");
    let fake = FakeMagento::start().await;
    let pair = |key: &ApiKey, prefix: &str, at_s: i64| {
        fake.add_paired_shop(&shop, &tenant, key.expose_secret());
        let at = SystemClock.now() + chrono::Duration::seconds(at_s);
        Binding::new(&tenant, &scope, &fake.base_url(&shop), key.clone(), policy(prefix), at).expect("a binding")
    };

    let service = Service::new(
        Arc::clone(&serving) as _,
        Arc::new(OneLedger(Arc::new(InMemoryProvider::demo()))),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ledger = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(byte8_ledger_service::serve(
        listener,
        service.router(),
        HttpLimits::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let events = magento::sample_events();
    let send = |key: &str| {
        let (event, envelope, _) = events[key].clone();
        let (fake, http, ledger, shop) = (&fake, &http, &ledger, &shop);
        async move { fake.webhook(http, ledger, shop, &event, &envelope).await }
    };
    let policy_of = |key: &'static str| {
        let serving = Arc::clone(&serving);
        let scope = scope.clone();
        async move {
            let run = serving.find_by_key(&scope, key).await.expect("find").expect("the run is queued");
            let policy: Value = serde_json::from_str(run.policy.as_deref().expect("a policy snapshot")).expect("JSON");
            policy["invoice_number_prefix"].as_str().expect("a prefix").to_owned()
        }
    };

    // Paired; the first webhook reads the binding (and caches it), the second uses the cache.
    let first_key = ApiKey::generate().expect("a key");
    other.put_binding(&pair(&first_key, "ONE-", 0)).await.expect("pair");
    assert_eq!(send("invoice.created:1001").await.0, 202, "paired: accepted");
    assert_eq!(send("invoice.created:1002").await.0, 202, "paired, cached: accepted");
    assert_eq!(policy_of("invoice.created:1002").await, "ONE-");

    // Another process changes the policy: the cached copy is stale, the run carries the new one.
    other.put_binding(&pair(&first_key, "TWO-", 1)).await.expect("new policy");
    assert_eq!(send("invoice.created:1003").await.0, 202, "new policy: accepted");
    assert_eq!(policy_of("invoice.created:1003").await, "TWO-", "the policy as it is now, not as cached");

    // Another process revokes the tenant: its cached binding must not let a webhook through.
    other.set_binding_status(&tenant, BindingStatus::Revoked, SystemClock.now()).await.expect("revoke");
    let (status, body) = send("invoice.created:1004").await;
    assert_eq!(status, 401, "revoked while cached: refused ({body})");
    assert!(serving.find_by_key(&scope, "invoice.created:1004").await.expect("find").is_none(), "nothing queued");

    // Paired again with a new key (cached at the next webhook), then the key rotated once more:
    // the newest key is accepted, the one before refused.
    let second_key = ApiKey::generate().expect("a key");
    other.put_binding(&pair(&second_key, "TWO-", 2)).await.expect("re-pair");
    assert_eq!(send("invoice.created:1005").await.0, 202, "re-paired: accepted");
    let third_key = ApiKey::generate().expect("a key");
    other.put_binding(&pair(&third_key, "TWO-", 3)).await.expect("rotate");
    assert_eq!(send("invoice.created:1006").await.0, 202, "rotated while cached: the new key is accepted");
    fake.add_paired_shop(&shop, &tenant, second_key.expose_secret());
    let (status, body) = send("invoice.created:1007").await;
    assert_eq!(status, 401, "the key before the rotation is refused ({body})");
    assert!(serving.find_by_key(&scope, "invoice.created:1007").await.expect("find").is_none(), "nothing queued");

    // Moved by another process to another business, on Xero: a webhook naming Xero is judged on
    // the binding as it is now, not refused on the cached business's Sage connection.
    let xero_scope = format!("{scope}-xero");
    for (business, provider) in [(&scope, "sage_accounting"), (&xero_scope, "xero")] {
        other
            .save_connection(&Connection {
                scope: business.clone(),
                provider: provider.into(),
                base_url: "https://ledger.invalid".into(),
                token_url: "https://ledger.invalid/token".into(),
                created_at: SystemClock.now(),
                tenant_id: None,
                connections_url: None,
            })
            .await
            .expect("a connection");
    }
    fake.add_paired_shop(&shop, &tenant, third_key.expose_secret());
    assert_eq!(send("invoice.created:1010").await.0, 202, "cached on the Sage business");
    let moved = Binding::new(&tenant, &xero_scope, &fake.base_url(&shop), third_key.clone(), policy("TWO-"), {
        SystemClock.now() + chrono::Duration::seconds(4)
    })
    .expect("a binding");
    other.put_binding(&moved).await.expect("moved");
    let (_, envelope, _) = events["invoice.created:1011"].clone();
    let token = fake.webhook_token(&shop);
    let key = Some("invoice.created:1011");
    let (status, body) =
        magento::post(&http, &ledger, &tenant, "invoice.created?provider=xero", &envelope, Some(&token), key).await;
    assert_eq!(status, 202, "judged on the binding as it is now ({body})");
    assert!(serving.find_by_key(&xero_scope, "invoice.created:1011").await.expect("find").is_some(), "queued there");
}
