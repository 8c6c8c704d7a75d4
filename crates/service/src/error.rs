//! The service's error answers, shared by its authentication ([`crate::auth`]) and its routes
//! ([`crate::http`]), so that neither imports the other for them.

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use byte8_ledger_core::error::Error;
use serde_json::json;

/// An error answer: `{"error": code, "message": …}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn unauthorized(message: &str) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: message.to_owned() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }

    pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, code, message: message.into() }
    }

    pub(crate) fn internal(e: &Error) -> Self {
        tracing::error!(error = %e, "request failed on the ledger's side");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "the ledger failed; try again later".into(),
        }
    }

    /// A store failure: 503 when it may pass (Magento retries), 500 otherwise (retried too).
    pub(crate) fn from_store(e: &Error) -> Self {
        if e.is_retryable() {
            tracing::warn!(error = %e, "request refused for now: the store is unavailable");
            Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: "the ledger's store is unavailable; try again later".into(),
            }
        } else {
            Self::internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.code, "message": self.message}));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            (self.status, [(header::RETRY_AFTER, "60")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}
