//! `--state FILE | --database-url URL`: the store a command works on.

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc};

use secrecy::{ExposeSecret, SecretString};

use super::{Failure, usage};
use crate::{
    http::{RateConfig, RateLimiter},
    service::{SageProviders, StoredProviders},
    store::{
        ConnectionStoreDyn, crypto::MasterKey, postgres::PostgresStore, service::ServiceStore, sqlite::SqliteStore,
    },
};

/// A command-line value that is a secret (a database URL with its password, a pairing code):
/// never shown by `Debug`.
#[derive(Clone)]
pub struct SecretArg(SecretString);

impl SecretArg {
    /// The value.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
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

/// Where the state lives: an SQLite file (one process) or a PostgreSQL database (several).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The state database: an SQLite file, created on first use (one process).
    #[arg(long, conflicts_with = "database_url", required_unless_present = "database_url")]
    pub state: Option<PathBuf>,
    /// A PostgreSQL database shared by several processes (`postgres://user:password@host/db`).
    #[arg(long)]
    pub database_url: Option<SecretArg>,
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
            (None, Some(url)) => Ok(Self::Postgres(Arc::new(PostgresStore::connect(url.expose_secret(), key).await?))),
            _ => Err(usage("give either --state FILE or --database-url URL")),
        }
    }

    pub(crate) fn service(&self) -> Arc<dyn ServiceStore> {
        match self {
            Self::Sqlite(s, _) => Arc::clone(s) as Arc<dyn ServiceStore>,
            Self::Postgres(s) => Arc::clone(s) as Arc<dyn ServiceStore>,
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
    /// the process ([`crate::service::XeroProviders`]).
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
