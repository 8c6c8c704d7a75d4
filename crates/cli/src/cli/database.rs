//! `--state FILE | --database-url URL`: the store a command works on.

use std::{
    fmt,
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use secrecy::{ExposeSecret, SecretString};

use super::{Failure, usage};
use byte8_ledger_core::{
    http::{RateConfig, RateLimiter},
    providers::AccountingProvider,
    store::{Connection, ConnectionStoreDyn, Store, crypto::MasterKey, postgres::PostgresStore, sqlite::SqliteStore},
};
use byte8_ledger_service::store::ServiceStore;
use byte8_ledger_service::{SageProviders, StoredProviders, console::ConsoleStore};

/// A command-line value that is a secret (a database URL with its password, a pairing code, a
/// refresh token): never shown by `Debug`. Each such option also reads its environment variable
/// (the form the docs use: a command line is visible to every user of the machine in `ps`), and
/// `-` reads the value from the first line of stdin.
#[derive(Clone)]
pub(crate) struct SecretArg(SecretString);

impl SecretArg {
    /// The value.
    pub(crate) fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The value, read from the first line of stdin when it is `-`.
    ///
    /// # Errors
    /// A usage [`Failure`] naming `option` when stdin cannot be read or holds nothing.
    pub(crate) fn resolve(&self, option: &str) -> Result<SecretString, Failure> {
        if self.expose_secret() != "-" {
            return Ok(self.0.clone());
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| usage(format!("{option} -: cannot read the value from stdin: {e}")))?;
        let value = line.trim();
        if value.is_empty() {
            return Err(usage(format!("{option} -: stdin holds no value")));
        }
        Ok(SecretString::from(value.to_owned()))
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(SecretString::from(s.to_owned())))
    }
}

/// The environment variable `--database-url` reads (the form to use: the URL holds a password).
pub(crate) const DATABASE_URL_ENV: &str = "BYTE8_DATABASE_URL";

/// Where the state lives: an SQLite file (one process) or a PostgreSQL database (several).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// The state database: an SQLite file, created on first use (one process); not with a
    /// database URL (BYTE8_DATABASE_URL set counts).
    #[arg(long, conflicts_with = "database_url", required_unless_present = "database_url")]
    pub state: Option<PathBuf>,
    /// A PostgreSQL database shared by several processes (`postgres://user:password@host/db`);
    /// better given as BYTE8_DATABASE_URL (a command line is visible in `ps`), or `-` to read it
    /// from stdin.
    #[arg(long, env = DATABASE_URL_ENV, hide_env_values = true)]
    pub database_url: Option<SecretArg>,
}

/// The lock one process holds on an SQLite state file while it writes it (`serve`, `sync`,
/// `connect`): an advisory lock on the sidecar `FILE.lock`, which names the holder (its pid and
/// command) for the next process that tries. The operating system releases it when the process
/// ends, however it ends.
///
/// One writer per file is what makes a token refresh single-flight across processes on SQLite
/// (PostgreSQL serialises refreshes with an advisory lock of its own), and what lets `sync` take
/// back the runs a dead process left running.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: std::fs::File,
}

/// The sidecar lock file of `state`.
pub(crate) fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of `state` for `command`.
///
/// # Errors
/// A [`Failure`] naming the holder (pid and command) when another process holds it.
pub(crate) fn lock_state(state: &Path, command: &str) -> Result<StateLock, Failure> {
    let path = lock_path(state);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Failure { code: 1, message: format!("cannot open the lock file {}: {e}", path.display()) })?;
    if file.try_lock().is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let holder = if holder.is_empty() { "another byte8-ledger process".to_owned() } else { holder.to_owned() };
        return Err(Failure {
            code: 1,
            message: format!(
                "{} is in use by {holder} (lock {}): one process at a time writes an SQLite state file; stop it \
                 first, or use PostgreSQL (BYTE8_DATABASE_URL) for several processes",
                state.display(),
                path.display()
            ),
        });
    }
    let record = format!("byte8-ledger {command} (pid {})\n", std::process::id());
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(record.as_bytes()))
        .and_then(|()| file.flush());
    if let Err(e) = written {
        tracing::warn!(lock = %path.display(), error = %e, "cannot record the lock's holder");
    }
    Ok(StateLock { _file: file })
}

/// An opened store.
pub(crate) enum Database {
    Sqlite(Arc<SqliteStore>, PathBuf),
    Postgres(Arc<PostgresStore>),
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(_, path) => write!(f, "{} (SQLite)", path.display()),
            // Never the URL: it may hold a password.
            Self::Postgres(_) => f.write_str("the PostgreSQL database"),
        }
    }
}

impl Database {
    /// Opens (and migrates) the store; `key` encrypts tokens and api keys.
    pub(crate) async fn open(args: &StoreArgs, key: Option<MasterKey>) -> Result<Self, Failure> {
        match (&args.state, &args.database_url) {
            (Some(path), None) => Ok(Self::Sqlite(Arc::new(SqliteStore::open(path, key).await?), path.clone())),
            (None, Some(url)) => {
                let url = url.resolve("--database-url")?;
                Ok(Self::Postgres(Arc::new(PostgresStore::connect(url.expose_secret(), key).await?)))
            }
            _ => Err(usage("give either --state FILE or --database-url URL (BYTE8_DATABASE_URL)")),
        }
    }

    /// As [`open`](Self::open) for a command that writes the store (`serve`, `sync`, `connect`):
    /// an SQLite file is locked first, for as long as the returned lock is kept.
    pub(crate) async fn open_locked(
        args: &StoreArgs,
        key: Option<MasterKey>,
        command: &str,
    ) -> Result<(Self, Option<StateLock>), Failure> {
        let lock = args.state.as_deref().map(|path| lock_state(path, command)).transpose()?;
        Ok((Self::open(args, key).await?, lock))
    }

    /// The runs, cross-references and connections the engine and `status` work on.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s, _) => Arc::clone(s) as Arc<dyn Store>,
            Self::Postgres(s) => Arc::clone(s) as Arc<dyn Store>,
        }
    }

    pub(crate) fn service(&self) -> Arc<dyn ServiceStore> {
        match self {
            Self::Sqlite(s, _) => Arc::clone(s) as Arc<dyn ServiceStore>,
            Self::Postgres(s) => Arc::clone(s) as Arc<dyn ServiceStore>,
        }
    }

    /// The console's operators, sessions and policy history.
    pub(crate) fn console(&self) -> Arc<dyn ConsoleStore> {
        match self {
            Self::Sqlite(s, _) => Arc::clone(s) as Arc<dyn ConsoleStore>,
            Self::Postgres(s) => Arc::clone(s) as Arc<dyn ConsoleStore>,
        }
    }

    pub(crate) fn connections(&self) -> Arc<dyn ConnectionStoreDyn> {
        match self {
            Self::Sqlite(s, _) => Arc::clone(s) as Arc<dyn ConnectionStoreDyn>,
            Self::Postgres(s) => Arc::clone(s) as Arc<dyn ConnectionStoreDyn>,
        }
    }

    /// The service's providers, Sage or Xero as each business's stored connection says. On
    /// PostgreSQL each Sage business's rate limit is shared by every worker process (on SQLite,
    /// one process, each provider paces itself with `rate`); Xero providers keep Xero's limits in
    /// the process ([`byte8_ledger_service::XeroProviders`]).
    pub(crate) fn providers(&self, rate: RateConfig) -> StoredProviders {
        let sage = SageProviders::new(self.connections());
        let sage = match self {
            Self::Sqlite(..) => sage.with_rate_limiter(move |_| RateLimiter::new(rate)),
            Self::Postgres(pg) => {
                let pg = Arc::clone(pg);
                sage.with_rate_limiter(move |business| pg.rate_limiter(business, rate).into_rate_limiter())
            }
        };
        StoredProviders::new(self.connections()).with_sage(sage)
    }

    /// The provider of one stored connection, for a command that posts (`sync`, `connect`,
    /// `reference --refresh`). On PostgreSQL a Sage business's requests count against the
    /// limiter its database shares with every `serve` worker and every other command on it
    /// ([`providers`](Self::providers)), so that a back-fill run beside the service keeps the
    /// business under Sage's limit together with it; on SQLite (one process) the provider paces
    /// itself, as `SAGE_REQUESTS_PER_MINUTE` says.
    ///
    /// # Errors
    /// A usage [`Failure`] for a connection this build cannot serve or a bad
    /// `SAGE_REQUESTS_PER_MINUTE`.
    pub(crate) fn provider_for(&self, c: &Connection) -> Result<Arc<dyn AccountingProvider>, Failure> {
        let providers = match self {
            Self::Sqlite(..) => StoredProviders::new(self.connections()),
            Self::Postgres(_) => self.providers(rate_from_env()?),
        };
        providers.for_connection(c).map_err(|e| usage(e.to_string()))
    }
}

/// The Sage rate limit from `SAGE_REQUESTS_PER_MINUTE` (200 when unset; 0: none).
pub(crate) fn rate_from_env() -> Result<RateConfig, Failure> {
    let mut rate = RateConfig::default();
    if let Ok(text) = std::env::var("SAGE_REQUESTS_PER_MINUTE") {
        rate.requests_per_minute = text
            .trim()
            .parse()
            .map_err(|_| usage(format!("SAGE_REQUESTS_PER_MINUTE: `{text}` is not a whole number")))?;
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn a_second_lock_of_a_state_file_names_the_holder_and_the_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        assert_eq!(lock_path(&state), dir.path().join("state.db.lock"));
        let held = lock_state(&state, "serve").unwrap();
        let refused = lock_state(&state, "sync").unwrap_err();
        let holder = format!("byte8-ledger serve (pid {})", std::process::id());
        assert!(refused.message.contains(&holder), "{}", refused.message);
        assert!(refused.message.contains("state.db"), "{}", refused.message);
        drop(held);
        let again = lock_state(&state, "connect").unwrap();
        let recorded = std::fs::read_to_string(lock_path(&state)).unwrap();
        assert_eq!(recorded, format!("byte8-ledger connect (pid {})\n", std::process::id()));
        drop(again);
    }

    #[test]
    fn a_refresh_token_or_database_url_given_on_the_line_never_shows_in_debug() {
        let cli = Cli::try_parse_from([
            "byte8-ledger",
            "connect",
            "--database-url",
            "postgres://byte8:pa55w0rd@db/byte8",
            "--business-id",
            "b",
            "--refresh-token",
            "refresh-SECRET-token",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(shown.contains("Connect"), "{shown}");
        assert!(!shown.contains("pa55w0rd") && !shown.contains("SECRET"), "{shown}");
    }
}
