//! The crate's one public error type and the failure classes of the contract.
//!
//! Every fallible function of the crate returns [`Error`]. Callers decide what to do from three
//! questions the error answers without string matching:
//!
//! - [`Error::code`]: the contract's `error_code` class (`auth`, `validation`, ...), which is what
//!   an outcome line and the Magento sync-state callback carry;
//! - [`Error::is_retryable`]: whether the same work may succeed later unchanged;
//! - [`Error::retry_after`]: how long the provider asked us to wait, when it said so.
//!
//! Messages name the field and the rule (`entity.lines[2].qty: must be > 0`) and never contain a
//! secret: tokens, keys and passwords are `secrecy` types that cannot reach a message.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error cause, kept so that `Error::source()` chains stay unbroken.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The failure classes of the contract (`error_code` in an outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Credentials missing, expired beyond refresh, revoked, or a subscription that lapsed.
    Auth,
    /// Something the work depends on does not exist (in Magento, the store or the ledger).
    NotFound,
    /// The input or the request is wrong and will stay wrong until someone changes it.
    Validation,
    /// The provider throttled us and the retries of this run did not get through.
    RateLimited,
    /// The provider failed (5xx) or answered something we could not use.
    Provider,
    /// The network failed: connection refused, reset, timed out.
    Http,
    /// The local store failed.
    Database,
    /// A document could not be read (bad JSON, missing or mistyped field).
    Serde,
    /// A bug in this crate: an invariant it checks itself did not hold.
    Internal,
}

impl ErrorCode {
    /// The wire spelling (`"rate_limited"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::Validation => "validation",
            Self::RateLimited => "rate_limited",
            Self::Provider => "provider",
            Self::Http => "http",
            Self::Database => "database",
            Self::Serde => "serde",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one field: where it is and which rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field path, e.g. `entity.lines[2].qty` or `b2c_consolidation.fallback_contact_email`.
    pub path: String,
    /// The rule, e.g. `must be > 0`.
    pub rule: String,
}

impl FieldError {
    /// A field error at `path` breaking `rule`.
    pub fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        Self { path: path.into(), rule: rule.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.rule) } else { write!(f, "{}: {}", self.path, self.rule) }
    }
}

/// Why an authorisation failed; decides whether refreshing can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthFailure {
    /// No connection (tokens) is stored for this business.
    NotConnected,
    /// The refresh token was refused (`invalid_grant`): the user must reconnect.
    ReconnectRequired,
    /// The ledger subscription lapsed (Sage's "No active subscription"): refreshing never helps.
    SubscriptionInactive,
    /// The access token was refused although it was fresh; refreshing once may help.
    TokenRejected,
    /// The user may not do this in this business.
    AccessDenied,
    /// An inbound credential (a webhook JWT) is invalid.
    InvalidCredential,
}

/// A field-level error reported by a provider (Sage's `$source` / `$message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderFieldError {
    /// The provider's machine code (Sage `$dataCode`, e.g. `RecordInvalid`).
    pub code: String,
    /// The field the provider blamed (Sage `$source`), empty when it named none.
    pub field: String,
    /// The provider's message.
    pub message: String,
}

impl fmt::Display for ProviderFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.field.is_empty(), self.code.is_empty()) {
            (true, true) => f.write_str(&self.message),
            (true, false) => write!(f, "[{}] {}", self.code, self.message),
            (false, true) => write!(f, "{}: {}", self.field, self.message),
            (false, false) => write!(f, "[{}] {}: {}", self.code, self.field, self.message),
        }
    }
}

/// The crate's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A document could not be read: bad JSON, a missing or mistyped field.
    #[error("cannot read {what}: {}", join(errors))]
    Parse {
        /// What was being read (`event`, `policy`, `Sage response`).
        what: &'static str,
        /// Every problem found, each with its field path.
        errors: Vec<FieldError>,
    },
    /// A document was read but breaks a rule (values, arithmetic, references).
    #[error("invalid {what}: {}", join(errors))]
    Invalid {
        /// What was checked (`invoice`, `policy`, `credit memo`).
        what: &'static str,
        /// Every broken rule, each with its field path.
        errors: Vec<FieldError>,
    },
    /// The crate was configured wrongly (a builder, a command-line flag, an environment variable).
    #[error("configuration: {field}: {message}")]
    Config {
        /// The setting.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Authorisation failed.
    #[error("{provider}: authorisation failed ({reason:?}): {message}")]
    Auth {
        /// The provider or peer (`sage_accounting`, `magento`).
        provider: &'static str,
        /// Why; decides whether a refresh can help.
        reason: AuthFailure,
        /// What the operator should do.
        message: String,
    },
    /// Something the work depends on does not exist.
    #[error("{what} not found: {id}")]
    NotFound {
        /// The kind of thing (`Sage invoice`, `reference data tax rate`).
        what: String,
        /// Its id or reference.
        id: String,
    },
    /// The provider refused the request as invalid (4xx other than auth and rate limits).
    #[error("{provider} rejected the request (HTTP {status}): {}", join(errors))]
    Rejected {
        /// The provider.
        provider: &'static str,
        /// The HTTP status.
        status: u16,
        /// The provider's own field errors, parsed.
        errors: Vec<ProviderFieldError>,
    },
    /// The provider throttled us.
    #[error("rate limited by {provider}{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        /// The provider.
        provider: &'static str,
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The provider failed or is unavailable (5xx, or an answer we could not use).
    #[error("{provider} failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Provider {
        /// The provider.
        provider: &'static str,
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// What happened.
        message: String,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// The network failed.
    #[error("{provider}: network error{}: {message}", if *outcome_unknown { " (the request may have been applied)" } else { "" })]
    Http {
        /// The provider or peer.
        provider: &'static str,
        /// What happened (never the URL of a request that carries a token).
        message: String,
        /// True when the request was sent and its effect is unknown (a timeout after sending).
        outcome_unknown: bool,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// The provider cannot do this at all (or not on this business's subscription).
    #[error("{operation} is not supported by {provider}")]
    Unsupported {
        /// The operation (`stock movements`).
        operation: String,
        /// The provider.
        provider: &'static str,
    },
    /// The local store failed.
    #[error("store: {message}")]
    Database {
        /// What failed.
        message: String,
        /// Whether retrying may help (a busy or locked database).
        retryable: bool,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// Something the work depends on is not there yet (an `invoice.paid` whose invoice has not
    /// reached the ledger): the work waits and is retried, it does not fail for good.
    #[error("waiting for {what}: {message}")]
    Pending {
        /// What is awaited.
        what: String,
        /// What the error is, for an operator to read.
        message: String,
    },
    /// The work must wait for a budget to come back (a ledger's daily call allowance is spent):
    /// it stays in line until `retry_after` has passed and is never dead-lettered for it.
    #[error("deferred by {provider}: {message} (waits in line {}s)", retry_after.as_secs())]
    Deferred {
        /// The provider.
        provider: &'static str,
        /// Why, in words an operator can act on.
        message: String,
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// An invariant this crate checks itself did not hold: a bug, reported instead of posting.
    #[error("internal error: {message}")]
    Internal {
        /// What did not hold.
        message: String,
    },
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// A single-field parse error.
    pub fn parse(what: &'static str, path: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Parse { what, errors: vec![FieldError::new(path, rule)] }
    }

    /// A single-field validation error.
    pub fn invalid(what: &'static str, path: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid { what, errors: vec![FieldError::new(path, rule)] }
    }

    /// A configuration error.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { field: field.into(), message: message.into() }
    }

    /// An internal invariant failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal { message: message.into() }
    }

    /// A store failure.
    pub fn database(message: impl Into<String>, retryable: bool, source: Option<BoxError>) -> Self {
        Self::Database { message: message.into(), retryable, source }
    }

    /// The contract's failure class.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Parse { .. } => ErrorCode::Serde,
            Self::Invalid { .. } | Self::Config { .. } | Self::Rejected { .. } | Self::Unsupported { .. } => {
                ErrorCode::Validation
            }
            Self::Auth { .. } => ErrorCode::Auth,
            Self::NotFound { .. } | Self::Pending { .. } => ErrorCode::NotFound,
            Self::RateLimited { .. } | Self::Deferred { .. } => ErrorCode::RateLimited,
            Self::Provider { .. } => ErrorCode::Provider,
            Self::Http { .. } => ErrorCode::Http,
            Self::Database { .. } => ErrorCode::Database,
            Self::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// Whether the same work may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Http { .. } | Self::Pending { .. } | Self::Deferred { .. } => true,
            Self::Provider { retryable, .. } | Self::Database { retryable, .. } => *retryable,
            Self::Auth { reason, .. } => matches!(reason, AuthFailure::TokenRejected),
            _ => false,
        }
    }

    /// How long the provider asked us to wait, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::Deferred { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// True when the work waits for a budget (a daily call allowance) rather than failing: it is
    /// retried after [`retry_after`](Self::retry_after) however many attempts it took.
    pub fn is_deferred(&self) -> bool {
        matches!(self, Self::Deferred { .. })
    }

    /// True when a write was sent and its effect is unknown: the caller must look the document
    /// up before writing again.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Http { outcome_unknown, .. } => *outcome_unknown,
            // A 5xx after sending: the provider may have committed before failing.
            Self::Provider { status: Some(s), .. } => *s >= 500,
            _ => false,
        }
    }

    /// An equivalent error for another item of a batch that failed as a whole: the same variant,
    /// class, retry behaviour and message (the boxed cause, which cannot be cloned, is left out).
    pub fn copy(&self) -> Self {
        match self {
            Self::Parse { what, errors } => Self::Parse { what, errors: errors.clone() },
            Self::Invalid { what, errors } => Self::Invalid { what, errors: errors.clone() },
            Self::Config { field, message } => Self::Config { field: field.clone(), message: message.clone() },
            Self::Auth { provider, reason, message } => {
                Self::Auth { provider, reason: *reason, message: message.clone() }
            }
            Self::NotFound { what, id } => Self::NotFound { what: what.clone(), id: id.clone() },
            Self::Rejected { provider, status, errors } => {
                Self::Rejected { provider, status: *status, errors: errors.clone() }
            }
            Self::RateLimited { provider, retry_after } => Self::RateLimited { provider, retry_after: *retry_after },
            Self::Provider { provider, status, message, retryable, .. } => Self::Provider {
                provider,
                status: *status,
                message: message.clone(),
                retryable: *retryable,
                source: None,
            },
            Self::Http { provider, message, outcome_unknown, .. } => {
                Self::Http { provider, message: message.clone(), outcome_unknown: *outcome_unknown, source: None }
            }
            Self::Unsupported { operation, provider } => Self::Unsupported { operation: operation.clone(), provider },
            Self::Database { message, retryable, .. } => {
                Self::Database { message: message.clone(), retryable: *retryable, source: None }
            }
            Self::Pending { what, message } => Self::Pending { what: what.clone(), message: message.clone() },
            Self::Deferred { provider, message, retry_after } => {
                Self::Deferred { provider, message: message.clone(), retry_after: *retry_after }
            }
            Self::Internal { message } => Self::Internal { message: message.clone() },
        }
    }

    /// The field errors carried by a parse or validation error (empty for the other kinds).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Parse { errors, .. } | Self::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }

    /// The same error with every field path prefixed by `prefix` (`entity`, `lines[2]`).
    #[must_use]
    pub fn at(mut self, prefix: &str) -> Self {
        if let Self::Parse { errors, .. } | Self::Invalid { errors, .. } = &mut self {
            for e in errors {
                e.path = join_path(prefix, &e.path);
            }
        }
        self
    }
}

/// Joins two field-path segments (`entity` + `lines[2].qty` → `entity.lines[2].qty`).
pub(crate) fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Collects field errors while checking a document, so that one run reports all of them.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    errors: Vec<FieldError>,
}

impl Problems {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&mut self, path: impl Into<String>, rule: impl Into<String>) {
        self.errors.push(FieldError::new(path, rule));
    }

    pub(crate) fn extend(&mut self, prefix: &str, err: Error) {
        match err {
            Error::Parse { errors, .. } | Error::Invalid { errors, .. } => {
                for e in errors {
                    self.errors.push(FieldError::new(join_path(prefix, &e.path), e.rule));
                }
            }
            other => self.errors.push(FieldError::new(prefix, other.to_string())),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn into_result(self, what: &'static str) -> Result<()> {
        if self.errors.is_empty() { Ok(()) } else { Err(Error::Invalid { what, errors: self.errors }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_contract_spelling() {
        let all = [
            (ErrorCode::Auth, "auth"),
            (ErrorCode::NotFound, "not_found"),
            (ErrorCode::Validation, "validation"),
            (ErrorCode::RateLimited, "rate_limited"),
            (ErrorCode::Provider, "provider"),
            (ErrorCode::Http, "http"),
            (ErrorCode::Database, "database"),
            (ErrorCode::Serde, "serde"),
            (ErrorCode::Internal, "internal"),
        ];
        for (code, text) in all {
            assert_eq!(code.as_str(), text);
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{text}\""));
        }
    }

    #[test]
    fn messages_name_field_and_rule() {
        let e = Error::invalid("invoice", "lines[2].qty", "must be > 0").at("entity");
        assert_eq!(e.to_string(), "invalid invoice: entity.lines[2].qty: must be > 0");
        assert_eq!(e.code(), ErrorCode::Validation);
        assert!(!e.is_retryable());
    }

    #[test]
    fn retry_classification() {
        let rl = Error::RateLimited { provider: "sage_accounting", retry_after: Some(Duration::from_secs(3)) };
        assert!(rl.is_retryable());
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(3)));
        let auth =
            Error::Auth { provider: "sage_accounting", reason: AuthFailure::SubscriptionInactive, message: "x".into() };
        assert!(!auth.is_retryable());
        let p500 = Error::Provider {
            provider: "sage_accounting",
            status: Some(500),
            message: "boom".into(),
            retryable: true,
            source: None,
        };
        assert!(p500.is_retryable() && p500.outcome_unknown());
        let deferred = Error::Deferred {
            provider: "xero",
            message: "daily budget spent".into(),
            retry_after: Duration::from_secs(3600),
        };
        assert!(deferred.is_retryable() && deferred.is_deferred());
        assert_eq!(deferred.code(), ErrorCode::RateLimited);
        assert_eq!(deferred.retry_after(), Some(Duration::from_secs(3600)));
        let rejected = Error::Rejected { provider: "sage_accounting", status: 422, errors: vec![] };
        assert!(!rejected.is_retryable() && !rejected.outcome_unknown());
    }

    #[test]
    fn join_path_handles_indexes() {
        assert_eq!(join_path("entity", "lines[1].qty"), "entity.lines[1].qty");
        assert_eq!(join_path("lines", "[1]"), "lines[1]");
        assert_eq!(join_path("", "x"), "x");
        assert_eq!(join_path("x", ""), "x");
    }
}
