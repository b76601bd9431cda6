//! The HTTP adapter's errors, and the one exhaustive mapping from refusals to HTTP status codes.
//!
//! `status_for` turns the pipeline's protocol-neutral [`ErrorKind`] into a status; request
//! errors that only HTTP knows (routing, headers, Basic auth syntax) get theirs in
//! `RequestError::status`. Neither match has a catch-all arm.

use std::borrow::Cow;
use std::net::SocketAddr;

use ferry_adapter_core::{AuthError, ErrorKind, ForwardError};
use http::StatusCode;

/// Why the adapter could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configuration cannot work.
    #[error("invalid HTTP adapter configuration: {0}")]
    InvalidConfig(String),
    /// A port could not be bound.
    #[error("cannot bind the HTTP adapter to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<ferry_adapter_core::accept::PortsError> for HttpError {
    fn from(e: ferry_adapter_core::accept::PortsError) -> Self {
        use ferry_adapter_core::accept::PortsError;
        match e {
            PortsError::Bind { addr, source } => Self::Bind { addr, source },
            PortsError::NoPort => Self::InvalidConfig(PortsError::NoPort.to_string()),
        }
    }
}

/// The HTTP status of a protocol-neutral error kind.
pub(crate) fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Why one request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The pipeline refused the upload.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// No `authorization` header where one is required.
    #[error("credentials required")]
    MissingCredentials,
    /// The `authorization` header is not valid Basic authentication.
    #[error("malformed authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// The URI is none of the adapter's resources.
    #[error("no such resource")]
    UnknownUri,
    /// The resource exists but not for this method.
    #[error("method not allowed, use {allowed}")]
    MethodNotAllowed {
        /// The method the resource supports.
        allowed: &'static str,
    },
    /// A tenant or device id in the path is invalid.
    #[error("malformed path: {0}")]
    MalformedPath(String),
    /// An unauthenticated request must name its tenant.
    #[error("unauthenticated requests must name the tenant")]
    TenantRequired,
    /// `qos-level` is neither 0 nor 1.
    #[error("unsupported qos-level, use 0 or 1")]
    BadQos,
    /// `hono-ttl` is not a non-negative number of seconds.
    #[error("hono-ttl must be a non-negative number of seconds")]
    BadTtl,
    /// `hono-ttd` is not an integer.
    #[error("hono-ttd must be an integer number of seconds")]
    BadTtd,
    /// `content-type` is not visible ASCII.
    #[error("malformed content-type header")]
    BadContentType,
    /// The body is larger than the adapter accepts.
    #[error("payload exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// The limit.
        max: usize,
    },
    /// The body could not be read (the client broke the framing or left).
    #[error("cannot read the request body: {0}")]
    Body(String),
    /// The body did not arrive within the idle timeout.
    #[error("request body not received in time")]
    BodyTimeout,
}

impl RequestError {
    /// The response status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RequestError::Auth(e) => status_for(e.kind()),
            RequestError::Forward(e) => status_for(e.kind()),
            RequestError::MissingCredentials | RequestError::MalformedAuthorization(_) => {
                StatusCode::UNAUTHORIZED
            }
            RequestError::UnknownUri => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::MalformedPath(_)
            | RequestError::TenantRequired
            | RequestError::BadQos
            | RequestError::BadTtl
            | RequestError::BadTtd
            | RequestError::BadContentType
            | RequestError::Body(_) => StatusCode::BAD_REQUEST,
            RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The reason told to the client. Authentication failures all read the same, so a client
    /// cannot probe which auth-ids exist; internal failure details stay in the log.
    pub(crate) fn client_message(&self) -> Cow<'static, str> {
        match self {
            RequestError::Auth(AuthError::RegistryUnavailable(_)) => {
                Cow::Borrowed("temporarily unavailable, retry later")
            }
            RequestError::Auth(_) => Cow::Borrowed("bad credentials"),
            RequestError::Forward(ForwardError::NoConsumer(_)) => {
                Cow::Borrowed("no consumer is attached for the tenant")
            }
            RequestError::Forward(e) if e.kind() == ErrorKind::Unavailable => {
                Cow::Borrowed("temporarily unavailable, retry later")
            }
            other => Cow::Owned(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_hono_status_codes() {
        let cases = [
            (ErrorKind::BadRequest, 400),
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::PayloadTooLarge, 413),
            (ErrorKind::TooManyRequests, 429),
            (ErrorKind::Unavailable, 503),
        ];
        for (kind, code) in cases {
            assert_eq!(status_for(kind).as_u16(), code, "{kind:?}");
        }
        assert_eq!(
            RequestError::Auth(AuthError::WrongPassword)
                .status()
                .as_u16(),
            401
        );
        assert_eq!(RequestError::BadQos.status().as_u16(), 400);
    }

    #[test]
    fn clients_learn_no_account_details_or_internals() {
        let unknown = RequestError::Auth(AuthError::UnknownCredentials).client_message();
        let wrong = RequestError::Auth(AuthError::WrongPassword).client_message();
        assert_eq!(unknown, wrong);
        let storage = RequestError::Forward(ForwardError::NorthboundStorage("disk /var/x".into()));
        assert!(!storage.client_message().contains("/var/x"));
        assert!(RequestError::BadQos.client_message().contains("qos-level"));
    }
}
