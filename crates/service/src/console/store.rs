//! Where the console keeps its operators, sessions and policy history ([`ConsoleStore`]), and the
//! OAuth states its connect routes accepted ([`ConsoleStore::use_oauth_state`]), in the memory
//! store ([`MemoryConsoleStore`], tests and the demo), SQLite and PostgreSQL (features `sqlite`
//! and `postgres`; tables of migrations `0007_console.sql` and `0010_exchanges_once.sql`).
//!
//! # OAuth states used once, across processes
//!
//! A `state` that came back to `/oauth/{provider}/callback` is recorded (the SHA-256 of its
//! nonce, until the state expires) with one atomic insert-if-absent: a second callback with the
//! same state is refused, whichever `serve` process sharing the database it reaches. Expired
//! records are removed as new ones come.

use std::{collections::BTreeMap, fmt, sync::Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use byte8_ledger_core::error::{Error, Result};

/// An operator's stored password hash (an argon2id PHC string); never shown by `Debug`.
#[derive(Clone)]
pub struct PasswordHash(SecretString);

impl PasswordHash {
    /// Wraps a PHC string read from the store or made by [`hash_password`](super::password::hash_password).
    pub fn new(phc: String) -> Self {
        Self(SecretString::from(phc))
    }

    /// The PHC string.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([REDACTED])")
    }
}

/// An operator as listed (no hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorInfo {
    /// The login name.
    pub name: String,
    /// When the operator was added.
    pub created_at: DateTime<Utc>,
    /// When the password was last set.
    pub updated_at: DateTime<Utc>,
}

/// A stored console session (the row of the SHA-256 of its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The operator it logs in.
    pub operator: String,
    /// When the operator logged in.
    pub created_at: DateTime<Utc>,
    /// When it ends unless used again (each use renews it, up to `absolute_expires_at`).
    pub expires_at: DateTime<Utc>,
    /// When it ends whatever the use.
    pub absolute_expires_at: DateTime<Utc>,
}

/// One version of a tenant's policy, as changed in the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// The tenant whose policy it is.
    pub tenant_id: String,
    /// 1, 2, … in the order of the changes.
    pub version: i64,
    /// The policy as JSON (the policy file's format, contract.md).
    pub policy: String,
    /// The operator who made the change.
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// What the change was (`edited`, `restored version 3`, `as paired`).
    pub note: Option<String>,
}

/// What the overview shows of a business's activity beyond the run store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// When the oldest run still queued arrived.
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// The console's own tables.
#[async_trait]
pub trait ConsoleStore: fmt::Debug + Send + Sync {
    /// Adds operator `name` with `hash`, or sets a new hash for an existing one (which ends every
    /// session of that operator). True when the operator is new.
    async fn put_operator(&self, name: &str, hash: &PasswordHash, now: DateTime<Utc>) -> Result<bool>;

    /// The password hash of `name`, if there is such an operator.
    async fn operator_hash(&self, name: &str) -> Result<Option<PasswordHash>>;

    /// Every operator, by name.
    async fn operators(&self) -> Result<Vec<OperatorInfo>>;

    /// Removes operator `name` and its sessions; false when there was none.
    async fn remove_operator(&self, name: &str) -> Result<bool>;

    /// Stores a new session under `id_hash` (the SHA-256 hex of the session id).
    async fn create_session(&self, id_hash: &str, record: &SessionRecord) -> Result<()>;

    /// The session of `id_hash` if it has not expired at `now`; its `expires_at` is moved to
    /// `renew_until` (bounded by its absolute expiry) when it is.
    async fn use_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        renew_until: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>>;

    /// Ends a session (logout); false when there was none.
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;

    /// Removes the sessions expired at `now`; how many.
    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Records a new version of `tenant_id`'s policy; returns its number (one more than the
    /// last).
    async fn add_policy_version(
        &self,
        tenant_id: &str,
        policy: &str,
        changed_by: &str,
        changed_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<i64>;

    /// The versions of `tenant_id`'s policy, newest first.
    async fn policy_versions(&self, tenant_id: &str) -> Result<Vec<PolicyVersion>>;

    /// Records the OAuth state whose nonce hashes to `nonce_hash` (SHA-256 hex) as used until
    /// `expires_at`, removing the records expired at `now`: true when it was not recorded yet,
    /// false when it was (a replayed callback). Atomic: of two processes sharing the store given
    /// the same state, one gets true.
    async fn use_oauth_state(&self, nonce_hash: &str, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool>;

    /// The activity of business `scope` (`since`: the start of the span the overview looks
    /// at), read from the run tables of the same database; `None` where this store cannot see
    /// them (the memory console store: the overview then reads the run store).
    async fn activity(&self, scope: &str, since: DateTime<Utc>) -> Result<Option<Activity>> {
        let _ = (scope, since);
        Ok(None)
    }
}

/// The console's tables in memory (tests, the demo): gone when the process ends.
#[derive(Debug, Default)]
pub struct MemoryConsoleStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    operators: BTreeMap<String, (PasswordHash, DateTime<Utc>, DateTime<Utc>)>,
    sessions: BTreeMap<String, SessionRecord>,
    policies: BTreeMap<String, Vec<PolicyVersion>>,
    oauth_states: BTreeMap<String, DateTime<Utc>>,
}

impl MemoryConsoleStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves consistent maps (every change is one insert).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ConsoleStore for MemoryConsoleStore {
    async fn put_operator(&self, name: &str, hash: &PasswordHash, now: DateTime<Utc>) -> Result<bool> {
        let mut s = self.lock();
        let created = s.operators.get(name).map_or(now, |o| o.1);
        let new = s.operators.insert(name.to_owned(), (hash.clone(), created, now)).is_none();
        if !new {
            s.sessions.retain(|_, r| r.operator != name);
        }
        Ok(new)
    }

    async fn operator_hash(&self, name: &str) -> Result<Option<PasswordHash>> {
        Ok(self.lock().operators.get(name).map(|o| o.0.clone()))
    }

    async fn operators(&self) -> Result<Vec<OperatorInfo>> {
        Ok(self
            .lock()
            .operators
            .iter()
            .map(|(name, o)| OperatorInfo { name: name.clone(), created_at: o.1, updated_at: o.2 })
            .collect())
    }

    async fn remove_operator(&self, name: &str) -> Result<bool> {
        let mut s = self.lock();
        s.sessions.retain(|_, r| r.operator != name);
        Ok(s.operators.remove(name).is_some())
    }

    async fn create_session(&self, id_hash: &str, record: &SessionRecord) -> Result<()> {
        let mut s = self.lock();
        if !s.operators.contains_key(&record.operator) {
            return Err(Error::invalid("console session", "operator", "no such operator"));
        }
        s.sessions.insert(id_hash.to_owned(), record.clone());
        Ok(())
    }

    async fn use_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        renew_until: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        let mut s = self.lock();
        let Some(record) = s.sessions.get_mut(id_hash) else { return Ok(None) };
        if record.expires_at <= now || record.absolute_expires_at <= now {
            return Ok(None);
        }
        record.expires_at = renew_until.min(record.absolute_expires_at).max(record.expires_at);
        Ok(Some(record.clone()))
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        Ok(self.lock().sessions.remove(id_hash).is_some())
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut s = self.lock();
        let before = s.sessions.len();
        s.sessions.retain(|_, r| r.expires_at > now && r.absolute_expires_at > now);
        Ok(u64::try_from(before - s.sessions.len()).unwrap_or(u64::MAX))
    }

    async fn add_policy_version(
        &self,
        tenant_id: &str,
        policy: &str,
        changed_by: &str,
        changed_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<i64> {
        let mut s = self.lock();
        let versions = s.policies.entry(tenant_id.to_owned()).or_default();
        let version = versions.last().map_or(1, |v| v.version + 1);
        versions.push(PolicyVersion {
            tenant_id: tenant_id.to_owned(),
            version,
            policy: policy.to_owned(),
            changed_by: changed_by.to_owned(),
            changed_at,
            note: note.map(str::to_owned),
        });
        Ok(version)
    }

    async fn policy_versions(&self, tenant_id: &str) -> Result<Vec<PolicyVersion>> {
        let mut versions = self.lock().policies.get(tenant_id).cloned().unwrap_or_default();
        versions.reverse();
        Ok(versions)
    }

    async fn use_oauth_state(&self, nonce_hash: &str, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool> {
        let mut s = self.lock();
        s.oauth_states.retain(|_, exp| *exp > now);
        if s.oauth_states.contains_key(nonce_hash) {
            return Ok(false);
        }
        s.oauth_states.insert(nonce_hash.to_owned(), expires_at);
        Ok(true)
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn db(e: sqlx::Error) -> Error {
    let retryable = matches!(&e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
        || e.as_database_error().is_some_and(|d| {
            let m = d.message().to_lowercase();
            m.contains("locked") || m.contains("busy") || d.code().is_some_and(|c| c == "40001" || c == "40P01")
        });
    Error::database(e.to_string(), retryable, Some(Box::new(e)))
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use sqlx::Row;

    use super::{Activity, ConsoleStore, OperatorInfo, PasswordHash, PolicyVersion, SessionRecord, db};
    use byte8_ledger_core::{error::Result, store::sqlite::SqliteStore};

    fn micros(t: DateTime<Utc>) -> i64 {
        t.timestamp_micros()
    }

    fn time(v: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_micros(v).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    #[async_trait]
    impl ConsoleStore for SqliteStore {
        async fn put_operator(&self, name: &str, hash: &PasswordHash, now: DateTime<Utc>) -> Result<bool> {
            let mut tx = self.pool().begin().await.map_err(db)?;
            let existed = sqlx::query("SELECT 1 FROM operators WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
            sqlx::query(
                "INSERT INTO operators (name, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(hash.expose_secret())
            .bind(micros(now))
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if existed {
                sqlx::query("DELETE FROM console_sessions WHERE operator = ?")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok(!existed)
        }

        async fn operator_hash(&self, name: &str) -> Result<Option<PasswordHash>> {
            let row = sqlx::query("SELECT password_hash FROM operators WHERE name = ?")
                .bind(name)
                .fetch_optional(self.pool())
                .await
                .map_err(db)?;
            row.map(|r| r.try_get::<String, _>(0).map(PasswordHash::new).map_err(db)).transpose()
        }

        async fn operators(&self) -> Result<Vec<OperatorInfo>> {
            let rows = sqlx::query("SELECT name, created_at, updated_at FROM operators ORDER BY name")
                .fetch_all(self.pool())
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(OperatorInfo {
                        name: r.try_get(0).map_err(db)?,
                        created_at: time(r.try_get(1).map_err(db)?),
                        updated_at: time(r.try_get(2).map_err(db)?),
                    })
                })
                .collect()
        }

        async fn remove_operator(&self, name: &str) -> Result<bool> {
            let mut tx = self.pool().begin().await.map_err(db)?;
            sqlx::query("DELETE FROM console_sessions WHERE operator = ?")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let n = sqlx::query("DELETE FROM operators WHERE name = ?")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            tx.commit().await.map_err(db)?;
            Ok(n > 0)
        }

        async fn create_session(&self, id_hash: &str, r: &SessionRecord) -> Result<()> {
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, operator, created_at, expires_at, absolute_expires_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id_hash)
            .bind(&r.operator)
            .bind(micros(r.created_at))
            .bind(micros(r.expires_at))
            .bind(micros(r.absolute_expires_at))
            .execute(self.pool())
            .await
            .map_err(db)?;
            Ok(())
        }

        async fn use_session(
            &self,
            id_hash: &str,
            now: DateTime<Utc>,
            renew_until: DateTime<Utc>,
        ) -> Result<Option<SessionRecord>> {
            let row = sqlx::query(
                "UPDATE console_sessions SET expires_at = MAX(expires_at, MIN(?, absolute_expires_at)) \
                 WHERE id_hash = ? AND expires_at > ? AND absolute_expires_at > ? \
                 RETURNING operator, created_at, expires_at, absolute_expires_at",
            )
            .bind(micros(renew_until))
            .bind(id_hash)
            .bind(micros(now))
            .bind(micros(now))
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
            row.map(|r| {
                Ok(SessionRecord {
                    operator: r.try_get(0).map_err(db)?,
                    created_at: time(r.try_get(1).map_err(db)?),
                    expires_at: time(r.try_get(2).map_err(db)?),
                    absolute_expires_at: time(r.try_get(3).map_err(db)?),
                })
            })
            .transpose()
        }

        async fn delete_session(&self, id_hash: &str) -> Result<bool> {
            let n = sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?")
                .bind(id_hash)
                .execute(self.pool())
                .await
                .map_err(db)?
                .rows_affected();
            Ok(n > 0)
        }

        async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
            Ok(sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ? OR absolute_expires_at <= ?")
                .bind(micros(now))
                .bind(micros(now))
                .execute(self.pool())
                .await
                .map_err(db)?
                .rows_affected())
        }

        async fn add_policy_version(
            &self,
            tenant_id: &str,
            policy: &str,
            changed_by: &str,
            changed_at: DateTime<Utc>,
            note: Option<&str>,
        ) -> Result<i64> {
            // One statement: two changes at once cannot take the same number (the second fails
            // on the primary key and is reported, not lost).
            let row = sqlx::query(
                "INSERT INTO policy_versions (tenant_id, version, policy, changed_by, changed_at, note) \
                 SELECT ?1, COALESCE(MAX(version), 0) + 1, ?2, ?3, ?4, ?5 FROM policy_versions WHERE tenant_id = ?1 \
                 RETURNING version",
            )
            .bind(tenant_id)
            .bind(policy)
            .bind(changed_by)
            .bind(micros(changed_at))
            .bind(note)
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
            row.try_get(0).map_err(db)
        }

        async fn policy_versions(&self, tenant_id: &str) -> Result<Vec<PolicyVersion>> {
            let rows = sqlx::query(
                "SELECT version, policy, changed_by, changed_at, note FROM policy_versions WHERE tenant_id = ? \
                 ORDER BY version DESC",
            )
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(PolicyVersion {
                        tenant_id: tenant_id.to_owned(),
                        version: r.try_get(0).map_err(db)?,
                        policy: r.try_get(1).map_err(db)?,
                        changed_by: r.try_get(2).map_err(db)?,
                        changed_at: time(r.try_get(3).map_err(db)?),
                        note: r.try_get(4).map_err(db)?,
                    })
                })
                .collect()
        }
        async fn use_oauth_state(
            &self,
            nonce_hash: &str,
            expires_at: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<bool> {
            sqlx::query("DELETE FROM oauth_states_used WHERE expires_at <= ?")
                .bind(micros(now))
                .execute(self.pool())
                .await
                .map_err(db)?;
            // The replay check itself is this one insert: the primary key lets one through.
            let n = sqlx::query(
                "INSERT INTO oauth_states_used (state_hash, expires_at) VALUES (?, ?) ON CONFLICT (state_hash) DO NOTHING",
            )
            .bind(nonce_hash)
            .bind(micros(expires_at))
            .execute(self.pool())
            .await
            .map_err(db)?
            .rows_affected();
            Ok(n == 1)
        }

        async fn activity(&self, scope: &str, since: DateTime<Utc>) -> Result<Option<Activity>> {
            let _ = since;
            let row = sqlx::query("SELECT MIN(created_at) FROM runs WHERE scope = ? AND status = 'queued'")
                .bind(scope)
                .fetch_one(self.pool())
                .await
                .map_err(db)?;
            let oldest: Option<i64> = row.try_get(0).map_err(db)?;
            Ok(Some(Activity { oldest_queued_at: oldest.map(time) }))
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use sqlx::Row;

    use super::{Activity, ConsoleStore, OperatorInfo, PasswordHash, PolicyVersion, SessionRecord, db};
    use byte8_ledger_core::{error::Result, store::postgres::PostgresStore};

    /// PostgreSQL text cannot hold NUL; no console value legitimately does.
    fn text(s: &str) -> String {
        s.replace('\0', "\u{FFFD}")
    }

    #[async_trait]
    impl ConsoleStore for PostgresStore {
        async fn put_operator(&self, name: &str, hash: &PasswordHash, now: DateTime<Utc>) -> Result<bool> {
            let mut tx = self.pool().begin().await.map_err(db)?;
            // `xmax = 0` tells an insert from an update of the upsert.
            let row = sqlx::query(
                "INSERT INTO operators (name, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at \
                 RETURNING (xmax = 0) AS inserted",
            )
            .bind(text(name))
            .bind(hash.expose_secret())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            let inserted: bool = row.try_get(0).map_err(db)?;
            if !inserted {
                sqlx::query("DELETE FROM console_sessions WHERE operator = $1")
                    .bind(text(name))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok(inserted)
        }

        async fn operator_hash(&self, name: &str) -> Result<Option<PasswordHash>> {
            let row = sqlx::query("SELECT password_hash FROM operators WHERE name = $1")
                .bind(text(name))
                .fetch_optional(self.pool())
                .await
                .map_err(db)?;
            row.map(|r| r.try_get::<String, _>(0).map(PasswordHash::new).map_err(db)).transpose()
        }

        async fn operators(&self) -> Result<Vec<OperatorInfo>> {
            let rows = sqlx::query("SELECT name, created_at, updated_at FROM operators ORDER BY name")
                .fetch_all(self.pool())
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(OperatorInfo {
                        name: r.try_get(0).map_err(db)?,
                        created_at: r.try_get(1).map_err(db)?,
                        updated_at: r.try_get(2).map_err(db)?,
                    })
                })
                .collect()
        }

        async fn remove_operator(&self, name: &str) -> Result<bool> {
            // The sessions go with it (ON DELETE CASCADE).
            let n = sqlx::query("DELETE FROM operators WHERE name = $1")
                .bind(text(name))
                .execute(self.pool())
                .await
                .map_err(db)?
                .rows_affected();
            Ok(n > 0)
        }

        async fn create_session(&self, id_hash: &str, r: &SessionRecord) -> Result<()> {
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, operator, created_at, expires_at, absolute_expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id_hash)
            .bind(text(&r.operator))
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.absolute_expires_at)
            .execute(self.pool())
            .await
            .map_err(db)?;
            Ok(())
        }

        async fn use_session(
            &self,
            id_hash: &str,
            now: DateTime<Utc>,
            renew_until: DateTime<Utc>,
        ) -> Result<Option<SessionRecord>> {
            let row = sqlx::query(
                "UPDATE console_sessions SET expires_at = GREATEST(expires_at, LEAST($1, absolute_expires_at)) \
                 WHERE id_hash = $2 AND expires_at > $3 AND absolute_expires_at > $3 \
                 RETURNING operator, created_at, expires_at, absolute_expires_at",
            )
            .bind(renew_until)
            .bind(id_hash)
            .bind(now)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
            row.map(|r| {
                Ok(SessionRecord {
                    operator: r.try_get(0).map_err(db)?,
                    created_at: r.try_get(1).map_err(db)?,
                    expires_at: r.try_get(2).map_err(db)?,
                    absolute_expires_at: r.try_get(3).map_err(db)?,
                })
            })
            .transpose()
        }

        async fn delete_session(&self, id_hash: &str) -> Result<bool> {
            let n = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                .bind(id_hash)
                .execute(self.pool())
                .await
                .map_err(db)?
                .rows_affected();
            Ok(n > 0)
        }

        async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
            Ok(sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR absolute_expires_at <= $1")
                .bind(now)
                .execute(self.pool())
                .await
                .map_err(db)?
                .rows_affected())
        }

        async fn add_policy_version(
            &self,
            tenant_id: &str,
            policy: &str,
            changed_by: &str,
            changed_at: DateTime<Utc>,
            note: Option<&str>,
        ) -> Result<i64> {
            let row = sqlx::query(
                "INSERT INTO policy_versions (tenant_id, version, policy, changed_by, changed_at, note) \
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM policy_versions WHERE tenant_id = $1 \
                 RETURNING version",
            )
            .bind(text(tenant_id))
            .bind(text(policy))
            .bind(text(changed_by))
            .bind(changed_at)
            .bind(note.map(text))
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
            row.try_get(0).map_err(db)
        }

        async fn policy_versions(&self, tenant_id: &str) -> Result<Vec<PolicyVersion>> {
            let rows = sqlx::query(
                "SELECT version, policy, changed_by, changed_at, note FROM policy_versions WHERE tenant_id = $1 \
                 ORDER BY version DESC",
            )
            .bind(text(tenant_id))
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(PolicyVersion {
                        tenant_id: tenant_id.to_owned(),
                        version: r.try_get(0).map_err(db)?,
                        policy: r.try_get(1).map_err(db)?,
                        changed_by: r.try_get(2).map_err(db)?,
                        changed_at: r.try_get(3).map_err(db)?,
                        note: r.try_get(4).map_err(db)?,
                    })
                })
                .collect()
        }

        async fn use_oauth_state(
            &self,
            nonce_hash: &str,
            expires_at: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<bool> {
            sqlx::query("DELETE FROM oauth_states_used WHERE expires_at <= $1")
                .bind(now)
                .execute(self.pool())
                .await
                .map_err(db)?;
            // The replay check itself is this one insert: the primary key lets one through.
            let n = sqlx::query(
                "INSERT INTO oauth_states_used (state_hash, expires_at) VALUES ($1, $2) ON CONFLICT (state_hash) DO NOTHING",
            )
            .bind(text(nonce_hash))
            .bind(expires_at)
            .execute(self.pool())
            .await
            .map_err(db)?
            .rows_affected();
            Ok(n == 1)
        }

        async fn activity(&self, scope: &str, since: DateTime<Utc>) -> Result<Option<Activity>> {
            let _ = since;
            let row = sqlx::query("SELECT MIN(created_at) FROM runs WHERE scope = $1 AND status = 'queued'")
                .bind(text(scope))
                .fetch_one(self.pool())
                .await
                .map_err(db)?;
            let oldest: Option<DateTime<Utc>> = row.try_get(0).map_err(db)?;
            Ok(Some(Activity { oldest_queued_at: oldest }))
        }
    }
}
