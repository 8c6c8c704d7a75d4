//! Xero's error answers → [`crate::Error`] (xero-api.md 7).
//!
//! | status | class |
//! |---|---|
//! | 400 `ValidationException` (`ErrorNumber` 10) | `validation`, every `Elements[].ValidationErrors[].Message` kept |
//! | 400 other (`NoDataProcessedException`, `PostDataInvalidException`) | `validation` with Xero's `Message` |
//! | 401 (`TokenExpired`, `AuthorizationUnsuccessful`) | `auth`: the caller refreshes once, then gives up |
//! | 403 `AuthenticationUnsuccessful` | `auth`: the organisation is not connected for this token (Q21) |
//! | 404 (plain text) | `not_found` |
//! | 429 with `X-Rate-Limit-Problem: day` | deferred until `Retry-After` (never a failure) |
//! | 429 otherwise | `rate_limited` with `Retry-After` |
//! | 5xx | `provider`, retryable |
//!
//! Xero's message for a taken contact number does not say "reference": it is annotated so that
//! the provider-neutral [`crate::providers::is_reference_taken`] recognises it.

use std::time::Duration;

use serde::Deserialize;

use super::PROVIDER;
use crate::error::{AuthFailure, Error, ProviderFieldError};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct XeroError {
    error_number: Option<i64>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    message: Option<String>,
    detail: Option<String>,
    title: Option<String>,
    elements: Vec<serde_json::Value>,
}

/// Annotates a validation message the crate acts on (see the module docs).
pub fn annotate(message: &str) -> ProviderFieldError {
    let lower = message.to_lowercase();
    let (field, message) =
        if lower.contains("contact number") && (lower.contains("another contact") || lower.contains("unique")) {
            ("reference (ContactNumber)".to_owned(), format!("{message} (the reference is already taken)"))
        } else if lower.contains("contact name") && lower.contains("already assigned") {
            ("Name".to_owned(), message.to_owned())
        } else {
            (String::new(), message.to_owned())
        };
    ProviderFieldError { code: "ValidationException".into(), field, message }
}

/// The messages of one element's `ValidationErrors`.
pub fn element_messages(element: &serde_json::Value) -> Vec<String> {
    element
        .get("ValidationErrors")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter().filter_map(|e| e.get("Message").and_then(serde_json::Value::as_str)).map(str::to_owned).collect()
        })
        .unwrap_or_default()
}

/// Parses Xero's error body into field errors (the `ValidationException` envelope, a `Detail`
/// object, or plain text).
pub fn parse_errors(body: &[u8]) -> Vec<ProviderFieldError> {
    if let Ok(e) = serde_json::from_slice::<XeroError>(body) {
        let mut out: Vec<ProviderFieldError> =
            e.elements.iter().flat_map(element_messages).map(|m| annotate(&m)).collect();
        if out.is_empty() {
            let text = e.message.or(e.detail).or(e.title).unwrap_or_default();
            if !text.is_empty() {
                out.push(ProviderFieldError {
                    code: e.kind.unwrap_or_else(|| e.error_number.map(|n| n.to_string()).unwrap_or_default()),
                    field: String::new(),
                    message: text,
                });
            }
        }
        if !out.is_empty() {
            // Xero's own fields only, each on one short line.
            for e in &mut out {
                e.message = crate::http::sanitise(&e.message, 300);
                e.code = crate::http::sanitise(&e.code, 100);
            }
            return out;
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    // Not Xero's JSON (a proxy's or a gateway's page): described by its size, never quoted,
    // since the message reaches outcomes and the tenant's status.
    vec![ProviderFieldError {
        code: String::new(),
        field: String::new(),
        message: format!("an answer of {} bytes that is not Xero's error JSON (not quoted)", body.len()),
    }]
}

/// Maps an error answer to the crate's error. `rate_problem` is `X-Rate-Limit-Problem`.
pub fn from_status(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    rate_problem: Option<&str>,
    what: &str,
) -> Error {
    let errors = parse_errors(body);
    let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    match status {
        401 => Error::Auth {
            provider: PROVIDER,
            reason: AuthFailure::TokenRejected,
            message: format!("{what}: Xero refused the access token ({text})"),
        },
        403 => Error::Auth {
            provider: PROVIDER,
            reason: AuthFailure::AccessDenied,
            message: format!(
                "{what}: Xero refused access to the organisation ({text}): the organisation is not connected for this user or a scope is missing; reconnect with `byte8-ledger connect --provider xero`"
            ),
        },
        404 => Error::NotFound {
            what: format!("Xero {what}"),
            id: if text.is_empty() { "(no detail)".into() } else { text },
        },
        429 if rate_problem.is_some_and(|p| p.eq_ignore_ascii_case("day")) => Error::Deferred {
            provider: PROVIDER,
            message: format!(
                "Xero's daily call limit for this organisation is spent (X-Rate-Limit-Problem: day, {what})"
            ),
            retry_after: retry_after.unwrap_or(Duration::from_secs(3600)),
        },
        429 => Error::RateLimited { provider: PROVIDER, retry_after },
        s if s >= 500 => Error::Provider {
            provider: PROVIDER,
            status: Some(s),
            message: format!("{what}: {}", if text.is_empty() { "no detail".to_owned() } else { text }),
            retryable: true,
            source: None,
        },
        s => Error::Rejected { provider: PROVIDER, status: s, errors },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_foreign_body_is_described_never_quoted() {
        let html = b"<html><body>gateway at 10.0.0.7 says no</body></html>";
        let e = from_status(502, html, None, None, "GET /Invoices");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("10.0.0.7") && !text.contains("<html"), "{text}");
        assert!(text.contains(&format!("{} bytes", html.len())), "{text}");
        let multi = br#"{"Type":"X","Message":"first\nsecond"}"#;
        assert_eq!(parse_errors(multi)[0].message, "first second");
    }

    #[test]
    fn validation_exception_keeps_every_element_message() {
        let body = br#"{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred",
            "Elements":[{"ValidationErrors":[{"Message":"Invoice # must be unique."}]},
                        {"ValidationErrors":[{"Message":"Account code must be specified"},{"Message":"The TaxType field is mandatory"}]}]}"#;
        let e = from_status(400, body, None, None, "PUT /Invoices");
        match &e {
            Error::Rejected { status: 400, errors, .. } => {
                let messages: Vec<&str> = errors.iter().map(|f| f.message.as_str()).collect();
                assert_eq!(
                    messages,
                    ["Invoice # must be unique.", "Account code must be specified", "The TaxType field is mandatory"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.code(), ErrorCode::Validation);
    }

    #[test]
    fn a_taken_contact_number_reads_as_a_taken_reference() {
        let body = br#"{"ErrorNumber":10,"Type":"ValidationException","Elements":[{"ValidationErrors":[{"Message":"Another contact has this contact number"}]}]}"#;
        let e = from_status(400, body, None, None, "PUT /Contacts");
        assert!(crate::providers::is_reference_taken(&e), "{e}");
    }

    #[test]
    fn statuses_map_to_classes() {
        assert_eq!(from_status(401, br#"{"Detail":"TokenExpired"}"#, None, None, "x").code(), ErrorCode::Auth);
        let forbidden = from_status(403, br#"{"Detail":"AuthenticationUnsuccessful"}"#, None, None, "x");
        assert!(matches!(forbidden, Error::Auth { reason: AuthFailure::AccessDenied, .. }));
        assert_eq!(
            from_status(404, b"The resource you're looking for cannot be found", None, None, "x").code(),
            ErrorCode::NotFound
        );
        let minute = from_status(429, b"", Some(Duration::from_secs(7)), Some("minute"), "x");
        assert!(matches!(minute, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
        let day = from_status(429, b"", Some(Duration::from_secs(66_975)), Some("day"), "x");
        assert!(day.is_deferred() && day.retry_after() == Some(Duration::from_secs(66_975)), "{day:?}");
        let boom = from_status(503, b"", None, None, "x");
        assert!(boom.is_retryable() && boom.outcome_unknown());
    }
}
