//! Learning the client's container id from its `open` frame.
//!
//! fe2o3-amqp's acceptor reads the client's `open` but does not hand it to the server, and
//! Hono's connection events name the connection by the container id (`remote-id`). So the
//! stream given to the acceptor is wrapped in a [`PeekOpen`]: it passes every byte through
//! unchanged and copies the first bytes after SASL (the 8-byte AMQP header and the first frame,
//! which AMQP 1.0 §2.4.1 requires to be the `open`) aside until that frame is complete, decodes
//! it with fe2o3's own frame decoder, and then stops looking. When the acceptor returns, the
//! `open` has passed through, so [`ContainerId::get`] knows the answer. A frame that is not an
//! `open` or larger than [`MAX_OPEN_FRAME`] leaves the id unknown; fe2o3 reports the error.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::{FrameBody, FrameDecoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::Decoder;

/// The AMQP protocol header in front of the first frame.
const HEADER: usize = 8;
/// The frame size field.
const SIZE_FIELD: usize = 4;
/// The smallest frame: size and frame header.
const MIN_FRAME: usize = 8;
/// The largest `open` frame looked at. AMQP 1.0 §2.7.1 limits frames to 512 bytes until `open`
/// is exchanged; this leaves room for clients that send more properties.
pub(crate) const MAX_OPEN_FRAME: usize = 4096;

/// The container id of a connection's client, once its `open` passed through a [`PeekOpen`].
#[derive(Clone, Debug, Default)]
pub(crate) struct ContainerId(Arc<OnceLock<String>>);

impl ContainerId {
    /// The container id, if the `open` has been seen and decoded.
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// A stream that notes the container id of the first `open` frame read through it.
pub(crate) struct PeekOpen<S> {
    inner: S,
    /// Bytes seen so far; `None` once the `open` was decoded or given up on.
    seen: Option<Vec<u8>>,
    found: ContainerId,
}

impl<S> std::fmt::Debug for PeekOpen<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeekOpen")
            .field("container_id", &self.found.get())
            .finish_non_exhaustive()
    }
}

impl<S> PeekOpen<S> {
    /// Wraps `inner` (positioned right before the client's AMQP header) and returns where the
    /// container id will appear.
    pub(crate) fn new(inner: S) -> (Self, ContainerId) {
        let found = ContainerId::default();
        let stream = Self {
            inner,
            seen: Some(Vec::new()),
            found: found.clone(),
        };
        (stream, found)
    }
}

/// Takes `bytes` read after the SASL layer into `seen`; true once nothing more is needed.
fn take(seen: &mut Vec<u8>, bytes: &[u8], found: &ContainerId) -> bool {
    if bytes.is_empty() {
        return true; // end of stream
    }
    let room = (HEADER + MAX_OPEN_FRAME).saturating_sub(seen.len());
    seen.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    let Some(size) = seen
        .get(HEADER..HEADER + SIZE_FIELD)
        .and_then(|b| <[u8; SIZE_FIELD]>::try_from(b).ok())
        .map(|b| u32::from_be_bytes(b) as usize)
    else {
        return false;
    };
    if !(MIN_FRAME..=MAX_OPEN_FRAME).contains(&size) {
        return true;
    }
    let Some(frame) = seen.get(HEADER + SIZE_FIELD..HEADER + size) else {
        return false;
    };
    let mut frame = BytesMut::from(frame);
    let mut decoder = FrameDecoder {};
    if let Ok(Some(frame)) = decoder.decode(&mut frame)
        && let FrameBody::Open(open) = frame.body
    {
        let _ = found.0.set(open.container_id);
    }
    true
}

impl<S: AsyncRead + Unpin> AsyncRead for PeekOpen<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(seen)) = (&polled, this.seen.as_mut()) {
            let read = buf.filled().get(before..).unwrap_or_default();
            if take(seen, read, &this.found) {
                this.seen = None;
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PeekOpen<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::Connection;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Lets fe2o3-amqp open a connection as a client over an in-memory pipe, answers its
    /// protocol header, and reads its `open` through a [`PeekOpen`] in reads of `chunk` bytes.
    async fn peek_client_open(chunk: usize) -> Result<ContainerId, Box<dyn std::error::Error>> {
        let (client, server) = tokio::io::duplex(4096);
        let opening = tokio::spawn(async move {
            Connection::builder()
                .container_id("device-container-7")
                .open_with_stream(client)
                .await
        });
        let (mut stream, id) = PeekOpen::new(server);
        let mut header = [0u8; HEADER];
        stream.read_exact(&mut header).await?;
        assert_eq!(&header, b"AMQP\x00\x01\x00\x00");
        stream.write_all(&header).await?;
        let mut size = [0u8; SIZE_FIELD];
        stream.read_exact(&mut size).await?;
        let mut frame = vec![0u8; u32::from_be_bytes(size) as usize - SIZE_FIELD];
        for piece in frame.chunks_mut(chunk) {
            stream.read_exact(piece).await?;
        }
        assert!(stream.seen.is_none(), "still looking after the open");
        drop(stream);
        let _ = opening.await;
        Ok(id)
    }

    #[tokio::test]
    async fn the_container_id_is_read_in_passing_in_any_chunks() -> TestResult {
        for chunk in [1, 7, 4096] {
            let id = peek_client_open(chunk).await?;
            assert_eq!(id.get(), Some("device-container-7"), "chunks of {chunk}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_first_frame_that_is_not_an_open_leaves_the_id_unknown() -> TestResult {
        for frame in [
            // Far too large for an open.
            vec![0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0],
            // An empty frame: no performative.
            vec![0, 0, 0, 8, 2, 0, 0, 0],
        ] {
            let mut sent = b"AMQP\x00\x01\x00\x00".to_vec();
            sent.extend_from_slice(&frame);
            sent.extend_from_slice(b"more bytes");
            let (mut stream, id) = PeekOpen::new(sent.as_slice());
            let mut passed = Vec::new();
            stream.read_to_end(&mut passed).await?;
            assert_eq!(passed, sent, "bytes pass unchanged");
            assert_eq!(id.get(), None);
            assert!(stream.seen.is_none());
        }
        Ok(())
    }
}
