//! The connection's byte stream with its receive buffer, which an idle connection releases.
//!
//! Reads go through a chunk on the stack of the poll (never kept in the task while it waits) and
//! are appended to the receive buffer; so a connection waiting for its device holds no read
//! buffer once everything received was processed.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most bytes taken per read.
const READ_CHUNK: usize = 16 * 1024;

/// A device's stream (TCP or TLS) and the bytes received and not yet processed.
#[derive(Debug)]
pub(crate) struct Io<S> {
    stream: S,
    /// Received, not yet processed.
    pub(crate) received: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// Wraps a stream.
    pub(crate) fn new(stream: S) -> Self {
        Self {
            stream,
            received: BytesMut::new(),
        }
    }

    /// Reads what the device sent into [`Io::received`]; `Ok(0)` at the end of the stream.
    /// Cancel safe: bytes are only taken when the read completes.
    pub(crate) async fn read(&mut self) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    self.received.extend_from_slice(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Writes `bytes` and flushes them (through TLS).
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Frees the receive buffer if it holds nothing.
    pub(crate) fn release(&mut self) {
        if self.received.is_empty() {
            self.received = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[tokio::test]
    async fn reads_append_and_an_empty_buffer_is_released() -> io::Result<()> {
        let (mut device, adapter) = tokio::io::duplex(64);
        let mut io = Io::new(adapter);
        device.write_all(b"abc").await?;
        assert_eq!(io.read().await?, 3);
        device.write_all(b"de").await?;
        assert_eq!(io.read().await?, 2);
        assert_eq!(&io.received[..], b"abcde");
        io.release();
        assert_eq!(io.received.len(), 5, "unprocessed bytes are kept");
        io.received.clear();
        io.release();
        assert_eq!(io.received.capacity(), 0);
        drop(device);
        assert_eq!(io.read().await?, 0);
        Ok(())
    }
}
