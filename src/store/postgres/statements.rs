//! [`Statements`]: the executor the store's own statements run on, a few connections kept out of
//! the pool between statements.
//!
//! sqlx's pool tests every connection given back to it with a round trip (a `Sync` and its
//! `ReadyForQuery`, in a task spawned for it), whatever `test_before_acquire` says. A statement
//! run on `&PgPool` therefore cost two round trips, and the second one woke the process and the
//! database's backend once more for nothing: profiled, the test and its task were 8.7 % of
//! `serve`'s CPU (BENCHMARKS.md, "The pool's test of every connection it gets back").
//!
//! Here a connection that answered its statement whole is kept for the next statement, untested.
//! Whatever did not end that way goes back to the pool, which tests it as before:
//! - a statement that failed (the connection may be broken: the test closes it if it is);
//! - a statement whose future was dropped before the answer was read (a timeout, an aborted
//!   task: the test reads what is left of the answer);
//! - a connection kept for [`MAX_KEPT`] or longer (the pool's own `max_lifetime` and
//!   `idle_timeout` then apply to it);
//! - any connection whose statement ends while the pool is saturated (all its connections out,
//!   none left to open), so that a statement or transaction waiting on the pool gets it.
//!
//! At most half the pool's connections are kept (none for a pool of one), so that statements run
//! on the pool itself (transactions, the console's, a host's) always find the other half.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{
    StreamExt as _,
    future::BoxFuture,
    stream::{self, BoxStream},
};
use sqlx::{
    Describe, Either, Error, Execute, Executor, Postgres,
    pool::PoolConnection,
    postgres::{PgPool, PgQueryResult, PgRow, PgStatement, PgTypeInfo},
};

/// How long a connection is kept out of the pool before it goes back to be tested there.
pub const MAX_KEPT: Duration = Duration::from_secs(300);

/// The executor of the store's single statements (`.fetch_one(store.statements())`, as one would
/// write `.fetch_one(store.pool())`): each statement takes a connection this executor kept from
/// the last one, or one from the pool, and keeps it afterwards when the statement's answer was
/// read whole, the pool keeps its other half and the pool is not saturated (see the module docs
/// for when a connection goes back to the pool instead). A statement's rows are read whole
/// before they are handed on: the store never streams. Transactions take their connection from
/// the pool.
#[derive(Clone)]
pub struct Statements {
    pool: PgPool,
    kept: Arc<Mutex<Vec<Kept>>>,
    keep: usize,
}

struct Kept {
    conn: PoolConnection<Postgres>,
    since: Instant,
}

impl fmt::Debug for Statements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Statements").field("kept", &self.kept_now()).field("keep", &self.keep).finish_non_exhaustive()
    }
}

impl Statements {
    /// The executor over `pool`, keeping at most half its connections.
    pub(crate) fn new(pool: PgPool) -> Self {
        let keep = usize::try_from(pool.options().get_max_connections() / 2).unwrap_or(0);
        Self { pool, kept: Arc::default(), keep }
    }

    /// Gives every kept connection back to the pool. The pool's `close` waits for every
    /// connection out of it, so one kept here would keep it waiting for good
    /// ([`PostgresStore::close`](super::PostgresStore::close)). A statement that ends after the
    /// pool is closed gives its connection back too.
    pub(crate) fn release_kept(&self) {
        let kept = self.kept.lock().map(|mut k| std::mem::take(&mut *k)).unwrap_or_default();
        drop(kept);
    }

    /// How many connections are kept now (between statements, out of the pool).
    pub fn kept_now(&self) -> usize {
        self.kept.lock().map_or(0, |k| k.len())
    }

    async fn take(&self) -> Result<Kept, Error> {
        loop {
            let next = self.kept.lock().ok().and_then(|mut k| k.pop());
            match next {
                Some(k) if k.since.elapsed() < MAX_KEPT => return Ok(k),
                // Back to the pool, which tests it and applies its lifetimes.
                Some(old) => drop(old),
                None => return Ok(Kept { conn: self.pool.acquire().await?, since: Instant::now() }),
            }
        }
    }

    /// Keeps `k` for the next statement, or gives it back to the pool when enough are kept or the
    /// pool is saturated (every connection out of it, none left to open): statements and
    /// transactions may then be waiting on the pool, and a connection kept here would idle while
    /// they wait for another one to come back (under a burst of webhooks on two processes, sqlx
    /// warned of acquires slower than 2 s by the hundred).
    fn put_back(&self, k: Kept) {
        let saturated = self.pool.num_idle() == 0 && self.pool.size() >= self.pool.options().get_max_connections();
        if saturated || self.pool.is_closed() {
            return;
        }
        if let Ok(mut kept) = self.kept.lock()
            && kept.len() < self.keep
        {
            kept.push(k);
        }
    }
}

impl<'c> Executor<'c> for &'_ Statements {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let this = self.clone();
        let answer = async move {
            let mut k = match this.take().await {
                Ok(k) => k,
                Err(e) => return vec![Err(e)],
            };
            let mut items = Vec::new();
            let mut failed = None;
            {
                let mut s = (&mut *k.conn).fetch_many(query);
                while let Some(item) = s.next().await {
                    match item {
                        Ok(v) => items.push(Ok(v)),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            match failed {
                None => this.put_back(k),
                Some(e) => items.push(Err(e)),
            }
            items
        };
        Box::pin(stream::once(answer).flat_map(stream::iter))
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let this = self.clone();
        Box::pin(async move {
            let mut k = this.take().await?;
            let row = (&mut *k.conn).fetch_optional(query).await?;
            this.put_back(k);
            Ok(row)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, Error>>
    where
        'c: 'e,
    {
        let this = self.clone();
        Box::pin(async move {
            let mut k = this.take().await?;
            let statement = (&mut *k.conn).prepare_with(sql, parameters).await?;
            this.put_back(k);
            Ok(statement)
        })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, Error>>
    where
        'c: 'e,
    {
        let pool = self.pool.clone();
        Box::pin(async move { pool.describe(sql).await })
    }
}
