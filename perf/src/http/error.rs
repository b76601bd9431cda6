//! Why an HTTP connection of the harness failed, and the error kinds the reports count.

use super::codec::ResponseError;
use crate::net::DialError;
use crate::net::wire::is_eof;

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection or the TLS handshake failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Reading or writing failed, or the server closed the stream ([`HttpError::is_closed`]).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server's bytes are not a response the client accepts.
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// A response came without a request waiting for it.
    #[error("a response without a request")]
    Unexpected,
}

impl HttpError {
    /// Whether the server closed the stream.
    pub fn is_closed(&self) -> bool {
        matches!(self, HttpError::Io(error) if is_eof(error))
    }

    /// The error's kind as the run's error counts show it (`http connect`, `tls handshake`,
    /// `http connection closed`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Dial(DialError::Connect(_)) => "http connect",
            HttpError::Dial(DialError::Tls(_)) => "tls handshake",
            HttpError::Io(error) if is_eof(error) => "http connection closed",
            HttpError::Io(_) => "http connection",
            HttpError::Response(ResponseError::Malformed(_)) => "http malformed response",
            HttpError::Response(ResponseError::TooLarge) => "http response too large",
            HttpError::Unexpected => "http unexpected response",
        }
    }
}
