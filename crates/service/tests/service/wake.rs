//! The PostgreSQL wake bus (`byte8_ledger_service::wake::PgWakeBus`): an announcement made
//! through one process's connection reaches another process's listener.

use crate::support_postgres as pg;

use std::time::Duration;

use byte8_ledger_service::wake::{PgWakeBus, WakeBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_from_one_process_wakes_the_listener_of_another() {
    let Some(url) = pg::url("a_notify_from_one_process_wakes_the_listener_of_another") else { return };
    // Two pools: two processes.
    let (one, other) = (pg::store(&url, 2, None).await, pg::store(&url, 2, None).await);
    let (sender, listener) = (PgWakeBus::new(&one), PgWakeBus::new(&other));
    // Listening first (the first `next` connects and LISTENs), then the announcement; the
    // announcement is repeated until heard, since the listener may not be connected yet when
    // the first one is sent (announcements are hints; nothing is owed to a listener not yet
    // listening).
    let heard = tokio::spawn(async move { listener.next().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !heard.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the other process never heard the announcement");
        sender.announce("business-1", "tenant-1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    heard.await.unwrap().unwrap();

    // Without an announcement, nothing is heard.
    let quiet = PgWakeBus::new(&pg::store(&url, 1, None).await);
    let silent = tokio::time::timeout(Duration::from_millis(500), quiet.next()).await;
    assert!(silent.is_err(), "heard an announcement nobody made: {silent:?}");
}
