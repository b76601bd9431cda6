//! [`WholeRecords`]: the stream rustls handshakes over, handing it only complete TLS records.
//!
//! rustls's buffered connection reads as much as the socket has. Once the handshake is done,
//! the traffic keys can be taken over ([`super::accept`]) only if rustls holds no partial record:
//! bytes of a record it has begun to buffer would be lost. This wrapper reads into its own buffer
//! and hands a record to rustls only once the whole record has arrived, so whatever rustls holds
//! after the handshake is processed, and the bytes of later records stay here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::record_protection::{MAX_PLAINTEXT, RecordError, record_len};

/// Largest record body of TLS 1.2 and 1.3 (TLS 1.2 allows 2048 bytes of expansion).
const MAX_BODY: usize = MAX_PLAINTEXT + 2048;
/// Size of a fresh read buffer.
const READ_CHUNK: usize = 4096;

/// A stream that lets its reader see complete TLS records only.
#[derive(Debug)]
pub struct WholeRecords<IO> {
    io: IO,
    /// Bytes read: `buf[start..end]`; `buf[start..ready]` is the part of complete records.
    buf: Vec<u8>,
    start: usize,
    ready: usize,
    end: usize,
}

impl<IO> WholeRecords<IO> {
    /// Wraps `io`.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            buf: Vec::new(),
            start: 0,
            ready: 0,
            end: 0,
        }
    }

    /// The stream and the bytes read from it that were not handed out.
    pub fn into_parts(self) -> (IO, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.io, rest)
    }

    /// Marks every complete record after `ready` as ready.
    fn find_records(&mut self) -> Result<(), RecordError> {
        while let Some(len) = record_len(&self.buf[self.ready..self.end], MAX_BODY)? {
            if self.end - self.ready < len {
                break;
            }
            self.ready += len;
        }
        Ok(())
    }

    /// Makes room for the rest of the incomplete record after `ready`.
    fn make_room(&mut self) -> Result<(), RecordError> {
        let needed = record_len(&self.buf[self.ready..self.end], MAX_BODY)?
            .unwrap_or(0)
            .max(READ_CHUNK);
        if self.start > 0 && self.buf.len() - self.ready < needed {
            self.buf.copy_within(self.start..self.end, 0);
            self.ready -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.ready < needed {
            self.buf.resize(self.ready + needed, 0);
        }
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WholeRecords<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.start < this.ready {
                let n = out.remaining().min(this.ready - this.start);
                out.put_slice(&this.buf[this.start..this.start + n]);
                this.start += n;
                if this.start == this.end {
                    this.buf = Vec::new();
                    (this.start, this.ready, this.end) = (0, 0, 0);
                }
                return Poll::Ready(Ok(()));
            }
            this.make_room()?;
            let mut read = ReadBuf::new(&mut this.buf[this.end..]);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        // The end: rustls sees it (and a truncated record stays unseen).
                        return Poll::Ready(Ok(()));
                    }
                    this.end += n;
                    this.find_records()?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if this.start == this.end {
                        this.buf = Vec::new();
                        (this.start, this.ready, this.end) = (0, 0, 0);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WholeRecords<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
