//! The store conformance suite against every store: memory, SQLite (a file on disk, as the
//! command uses it) and PostgreSQL (feature `postgres`, when `BYTE8_TEST_DATABASE_URL` names a
//! database; skipped otherwise).
#![cfg(all(feature = "conformance", feature = "sqlite"))]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg;

use byte8_ledger_core::store::{conformance, crypto::MasterKey, memory::MemoryStore, sqlite::SqliteStore};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), Some(MasterKey::generate())).await.unwrap();
    conformance::run_all(&store, "sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_conforms() {
    let Some(url) = pg::url("postgres_store_conforms") else { return };
    let store = pg::store(&url, 8, Some(MasterKey::generate())).await;
    // A fresh scope each time: the database outlives the test.
    conformance::run_all(&store, &pg::unique("pg")).await;
}

#[tokio::test]
async fn sqlite_state_survives_reopening_and_tokens_are_encrypted_at_rest() {
    use byte8_ledger_core::{
        auth::TokenSet,
        store::{Connection, ConnectionStore, Dedupe, NewRun, RunStore},
    };
    use secrecy::{ExposeSecret, SecretString};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let key_text = SecretString::from(base64_of([9u8; 32]));
    {
        let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
        let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        store
            .save_connection(&Connection {
                scope: "biz".into(),
                provider: "sage_accounting".into(),
                base_url: "http://x".into(),
                token_url: "http://y".into(),
                created_at: now,
                tenant_id: None,
                connections_url: None,
            })
            .await
            .unwrap();
        store
            .save_tokens(
                "biz",
                &TokenSet {
                    access_token: SecretString::from("ACCESS-PLAIN".to_owned()),
                    refresh_token: SecretString::from("REFRESH-PLAIN".to_owned()),
                    access_expires_at: now,
                    refresh_expires_at: None,
                },
            )
            .await
            .unwrap();
        store
            .enqueue(
                NewRun {
                    scope: "biz".into(),
                    tenant_id: None,
                    idempotency_key: "invoice.created:1".into(),
                    event: Some("invoice.created".into()),
                    magento_entity_id: Some(1),
                    raw: "{}".into(),
                    fingerprint: "f".into(),
                    policy: None,
                    received_at: now,
                },
                Dedupe::Permanent,
            )
            .await
            .unwrap();
    }
    // Nothing in the database file (or its WAL) holds a token in clear.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("REFRESH-PLAIN") && !text.contains("ACCESS-PLAIN"));
    }
    let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
    assert_eq!(store.tokens("biz").await.unwrap().unwrap().refresh_token.expose_secret(), "REFRESH-PLAIN");
    assert!(store.find_by_key("biz", "invoice.created:1").await.unwrap().is_some(), "the queue survived");
    let wrong = SqliteStore::open(&path, Some(MasterKey::generate())).await.unwrap();
    let err = wrong.tokens("biz").await.unwrap_err();
    assert!(err.to_string().contains("LEDGER_MASTER_KEY"), "{err}");
}

fn base64_of(bytes: [u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn memory_service_store_conforms() {
    conformance::service::run_all(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn sqlite_service_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), Some(MasterKey::generate())).await.unwrap();
    conformance::service::run_all(&store, "sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_service_store_conforms() {
    let Some(url) = pg::url("postgres_service_store_conforms") else { return };
    let store = pg::store(&url, 8, Some(MasterKey::generate())).await;
    conformance::service::run_all(&store, &pg::unique("pg")).await;
}

#[tokio::test]
async fn sqlite_keeps_the_api_key_encrypted_at_rest() {
    use byte8_ledger_core::{
        magento::ApiKey,
        policy::SyncPolicy,
        store::service::{Binding, BindingStore},
    };
    use secrecy::SecretString;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let key_text = SecretString::from(base64_of([7u8; 32]));
    let api_key = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    {
        let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
        let b = Binding::new(
            "tenant-at-rest",
            "biz",
            "https://shop.example.com",
            ApiKey::new(api_key).unwrap(),
            SyncPolicy::default(),
            chrono::DateTime::UNIX_EPOCH,
        )
        .unwrap();
        store.put_binding(&b).await.unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(api_key), "the api_key is in clear in the database");
    }
    let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
    assert_eq!(store.binding("tenant-at-rest").await.unwrap().unwrap().api_key.expose_secret(), api_key);
    // Listing needs no master key.
    let listed = SqliteStore::open(&path, None).await.unwrap().bindings().await.unwrap();
    assert_eq!(listed.iter().map(|b| b.tenant_id.as_str()).collect::<Vec<_>>(), ["tenant-at-rest"]);
    // Without the master key, or with another one, the binding does not open, and the error says
    // why without the key.
    for store in [
        SqliteStore::open(&path, None).await.unwrap(),
        SqliteStore::open(&path, Some(MasterKey::generate())).await.unwrap(),
    ] {
        let err = store.binding("tenant-at-rest").await.unwrap_err();
        assert!(err.to_string().contains("LEDGER_MASTER_KEY"), "{err}");
        assert!(!err.to_string().contains(api_key) && !format!("{err:?}").contains(api_key));
    }
}
