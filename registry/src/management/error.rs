//! Mapping of Management API failures to HTTP: one exhaustive function, `{"error": ...}` bodies.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ManageError;

/// A Management API error response.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// An operation failed.
    Manage(ManageError),
    /// The request body could not be read or parsed (400, 413).
    Body(StatusCode, String),
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        ApiError::Manage(e)
    }
}

/// 400 with a message.
pub(crate) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::Manage(ManageError::BadRequest(msg.into()))
}

fn status(e: &ManageError) -> StatusCode {
    match e {
        ManageError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ManageError::Forbidden(_) => StatusCode::FORBIDDEN,
        ManageError::NotFound => StatusCode::NOT_FOUND,
        ManageError::Conflict(_) => StatusCode::CONFLICT,
        ManageError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ManageError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
        ManageError::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
        ManageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, text) = match self {
            ApiError::Manage(e) => {
                let status = status(&e);
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(error = %e, "management request failed");
                }
                if let ManageError::TooManyAttempts(secs) = e {
                    retry_after = Some(HeaderValue::from(secs));
                }
                (status, e.to_string())
            }
            ApiError::Body(status, text) => (status, text),
        };
        let mut resp = (status, Json(json!({ "error": text }))).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        resp
    }
}
