//! A connection's byte streams: the read buffer that request heads are parsed from, the write
//! buffer responses are encoded into, and the deadline every wait for the client runs under.
//!
//! Responses are written when the connection is about to wait for the client, so the answers
//! to pipelined requests leave in one write. The deadline is a [`LazyDeadline`]: moving it
//! (once per request) costs a clock read, not a timer-wheel update.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ferry_adapter_core::deadline::LazyDeadline;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Framing;
use super::chunked::{ChunkedDecoder, ChunkedError};
use super::response::{CONTINUE, DateCache, Persistence, Response};

/// Free space the read buffer offers each read.
const READ_CHUNK: usize = 4096;

/// A read buffer grown beyond this (a large head or body) is given back once it is empty.
const KEEP_READ_CAPACITY: usize = 16 * 1024;

/// Longest time spent reading what a client still sends after a refusal before closing (so the
/// client sees the response rather than a reset), and most bytes read then.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Why waiting for the client ended without data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Interrupted {
    /// The client closed its side.
    #[error("the client closed the connection")]
    Closed,
    /// The deadline passed.
    #[error("timed out")]
    TimedOut,
    /// The adapter shuts down (only while the connection waits for a request).
    #[error("the adapter shuts down")]
    Shutdown,
    /// The socket failed.
    #[error(transparent)]
    Io(std::io::Error),
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Larger than the limit.
    TooLarge,
    /// The chunked coding is broken.
    Malformed(&'static str),
    /// The client stopped sending.
    Interrupted(Interrupted),
}

/// One connection's streams and buffers.
pub(crate) struct Io<I> {
    io: I,
    read: BytesMut,
    write: Vec<u8>,
    date: DateCache,
    deadline: LazyDeadline,
    shutdown: Shutdown,
}

/// The adapter's shutdown as the connection waits for it: the token's future is registered
/// with the task once, then its flag is read.
struct Shutdown {
    token: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: Option<Waker>,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Io<I> {
    /// Buffers for `io`, with `idle_timeout` to the first request head.
    pub(crate) fn new(io: I, shutdown: &CancellationToken, idle_timeout: Duration) -> Self {
        Self {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::new(),
            date: DateCache::new(),
            deadline: LazyDeadline::new(Instant::now() + idle_timeout),
            shutdown: Shutdown {
                token: shutdown.clone(),
                cancelled: Box::pin(shutdown.clone().cancelled_owned()),
                registered: None,
            },
        }
    }

    /// The bytes received and not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.read
    }

    /// Drops `n` consumed bytes from the front of the read buffer.
    pub(crate) fn consume(&mut self, n: usize) {
        self.read.advance(n);
    }

    /// Whether the adapter shuts down.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.token.is_cancelled()
    }

    /// The next wait for the client ends `timeout` from now.
    pub(crate) fn set_deadline(&mut self, timeout: Duration) {
        self.deadline.set(Instant::now() + timeout);
    }

    /// Writes what is buffered, then reads more; `interruptible` lets shutdown end the wait.
    pub(crate) async fn fill(&mut self, interruptible: bool) -> Result<(), Interrupted> {
        self.flush().await?;
        if self.read.is_empty() && self.read.capacity() > KEEP_READ_CAPACITY {
            self.read = BytesMut::with_capacity(READ_CHUNK);
        }
        self.read.reserve(READ_CHUNK);
        let Io {
            io,
            read,
            deadline,
            shutdown,
            ..
        } = self;
        let n = wait(
            io.read_buf(read),
            deadline,
            interruptible.then_some(shutdown),
        )
        .await?;
        match n {
            Ok(0) => Err(Interrupted::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(Interrupted::Io(e)),
        }
    }

    /// Writes the buffered responses out.
    pub(crate) async fn flush(&mut self) -> Result<(), Interrupted> {
        if self.write.is_empty() {
            return Ok(());
        }
        let Io {
            io,
            write,
            deadline,
            ..
        } = self;
        let written = wait(
            async {
                io.write_all(write).await?;
                io.flush().await
            },
            deadline,
            None,
        )
        .await?;
        self.write.clear();
        written.map_err(Interrupted::Io)
    }

    /// Buffers a response.
    pub(crate) fn respond(&mut self, response: &Response<'_>, persistence: Persistence) {
        response.encode(&mut self.write, &mut self.date, persistence);
    }

    /// Tells a client waiting on `expect: 100-continue` to send its body (the write may take
    /// `timeout`).
    pub(crate) async fn send_continue(&mut self, timeout: Duration) -> Result<(), Interrupted> {
        self.set_deadline(timeout);
        self.write.extend_from_slice(CONTINUE);
        self.flush().await
    }

    /// Reads a body of at most `max` bytes; waiting for its bytes ends `timeout` after the first
    /// wait begins (a body that arrived with its head needs no clock).
    pub(crate) async fn read_body(
        &mut self,
        framing: Framing,
        max: usize,
        timeout: Duration,
    ) -> Result<Bytes, BodyError> {
        let mut waiting = false;
        match framing {
            Framing::Empty => Ok(Bytes::new()),
            Framing::Length(n) if n > max as u64 => Err(BodyError::TooLarge),
            Framing::Length(n) => {
                let n = usize::try_from(n).map_err(|_| BodyError::TooLarge)?;
                while self.read.len() < n {
                    self.read.reserve(n - self.read.len());
                    self.fill_body(&mut waiting, timeout).await?;
                }
                let body = Bytes::copy_from_slice(&self.read[..n]);
                self.read.advance(n);
                Ok(body)
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new(max);
                let mut body = BytesMut::new();
                while !decoder
                    .decode(&mut self.read, &mut body)
                    .map_err(|e| match e {
                        ChunkedError::TooLarge => BodyError::TooLarge,
                        ChunkedError::Malformed(why) => BodyError::Malformed(why),
                    })?
                {
                    self.fill_body(&mut waiting, timeout).await?;
                }
                Ok(body.freeze())
            }
        }
    }

    /// Reads more of a body, starting its deadline on the first wait.
    async fn fill_body(&mut self, waiting: &mut bool, timeout: Duration) -> Result<(), BodyError> {
        if !*waiting {
            self.set_deadline(timeout);
            *waiting = true;
        }
        self.fill(false).await.map_err(BodyError::Interrupted)
    }

    /// Writes what is buffered and closes. With `linger`, reads and drops what the client still
    /// sends for a while, so that the response is not lost to a reset.
    pub(crate) async fn close(mut self, linger: bool) {
        if self.flush().await.is_err() {
            return;
        }
        let _ = self.io.shutdown().await;
        if linger {
            let mut drained = 0;
            self.set_deadline(LINGER);
            while drained < LINGER_BYTES {
                self.read.clear();
                if self.fill(false).await.is_err() {
                    break;
                }
                drained += self.read.len();
            }
        }
    }
}

/// Runs `io` until it completes, the deadline passes or (given `shutdown`) the adapter shuts
/// down.
async fn wait<F: Future>(
    io: F,
    deadline: &mut LazyDeadline,
    mut shutdown: Option<&mut Shutdown>,
) -> Result<F::Output, Interrupted> {
    let mut io = std::pin::pin!(io);
    poll_fn(|cx| {
        if let Poll::Ready(output) = io.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if let Some(shutdown) = shutdown.as_deref_mut() {
            if shutdown.token.is_cancelled() {
                return Poll::Ready(Err(Interrupted::Shutdown));
            }
            let registered = shutdown
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()));
            if !registered {
                if shutdown.cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Interrupted::Shutdown));
                }
                shutdown.registered = Some(cx.waker().clone());
            }
        }
        deadline
            .poll_passed(cx)
            .map(|()| Err(Interrupted::TimedOut))
    })
    .await
}
