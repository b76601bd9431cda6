//! The adapter's own HTTP/1.1 server side (RFC 9112), just what devices posting telemetry need:
//! keep-alive and `connection: close` (HTTP/1.0 clients with `connection: keep-alive`),
//! pipelining, bodies delimited by `content-length` or `chunked` (trailers read and dropped),
//! `expect: 100-continue`, and the limits a device-facing port needs (64 KiB of head, 100
//! header fields, the payload limit, an idle timeout for each wait for the client).
//!
//! Heads are parsed in place with httparse and bodies copied out of the read buffer once, so a
//! small request costs no allocation here besides its payload. Anything that breaks the framing
//! is answered with its status (400, 408, 417, 431, 501, 505) and ends the connection.

mod chunked;
pub(crate) mod error;
pub(crate) mod head;
pub(crate) mod io;
pub(crate) mod response;

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `content-length` bytes.
    Length(u64),
    /// The `chunked` transfer coding.
    Chunked,
}
