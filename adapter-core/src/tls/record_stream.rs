//! [`RecordStream`]: a TLS 1.3 connection after the handshake, as `AsyncRead + AsyncWrite`, on
//! the record protection of `record_protection.rs`.
//!
//! Memory: the stream holds its two traffic keys and, only while bytes are in transit, a read
//! buffer (at most one record plus what arrived with it) and a write buffer. Both are given back
//! as soon as they are empty and the socket has nothing more, so an idle connection holds no
//! buffer at all. Writes are gathered: each `poll_write` seals one record into the write buffer,
//! and `poll_flush` writes the buffer out, so a batch of small writes costs one system call.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::record_protection::{
    DirectionKey, HEADER_LEN, MAX_CIPHERTEXT, Opened, RecordError, record_len,
};

/// Size of a fresh read buffer (records are usually small; a larger one grows it).
const READ_CHUNK: usize = 4096;
/// Sealed bytes a writer may queue before `poll_write` writes them out first.
const WRITE_QUEUE_LIMIT: usize = 64 * 1024;

/// A TLS 1.3 stream protected with traffic keys taken over from rustls (see
/// [`super::accept`]).
#[derive(Debug)]
pub struct RecordStream<IO> {
    io: IO,
    rx: DirectionKey,
    tx: DirectionKey,
    /// Bytes read: `rbuf[start..end]`; allocated only while something is in transit.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Opened plaintext not yet read: `rbuf[plain.0..plain.1]`, inside the first record.
    plain: (usize, usize),
    /// Length of the opened record at `start` whose plaintext is being read (0: none).
    opened: usize,
    /// Sealed records not yet written: `wbuf[written..]`.
    wbuf: Vec<u8>,
    written: usize,
    /// The peer sent close_notify (or its stream ended between records).
    read_closed: bool,
    close_notify_sent: bool,
}

impl<IO> RecordStream<IO> {
    /// A stream over `io` with the traffic keys of an established connection: `plaintext` was
    /// already opened (it is read first), `received` are bytes of later records already read
    /// from `io`.
    pub(crate) fn new(
        io: IO,
        rx: DirectionKey,
        tx: DirectionKey,
        plaintext: &[u8],
        received: &[u8],
    ) -> Self {
        let mut rbuf = Vec::new();
        if !plaintext.is_empty() || !received.is_empty() {
            rbuf = [plaintext, received].concat();
        }
        Self {
            io,
            rx,
            tx,
            end: rbuf.len(),
            rbuf,
            start: 0,
            plain: (0, plaintext.len()),
            opened: plaintext.len(),
            wbuf: Vec::new(),
            written: 0,
            read_closed: false,
            close_notify_sent: false,
        }
    }

    /// Opens the complete record at `start`, if there is one; `None` when more bytes are needed.
    fn open_next(&mut self) -> Result<Option<Opened>, RecordError> {
        let buffered = &mut self.rbuf[self.start..self.end];
        let Some(len) = record_len(buffered, MAX_CIPHERTEXT)? else {
            return Ok(None);
        };
        if buffered.len() < len {
            return Ok(None);
        }
        let opened = self.rx.open(&mut buffered[..len])?;
        match opened {
            Opened::Data(n) => {
                self.plain = (self.start + HEADER_LEN, self.start + HEADER_LEN + n);
                self.opened = len;
            }
            Opened::CloseNotify | Opened::Nothing => self.consume(len),
        }
        Ok(Some(opened))
    }

    /// Drops `len` bytes from the front of the read buffer.
    fn consume(&mut self, len: usize) {
        self.start += len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for the rest of the record at `start` (or a fresh chunk).
    fn make_room(&mut self) -> Result<(), RecordError> {
        let needed = record_len(&self.rbuf[self.start..self.end], MAX_CIPHERTEXT)?
            .unwrap_or(HEADER_LEN)
            .max(READ_CHUNK);
        if self.start > 0 && self.rbuf.len() - self.start < needed {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.rbuf.len() - self.start < needed {
            self.rbuf.resize(self.start + needed, 0);
        }
        Ok(())
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> RecordStream<IO> {
    /// Writes the queued records out.
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.wbuf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for RecordStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Hands out the plaintext of every complete record already read (as rustls does), so
        // the reader gets a burst of small records in one call; reads the socket only when
        // nothing was handed out yet.
        let mut copied = false;
        loop {
            if this.plain.0 < this.plain.1 {
                let n = buf.remaining().min(this.plain.1 - this.plain.0);
                buf.put_slice(&this.rbuf[this.plain.0..this.plain.0 + n]);
                this.plain.0 += n;
                if this.plain.0 == this.plain.1 {
                    this.consume(this.opened);
                    this.opened = 0;
                }
                copied = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.open_next()? {
                Some(Opened::CloseNotify) => this.read_closed = true,
                Some(Opened::Data(_) | Opened::Nothing) => {}
                None if copied => return Poll::Ready(Ok(())),
                None => {
                    this.make_room()?;
                    let mut read = ReadBuf::new(&mut this.rbuf[this.end..]);
                    match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                        Poll::Ready(Ok(())) => {
                            let n = read.filled().len();
                            if n == 0 {
                                if this.start < this.end {
                                    return Poll::Ready(Err(RecordError::Truncated.into()));
                                }
                                // Many devices close TCP without close_notify: an end
                                // between records is an end.
                                this.read_closed = true;
                            }
                            this.end += n;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if this.start == this.end {
                                this.rbuf = Vec::new();
                                this.start = 0;
                                this.end = 0;
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RecordStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.wbuf.len() - this.written >= WRITE_QUEUE_LIMIT {
            ready!(this.poll_write_queue(cx))?;
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(Ok(this.tx.seal_data(data, &mut this.wbuf)?))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_queue(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            this.tx.seal_close_notify(&mut this.wbuf)?;
        }
        ready!(this.poll_write_queue(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
