//! A connection's byte stream (TCP or TLS) with its receive and send buffers, shared by the
//! harness's own AMQP, HTTP and MQTT clients.
//!
//! Everything the client sends between two writes is encoded into one buffer and written at
//! once (one TLS record for many frames or packets), and reads append to one buffer that frames
//! are cut from in place; it grows with the traffic, up to 64 KiB at a time.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Room for the first reads (an idle connection keeps no more), and the most made at once for a
/// busy one.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;

/// A stream with what was received and not yet processed, and what is to be sent.
#[derive(Debug)]
pub(crate) struct Wire<S> {
    stream: S,
    /// Received, not yet processed.
    pub(crate) received: BytesMut,
    /// Encoded, not yet written.
    pub(crate) out: BytesMut,
}

/// Whether `error` is the peer's end of the stream as [`Wire::read`] reports it.
pub(crate) fn is_eof(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::UnexpectedEof
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Wraps a connected stream.
    pub(crate) fn new(stream: S) -> Self {
        Self {
            stream,
            received: BytesMut::new(),
            out: BytesMut::new(),
        }
    }

    /// Appends what the peer sent next to [`Wire::received`]; the end of the stream is an
    /// `UnexpectedEof` error ([`is_eof`]). Cancel safe: bytes are only taken when the read
    /// completes.
    pub(crate) async fn read(&mut self) -> io::Result<()> {
        if self.received.capacity() - self.received.len() < READ_MIN / 2 {
            let room = self.received.capacity().clamp(READ_MIN, READ_MAX);
            self.received.reserve(room);
        }
        match self.stream.read_buf(&mut self.received).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the stream",
            )),
            _ => Ok(()),
        }
    }

    /// Reads until at least `n` bytes are buffered.
    pub(crate) async fn read_at_least(&mut self, n: usize) -> io::Result<()> {
        while self.received.len() < n {
            self.read().await?;
        }
        Ok(())
    }

    /// Writes [`Wire::out`] and flushes it (through TLS); the buffer is then empty.
    pub(crate) async fn write(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        self.stream.flush().await
    }

    /// Shuts the stream down (TLS `close_notify`, TCP FIN); errors are of no interest then.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
