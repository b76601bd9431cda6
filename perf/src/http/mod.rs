//! The harness's own HTTP/1.1 client for simulated devices: keep-alive connections over plain
//! TCP or TLS ([`crate::net::dial`]), one request in flight per connection, run entirely by the
//! task that uses it (no tasks, channels or locks of its own).
//!
//! * [`codec`]: requests encoded from a head built once per device plus the payload, and
//!   responses cut in place from the receive buffer (status line and headers with `httparse`,
//!   bodies skipped by `Content-Length` or chunked coding).
//! * [`Connection`] ([`connection`]): a request written at once, its response matched to its
//!   send time, `Connection: close` honoured.
//! * [`HttpError`] ([`error`]): why a connection failed, as the error kinds the reports count.
//!
//! The caller drives the I/O as with [`crate::mqtt`]: it encodes ([`Connection::send`]), writes
//! ([`Connection::write`]), reads ([`Connection::read`], cancel safe) and lets the connection
//! process what arrived ([`Connection::process`]).

pub mod codec;
pub mod connection;
pub mod error;

pub use codec::RequestHead;
pub use connection::Connection;
pub use error::HttpError;
