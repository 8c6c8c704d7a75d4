//! Sage's error answers → [`crate::Error`].
//!
//! Sage answers errors as a JSON array of `{"$severity", "$dataCode", "$message", "$source"}`
//! (sage-api.md 3.4). The status decides the class first, then the body refines it:
//!
//! | status | class |
//! |---|---|
//! | 401 with `AuthorizationFailure` "No active subscription" | `auth` (subscription inactive: never refreshed, Q23); when the business answered other requests before, the endpoint is outside its edition (R5) |
//! | 401 otherwise | `auth` (the caller refreshes once, then gives up) |
//! | 403 `MultiUserAccessDenied` | `auth` (access denied: the connected user's role lacks the right, R4) |
//! | 403 otherwise | `auth` (access denied) |
//! | 404 | `not_found` |
//! | 429 | `rate_limited` with `Retry-After` |
//! | 5xx (525 included: Sage's edge could not reach its origin) | `provider`, retryable |
//! | other 4xx | `validation`, with every `$source` / `$message` kept |
//!
//! Sage reports many unrelated validation failures as `line_items.description` ("This field is
//! required", Byte8's quirk §20, Q3). When it does, the message says so, so that an operator looks
//! at totals, rates and entities rather than at descriptions that are present.

use std::time::Duration;

use super::{PROVIDER, model::SageErrorItem};
use crate::error::{AuthFailure, Error, ProviderFieldError};

/// The most of one of Sage's error fields an error message carries.
const MAX_FIELD: usize = 300;

/// Parses Sage's error body into field errors (an array or a single object of Sage's error
/// fields). Only those known fields are kept, each made one line and cut to `MAX_FIELD` (300)
/// characters; any other body (a proxy's HTML page, plain text) is described by its size and
/// never quoted, so nothing foreign reaches an outcome or `/v1/status`.
pub fn parse_errors(body: &[u8]) -> Vec<ProviderFieldError> {
    let clean = |text: Option<String>| text.map(|t| crate::http::sanitise(&t, MAX_FIELD)).unwrap_or_default();
    let to_field = |e: SageErrorItem| ProviderFieldError {
        code: clean(e.data_code),
        field: clean(e.source),
        message: clean(e.message),
    };
    if let Ok(items) = serde_json::from_slice::<Vec<SageErrorItem>>(body) {
        return items.into_iter().map(to_field).collect();
    }
    if let Ok(item) = serde_json::from_slice::<SageErrorItem>(body)
        && (item.message.is_some() || item.data_code.is_some())
    {
        return vec![to_field(item)];
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    vec![ProviderFieldError {
        code: String::new(),
        field: String::new(),
        message: format!("an answer of {} bytes that is not Sage's error JSON (not quoted)", body.len()),
    }]
}

fn annotate_umbrella(errors: &mut [ProviderFieldError]) {
    for e in errors {
        let f = e.field.to_lowercase();
        if (f.ends_with("line_items.description")
            || f.ends_with("invoice_lines.description")
            || f.ends_with("credit_note_lines.description"))
            && e.message.to_lowercase().contains("required")
        {
            e.message.push_str(
                " (Sage reports many unrelated failures this way — a broken totals invariant, a rate that does not fit the tax, an HTML entity — while every line of this request has a description)",
            );
        }
    }
}

/// True for Sage's "No active subscription" 401 (sage-api.md Q23).
pub fn is_subscription_lapse(errors: &[ProviderFieldError]) -> bool {
    errors.iter().any(|e| e.message.to_lowercase().contains("no active subscription"))
}

/// The error of a failed Sage answer, for a business not known to have answered before.
pub fn from_status(status: u16, body: &[u8], retry_after: Option<Duration>, what: &str) -> Error {
    from_status_seen(status, body, retry_after, what, false)
}

/// True when Sage said the connected user's role lacks the right (`MultiUserAccessDenied`).
pub fn is_role_denied(errors: &[ProviderFieldError]) -> bool {
    errors.iter().any(|e| e.code.eq_ignore_ascii_case("MultiUserAccessDenied"))
}

/// The error of a failed Sage answer. `answered_before` says whether the same business answered
/// another request successfully before: Sage answers 401 "No active subscription" both for a
/// lapsed subscription and for an endpoint outside the business's edition (a production client
/// maps it to "Incompatible Edition to use endpoint", `tests/fixtures/sage-real/SOURCES.md`), and
/// only the second leaves other endpoints working.
pub fn from_status_seen(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    what: &str,
    answered_before: bool,
) -> Error {
    let mut errors = parse_errors(body);
    match status {
        401 if is_subscription_lapse(&errors) && answered_before => Error::Auth {
            provider: PROVIDER,
            reason: AuthFailure::SubscriptionInactive,
            message: format!(
                "Sage answered \"No active subscription\" for {what} while other requests of this business succeed: this endpoint is outside the business's Sage edition (stock needs Accounting Plus; products, services, allocations and foreign currencies need Standard or Plus); upgrade the Sage subscription or turn off what needs it in the policy — refreshing the token cannot help"
            ),
        },
        401 if is_subscription_lapse(&errors) => Error::Auth {
            provider: PROVIDER,
            reason: AuthFailure::SubscriptionInactive,
            message: format!(
                "Sage answered \"No active subscription\" for {what}: the business's subscription or trial lapsed, or this endpoint is outside its Sage edition; renew or upgrade the subscription in Sage — refreshing the token cannot help"
            ),
        },
        401 => Error::Auth {
            provider: PROVIDER,
            reason: AuthFailure::TokenRejected,
            message: format!("Sage refused the access token for {what}{}", summary(&errors)),
        },
        403 if is_role_denied(&errors) => Error::Auth {
            provider: PROVIDER,
            reason: AuthFailure::AccessDenied,
            message: format!(
                "Sage refused {what} because the connected Sage user's role does not allow it{}; in Sage (Settings › Manage users) give that user full access to this area, or reconnect as a user who has it (the business owner) — refreshing or retrying cannot help",
                summary(&errors)
            ),
        },
        403 => Error::Auth {
            provider: PROVIDER,
            reason: AuthFailure::AccessDenied,
            message: format!("Sage denied access to {what}{}", summary(&errors)),
        },
        404 => {
            Error::NotFound { what: format!("Sage {what}"), id: summary(&errors).trim_start_matches(": ").to_owned() }
        }
        429 => Error::RateLimited { provider: PROVIDER, retry_after },
        s if s >= 500 => Error::Provider {
            provider: PROVIDER,
            status: Some(s),
            message: format!("Sage failed on {what}{}", summary(&errors)),
            retryable: true,
            source: None,
        },
        s => {
            annotate_umbrella(&mut errors);
            annotate_tax_rate(&mut errors);
            Error::Rejected { provider: PROVIDER, status: s, errors }
        }
    }
}

/// Sage's 422 on `line_items.tax_rate_id` ("This field is required.", seen by the Olsgreen PHP
/// client): the crate always sends a rate, so the rate it sent is not one Sage accepts here.
fn annotate_tax_rate(errors: &mut [ProviderFieldError]) {
    for e in errors {
        let f = e.field.to_lowercase();
        if f.ends_with("line_items.tax_rate_id")
            || f.ends_with("invoice_lines.tax_rate_id")
            || f.ends_with("credit_note_lines.tax_rate_id")
        {
            e.message.push_str(
                " (Sage did not accept the line's tax rate: check default_tax_rate_id and tax_rate_map against the business's tax rates, `byte8-ledger reference`)",
            );
        }
    }
}

fn summary(errors: &[ProviderFieldError]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_foreign_body_is_described_never_quoted_and_known_fields_are_one_short_line() {
        let html = b"<html><body>internal-admin.local secret=abc</body></html>";
        let e = from_status(525, html, None, "GET /contacts");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("internal-admin") && !text.contains("secret=abc") && !text.contains("<html"), "{text}");
        assert!(text.contains(&format!("{} bytes", html.len())), "{text}");

        let long = format!(
            r#"[{{"$dataCode":"RecordInvalid","$message":"line one\nline two {}","$source":"x"}}]"#,
            "y".repeat(1000)
        );
        let errors = parse_errors(long.as_bytes());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.starts_with("line one line two y"), "{}", errors[0].message);
        // At most MAX_FIELD characters of Sage's text, and the `…` that marks the cut.
        assert!(!errors[0].message.contains('\n') && errors[0].message.chars().count() <= MAX_FIELD + 1);
        assert!(errors[0].message.ends_with('…'));
    }

    #[test]
    fn sage_error_array_is_parsed_with_the_field() {
        let body = br#"[{"$severity":"error","$dataCode":"RecordInvalid","$message":"can't be blank","$source":"contact_id"}]"#;
        let e = from_status(422, body, None, "POST /sales_invoices");
        assert_eq!(e.code(), ErrorCode::Validation);
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "sage_accounting rejected the request (HTTP 422): [RecordInvalid] contact_id: can't be blank"
        );
    }

    #[test]
    fn no_active_subscription_is_told_apart() {
        let body = br#"[{"$severity":"error","$dataCode":"AuthorizationFailure","$message":"No active subscription. (MSE)","$source":""}]"#;
        let e = from_status(401, body, None, "GET /contacts");
        assert!(matches!(e, Error::Auth { reason: AuthFailure::SubscriptionInactive, .. }), "{e:?}");
        assert!(!e.is_retryable());
        let e = from_status(401, b"[]", None, "GET /contacts");
        assert!(matches!(e, Error::Auth { reason: AuthFailure::TokenRejected, .. }));
    }

    #[test]
    fn umbrella_description_error_is_explained() {
        let body = br#"[{"$dataCode":"RecordInvalid","$message":"This field is required","$source":"line_items.description"}]"#;
        let e = from_status(422, body, None, "POST /sales_invoices");
        assert!(e.to_string().contains("broken totals invariant"), "{e}");
    }

    #[test]
    fn classes_by_status() {
        assert_eq!(from_status(404, b"", None, "x").code(), ErrorCode::NotFound);
        let e = from_status(429, b"", Some(Duration::from_secs(9)), "x");
        assert_eq!((e.code(), e.retry_after()), (ErrorCode::RateLimited, Some(Duration::from_secs(9))));
        let e = from_status(503, b"<html>down</html>", None, "x");
        assert_eq!(e.code(), ErrorCode::Provider);
        assert!(e.is_retryable());
        // A body that is not Sage's error JSON is described, never quoted.
        assert!(!e.to_string().contains("<html>") && e.to_string().contains("17 bytes"), "{e}");
        assert_eq!(from_status(403, b"", None, "x").code(), ErrorCode::Auth);
    }
}
