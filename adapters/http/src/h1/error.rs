//! Requests the HTTP/1.1 layer refuses before the adapter sees them; each ends the connection
//! after its response, since the rest of the byte stream cannot be trusted.

use http::StatusCode;

/// Why a request could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The request head is longer than [`super::head::MAX_HEAD`].
    #[error("request head larger than 64 KiB")]
    HeadTooLarge,
    /// More than [`super::head::MAX_HEADERS`] header fields.
    #[error("more than 100 header fields")]
    TooManyHeaders,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// The head or a chunk does not follow the syntax.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The body's framing is ambiguous or invalid.
    #[error("invalid message framing: {0}")]
    Framing(&'static str),
    /// A transfer coding other than `chunked`.
    #[error("unsupported transfer-encoding, only chunked is accepted")]
    UnsupportedEncoding,
    /// An `expect` other than `100-continue`.
    #[error("unsupported expectation, only 100-continue is accepted")]
    Expectation,
    /// The head did not arrive within the idle timeout.
    #[error("request head not received in time")]
    HeadTimeout,
}

impl ProtocolError {
    /// The response status.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ProtocolError::HeadTooLarge | ProtocolError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProtocolError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ProtocolError::Malformed(_) | ProtocolError::Framing(_) => StatusCode::BAD_REQUEST,
            ProtocolError::UnsupportedEncoding => StatusCode::NOT_IMPLEMENTED,
            ProtocolError::Expectation => StatusCode::EXPECTATION_FAILED,
            ProtocolError::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}
