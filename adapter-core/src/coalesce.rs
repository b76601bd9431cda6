//! A stream whose writes are gathered by a writer task, so that busy connections make fewer
//! syscalls.
//!
//! fe2o3-amqp writes and flushes every AMQP frame on its own: a busy link costs one `writev` per
//! message, and on loopback that call also runs the receiving side's TCP stack. [`Coalescing`]
//! splits a stream into its halves: reads go straight to the read half; writes are appended to a
//! bounded buffer that a writer task drains. The task writes whatever gathered since its last
//! write in one call, so under load many frames share one syscall, while at low load a frame goes
//! out as soon as the task runs.
//!
//! What changes for the writer of the stream: `poll_flush` returns once the bytes are in the
//! buffer, whose task writes them without further prompting; a write error of the task is
//! reported by the next write, flush or shutdown. `poll_shutdown` waits until the buffer is
//! written and the write half is shut down. Dropping the stream lets the task write what is
//! buffered, then shut the write half down.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;

/// Bytes buffered before a writer has to wait for the task.
const MAX_BUFFERED: usize = 256 * 1024;

/// A stream with gathered writes (see the module documentation).
#[derive(Debug)]
pub struct Coalescing<R> {
    read: R,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer task: bytes were added, or the stream is closing.
    work: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes not yet taken by the writer task.
    buffer: BytesMut,
    /// Set once the writer of the stream shut it down or dropped it.
    closing: bool,
    /// Set when the writer task ended (after a shutdown or an error).
    finished: bool,
    /// The write error that ended the writer task.
    error: Option<(io::ErrorKind, String)>,
    /// The writer of the stream, waiting for room or for the task to finish.
    waiting: Option<Waker>,
}

impl State {
    fn error(&self) -> Option<io::Error> {
        self.error
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    fn wake_waiting(&mut self) {
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic: every update is a single assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Coalescing<OwnedReadHalf> {
    /// Wraps a TCP stream; spawns its writer task on the current runtime.
    pub fn tcp(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Self::new(read, write)
    }
}

impl<R> Coalescing<R> {
    /// Wraps the two halves of a stream; spawns the writer task for `write` on the current
    /// runtime.
    pub fn new<W>(read: R, write: W) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared::default());
        tokio::spawn(write_loop(write, shared.clone()));
        Self { read, shared }
    }
}

/// Writes what gathers in the buffer until the stream is closed or a write fails.
async fn write_loop<W: AsyncWrite + Unpin>(mut write: W, shared: Arc<Shared>) {
    let mut batch = BytesMut::new();
    loop {
        let closing = {
            let mut state = shared.lock();
            std::mem::swap(&mut state.buffer, &mut batch);
            state.wake_waiting();
            state.closing
        };
        if batch.is_empty() {
            if closing {
                let _ = write.shutdown().await;
                break;
            }
            shared.work.notified().await;
            continue;
        }
        if let Err(error) = write.write_all(&batch).await {
            shared.lock().error = Some((error.kind(), error.to_string()));
            break;
        }
        batch.clear();
    }
    let mut state = shared.lock();
    state.finished = true;
    state.buffer = BytesMut::new();
    state.wake_waiting();
}

impl<R: AsyncRead + Unpin> AsyncRead for Coalescing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for Coalescing<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        if let Some(error) = state.error() {
            return Poll::Ready(Err(error));
        }
        if state.closing || state.finished {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = MAX_BUFFERED.saturating_sub(state.buffer.len());
        if room == 0 {
            state.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        state.buffer.extend_from_slice(&buf[..n]);
        drop(state);
        self.shared.work.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer task writes the buffer without being asked (see the module documentation).
        match self.shared.lock().error() {
            Some(error) => Poll::Ready(Err(error)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        if state.finished {
            return Poll::Ready(state.error().map_or(Ok(()), Err));
        }
        state.closing = true;
        state.waiting = Some(cx.waker().clone());
        drop(state);
        self.shared.work.notify_one();
        Poll::Pending
    }
}

impl<R> Drop for Coalescing<R> {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    async fn pair() -> io::Result<(Coalescing<OwnedReadHalf>, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        Ok((Coalescing::tcp(server), client))
    }

    #[tokio::test]
    async fn everything_written_arrives_in_order_and_reads_pass_through() -> TestResult {
        let (mut stream, mut peer) = pair().await?;
        let mut expected = Vec::new();
        for i in 0..2_000u32 {
            let frame = i.to_be_bytes().repeat(50);
            stream.write_all(&frame).await?;
            stream.flush().await?;
            expected.extend_from_slice(&frame);
        }
        stream.shutdown().await?;
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await?;
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes arrived out of order");

        peer.write_all(b"hello").await?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"hello");
        Ok(())
    }

    #[tokio::test]
    async fn a_full_buffer_waits_for_the_reader_instead_of_growing() -> TestResult {
        let (mut stream, mut peer) = pair().await?;
        // Far more than the socket buffers and MAX_BUFFERED hold together: the writer must wait
        // for the peer to read, and still deliver everything.
        let total = 16 * MAX_BUFFERED;
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 4096];
            for _ in 0..total / chunk.len() {
                stream.write_all(&chunk).await?;
                stream.flush().await?;
                assert!(stream.shared.lock().buffer.len() <= MAX_BUFFERED);
            }
            stream.shutdown().await?;
            Ok::<_, io::Error>(())
        });
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await?;
        writer.await??;
        assert_eq!(received.len(), total);
        assert!(received.iter().all(|&b| b == 7));
        Ok(())
    }

    #[tokio::test]
    async fn dropping_the_stream_still_delivers_what_was_written() -> TestResult {
        let (mut stream, mut peer) = pair().await?;
        stream.write_all(b"last words").await?;
        drop(stream);
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await?;
        assert_eq!(received, b"last words");
        Ok(())
    }

    #[tokio::test]
    async fn a_write_error_is_reported_to_the_writer() -> TestResult {
        let (mut stream, peer) = pair().await?;
        drop(peer);
        // The peer is gone: the task's writes fail (reset), and a later write reports it.
        let mut failed = false;
        for _ in 0..1_000 {
            if stream.write_all(&[0u8; 1024]).await.is_err() || stream.flush().await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(failed, "writes to a closed peer kept succeeding");
        Ok(())
    }
}
