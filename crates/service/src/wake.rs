//! Waking the workers of other service processes that share a database ([`WakeBus`]).
//!
//! A webhook wakes the workers of the process that accepted it at once, in memory (see
//! [Workers](crate#workers)). A process that accepts webhooks but runs no worker of its own
//! (`serve --workers 0` in front of `serve --no-http` worker processes) announces the tenant on a
//! [`WakeBus`] instead, and every process with workers listening on it looks for due work at once
//! rather than at its next periodic look. On PostgreSQL the bus is `LISTEN`/`NOTIFY`
//! ([`PgWakeBus`], feature `postgres`; one `pg_notify` statement per such webhook, and one
//! listening connection per process with workers). SQLite serves one process: the in-memory wake
//! is all it needs, and no bus is set.
//!
//! An announcement is a hint, never the only way work is found: a process that misses one (its
//! listening connection was down) finds the run at its next periodic look
//! ([`ServiceConfig::poll_interval`](crate::ServiceConfig::poll_interval)).

use std::fmt;

use async_trait::async_trait;
use byte8_ledger_core::error::Result;

/// Announces tenants with new work to the other processes sharing a database, and hears theirs.
#[async_trait]
pub trait WakeBus: fmt::Debug + Send + Sync {
    /// Tells every listening process that `tenant_id` (of business `scope`) has work queued.
    ///
    /// # Errors
    /// When the announcement cannot be sent (the listeners then find the work at their next look).
    async fn announce(&self, scope: &str, tenant_id: &str) -> Result<()>;

    /// Waits for the next announcement from any process (this one's included). Connects on first
    /// use, and again after an error.
    ///
    /// # Errors
    /// When the listening connection cannot be opened or breaks.
    async fn next(&self) -> Result<()>;
}

#[cfg(feature = "postgres")]
pub use self::postgres::{CHANNEL, PgWakeBus};

#[cfg(feature = "postgres")]
mod postgres {
    use async_trait::async_trait;
    use byte8_ledger_core::{
        error::{Error, Result},
        store::postgres::PostgresStore,
    };
    use sqlx::postgres::{PgListener, PgPool};

    /// The `LISTEN`/`NOTIFY` channel of [`PgWakeBus`].
    pub const CHANNEL: &str = "byte8_ledger_work";

    fn db(e: sqlx::Error) -> Error {
        Error::database(e.to_string(), true, Some(Box::new(e)))
    }

    /// [`WakeBus`](super::WakeBus) over PostgreSQL's `LISTEN`/`NOTIFY` on [`CHANNEL`]: the payload
    /// is the business and the tenant, for the logs; a listener looks for all due work.
    #[derive(Debug)]
    pub struct PgWakeBus {
        pool: PgPool,
        listener: tokio::sync::Mutex<Option<PgListener>>,
    }

    impl PgWakeBus {
        /// A bus on `store`'s database.
        pub fn new(store: &PostgresStore) -> Self {
            Self { pool: store.pool().clone(), listener: tokio::sync::Mutex::new(None) }
        }
    }

    #[async_trait]
    impl super::WakeBus for PgWakeBus {
        async fn announce(&self, scope: &str, tenant_id: &str) -> Result<()> {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(format!("{scope} {tenant_id}"))
                .execute(&self.pool)
                .await
                .map_err(db)?;
            Ok(())
        }

        async fn next(&self) -> Result<()> {
            let mut slot = self.listener.lock().await;
            if slot.is_none() {
                let mut listener = PgListener::connect_with(&self.pool).await.map_err(db)?;
                listener.listen(CHANNEL).await.map_err(db)?;
                *slot = Some(listener);
            }
            let Some(listener) = slot.as_mut() else { return Err(Error::internal("no listener")) };
            match listener.recv().await {
                Ok(n) => {
                    tracing::debug!(payload = n.payload(), "work announced by a process");
                    Ok(())
                }
                Err(e) => {
                    *slot = None;
                    Err(db(e))
                }
            }
        }
    }
}
