//! The CoAP adapter's errors, and the one exhaustive mapping from refusals to CoAP codes.
//!
//! [`code_for`] turns the pipeline's protocol-neutral [`ErrorKind`] into a response code;
//! refusals that only CoAP knows (routing, options, message type) get theirs in
//! [`RequestError::code`]. Neither match has a catch-all arm.

use std::borrow::Cow;
use std::net::SocketAddr;

use coap_lite::ResponseType;
use ferry_adapter_core::{ErrorKind, ForwardError};

/// Why the adapter could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoapError {
    /// The configuration cannot work.
    #[error("invalid CoAP adapter configuration: {0}")]
    InvalidConfig(String),
    /// A port could not be bound.
    #[error("cannot bind the CoAP adapter to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The DTLS server certificate could not be loaded or created.
    #[error("DTLS server certificate: {0}")]
    Certificate(String),
}

/// The CoAP response code of a protocol-neutral error kind.
pub(crate) fn code_for(kind: ErrorKind) -> ResponseType {
    match kind {
        ErrorKind::BadRequest => ResponseType::BadRequest,
        ErrorKind::Unauthorized => ResponseType::Unauthorized,
        ErrorKind::Forbidden => ResponseType::Forbidden,
        ErrorKind::NotFound => ResponseType::NotFound,
        ErrorKind::PayloadTooLarge => ResponseType::RequestEntityTooLarge,
        ErrorKind::TooManyRequests => ResponseType::TooManyRequests,
        ErrorKind::Unavailable => ResponseType::ServiceUnavailable,
    }
}

/// Why one request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The pipeline refused the upload.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The resource needs an authenticated device (plain UDP has no credentials).
    #[error("authentication required: use DTLS")]
    CredentialsRequired,
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
    /// Events must be sent as confirmable messages.
    #[error("events must be sent confirmable (CON)")]
    EventNotConfirmable,
    /// `hono-ttd` is not an integer.
    #[error("hono-ttd must be an integer number of seconds")]
    BadTtd,
    /// The Content-Format option is longer than two bytes.
    #[error("malformed content-format option")]
    BadContentFormat,
    /// `?empty` was given with a payload.
    #[error("an empty notification must have an empty payload")]
    EmptyWithPayload,
    /// The payload is larger than the adapter accepts.
    #[error("payload exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// The limit.
        max: usize,
    },
    /// Too many requests are being processed.
    #[error("too many requests in flight, retry later")]
    Busy,
}

impl RequestError {
    /// The response code.
    pub(crate) fn code(&self) -> ResponseType {
        match self {
            RequestError::Forward(e) => code_for(e.kind()),
            RequestError::CredentialsRequired => ResponseType::Unauthorized,
            RequestError::UnknownUri => ResponseType::NotFound,
            RequestError::MethodNotAllowed { .. } => ResponseType::MethodNotAllowed,
            RequestError::MalformedPath(_)
            | RequestError::TenantRequired
            | RequestError::EventNotConfirmable
            | RequestError::BadTtd
            | RequestError::BadContentFormat
            | RequestError::EmptyWithPayload => ResponseType::BadRequest,
            RequestError::PayloadTooLarge { .. } => ResponseType::RequestEntityTooLarge,
            RequestError::Busy => ResponseType::ServiceUnavailable,
        }
    }

    /// The diagnostic payload told to the client; internal failure details stay in the log.
    pub(crate) fn client_message(&self) -> Cow<'static, str> {
        match self {
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
    fn kinds_map_to_hono_coap_codes() {
        let cases = [
            (ErrorKind::BadRequest, ResponseType::BadRequest),
            (ErrorKind::Unauthorized, ResponseType::Unauthorized),
            (ErrorKind::Forbidden, ResponseType::Forbidden),
            (ErrorKind::NotFound, ResponseType::NotFound),
            (
                ErrorKind::PayloadTooLarge,
                ResponseType::RequestEntityTooLarge,
            ),
            (ErrorKind::TooManyRequests, ResponseType::TooManyRequests),
            (ErrorKind::Unavailable, ResponseType::ServiceUnavailable),
        ];
        for (kind, code) in cases {
            assert_eq!(code_for(kind), code, "{kind:?}");
        }
        assert_eq!(
            RequestError::MethodNotAllowed { allowed: "PUT" }.code(),
            ResponseType::MethodNotAllowed
        );
        assert_eq!(
            RequestError::EventNotConfirmable.code(),
            ResponseType::BadRequest
        );
    }

    #[test]
    fn clients_learn_no_internals() {
        let storage = RequestError::Forward(ForwardError::NorthboundStorage("disk /var/x".into()));
        assert!(!storage.client_message().contains("/var/x"));
        assert!(RequestError::BadTtd.client_message().contains("hono-ttd"));
    }
}
