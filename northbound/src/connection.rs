//! One application connection, in one task: the handshake ([`crate::handshake`]) under
//! `handshake_timeout`, then a loop that reads frames into the [`Engine`], wakes when a message
//! is queued for one of its consumer links, writes the transfers the consumers have credit for,
//! and writes everything that gathered in one write. No task or channel per session or link.
//!
//! The application's idle timeout is honoured with empty frames (half its timeout after our last
//! write). On shutdown the connection keeps serving until no sender waits for an outcome of its
//! deliveries (at most [`DRAIN_TIMEOUT`]), then detaches its consumer links with
//! `amqp:illegal-state` and closes. Errors caused by the peer end the connection, never the
//! process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::types::definitions::{AmqpError, Error as ErrorBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::engine::{Engine, Event};
use crate::handshake::{self, MAX_FRAME_SIZE};
use crate::server::Shared;

/// How long closing waits for the application's `close`, and a write for the application to read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a write may wait for the application to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection waits on shutdown for the outcomes its senders wait for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read at most per read.
const READ_CHUNK: usize = 16 * 1024;

/// How the serving loop ended.
enum End {
    /// The stream is gone: nothing more to send.
    Gone,
    /// The application closed; the answer is in the output.
    PeerClosed,
    /// Close with this error (or none).
    Close(Option<ErrorBody>),
}

/// Serves one accepted TCP connection until it closes or the northbound shuts down.
pub(crate) async fn serve(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("amqp_northbound_connection", %peer);
    async move {
        let auth = shared.authenticator.for_peer(peer);
        let handshake = tokio::time::timeout(
            shared.config.handshake_timeout,
            handshake::open(&mut stream, &auth),
        );
        let opened = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            opened = handshake => opened,
        };
        let opened = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                tracing::info!(%error, "application connection refused");
                return;
            }
            Err(_) => {
                tracing::info!("application connection handshake timed out");
                return;
            }
        };
        let wake = Arc::new(Notify::new());
        let engine = Engine::new(
            shared.registry.clone(),
            wake.clone(),
            MAX_FRAME_SIZE,
            opened.peer_max_frame_size,
        );
        let mut connection = Connection {
            stream,
            received: opened.received,
            engine,
            wake,
            heartbeat: opened.heartbeat,
            shared,
        };
        match connection.serve().await {
            End::Gone => {}
            End::PeerClosed => {
                let _ = connection.write().await;
            }
            End::Close(error) => {
                if let Some(error) = &error {
                    tracing::info!(%error, "closing the connection");
                }
                connection.close(error).await;
            }
        }
        tracing::debug!("application connection ended");
    }
    .instrument(span)
    .await;
}

struct Connection {
    stream: TcpStream,
    received: BytesMut,
    engine: Engine,
    wake: Arc<Notify>,
    heartbeat: Option<Duration>,
    shared: Arc<Shared>,
}

/// What woke the loop.
enum Step {
    Read(std::io::Result<usize>),
    Queued,
    Heartbeat,
    Shutdown,
    Drained,
}

impl Connection {
    async fn serve(&mut self) -> End {
        // The shutdown and wake-up futures live across iterations: registering a waiter anew
        // for every message costs more than the message's transfer.
        let shutdown = self.shared.shutdown.clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let wake = Arc::clone(&self.wake);
        let queued = wake.notified();
        tokio::pin!(queued);
        let mut draining: Option<Instant> = None;
        let mut last_sent = Instant::now();
        // Reset only when it fires, not for every write.
        let heartbeat = self.heartbeat.unwrap_or(Duration::from_secs(3600));
        let timer = tokio::time::sleep_until(last_sent + heartbeat);
        tokio::pin!(timer);
        if let Some(end) = self.take_frames() {
            return end;
        }
        loop {
            self.engine.send_queued();
            if !self.engine.output().is_empty() {
                if let Err(error) = self.write().await {
                    // Timed out: the application stopped reading what it asked for.
                    tracing::info!(%error, "cannot write to the application, dropping it");
                    return End::Gone;
                }
                if self.heartbeat.is_some() {
                    last_sent = Instant::now();
                }
            }
            if draining.is_some() && !self.engine.awaits_outcomes() {
                return self.shut_down();
            }
            let step = tokio::select! {
                biased;
                () = &mut cancelled, if draining.is_none() => Step::Shutdown,
                read = read_chunk(&mut self.stream, &mut self.received) => Step::Read(read),
                () = &mut queued => Step::Queued,
                () = &mut timer, if self.heartbeat.is_some() => Step::Heartbeat,
                () = sleep_until(draining) => Step::Drained,
            };
            match step {
                Step::Read(Ok(0)) => {
                    tracing::debug!("the application closed the stream");
                    return End::Gone;
                }
                Step::Read(Ok(_)) => {
                    if let Some(end) = self.take_frames() {
                        return end;
                    }
                }
                Step::Read(Err(error)) => {
                    tracing::debug!(%error, "read failed");
                    return End::Gone;
                }
                // Let the tasks that are ready now queue their messages too, so that they
                // leave in one write rather than one write each.
                Step::Queued => {
                    queued.set(wake.notified());
                    tokio::task::yield_now().await;
                }
                Step::Heartbeat => {
                    let now = Instant::now();
                    if now >= last_sent + heartbeat {
                        self.engine.heartbeat();
                        timer.as_mut().reset(now + heartbeat);
                    } else {
                        timer.as_mut().reset(last_sent + heartbeat);
                    }
                }
                Step::Shutdown => draining = Some(Instant::now() + DRAIN_TIMEOUT),
                Step::Drained => {
                    tracing::warn!("consumers did not settle in time");
                    return self.shut_down();
                }
            }
        }
    }

    /// Detaches the consumer links, then closes.
    fn shut_down(&mut self) -> End {
        let error = ErrorBody::new(
            AmqpError::IllegalState,
            "Ferry is shutting down".to_owned(),
            None,
        );
        self.engine.detach_all(&error);
        End::Close(None)
    }

    /// Hands every complete frame received to the engine.
    fn take_frames(&mut self) -> Option<End> {
        loop {
            let frame = match self.engine.next_frame(&mut self.received) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => {
                    tracing::info!(%error, "framing error");
                    return Some(End::Close(Some(ferry_amqp_wire::framing_error(error))));
                }
            };
            match self.engine.on_frame(frame) {
                Ok(None) => {}
                Ok(Some(Event::StartDelivery(tenant, notify))) => {
                    crate::delivery::spawn(tenant, notify, self.shared.clone());
                }
                Ok(Some(Event::Closed(error))) => {
                    if let Some(error) = error {
                        tracing::info!(%error, "the application closed the connection with an error");
                    }
                    return Some(End::PeerClosed);
                }
                Err(error) => {
                    tracing::info!(%error, "protocol error");
                    return Some(End::Close(Some(error)));
                }
            }
        }
    }

    /// Writes the engine's output; an application that does not read for [`WRITE_TIMEOUT`] is
    /// given up. Usually the socket takes it all at once, without the timer.
    async fn write(&mut self) -> std::io::Result<()> {
        let out = self.engine.output();
        let sent = match self.stream.try_write(out) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                out.clear();
                return Err(e);
            }
        };
        if sent == out.len() {
            out.clear();
            return Ok(());
        }
        let rest = &out[sent..];
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(rest)).await;
        out.clear();
        written.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
    }

    /// Sends `close` and waits (a little) for the application's.
    async fn close(&mut self, error: Option<ErrorBody>) {
        self.engine.close(error);
        if self.write().await.is_err() {
            return;
        }
        let answered = async {
            loop {
                loop {
                    match self.engine.next_frame(&mut self.received) {
                        Ok(Some(frame)) if matches!(frame.body, FrameBody::Close(_)) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                if !matches!(
                    read_chunk(&mut self.stream, &mut self.received).await,
                    Ok(1..)
                ) {
                    return;
                }
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, answered).await.is_err() {
            tracing::debug!("the application did not answer the close");
        }
    }
}

/// Reads what arrived into `received`; `Ok(0)` at the end of the stream. Cancel safe.
async fn read_chunk(stream: &mut TcpStream, received: &mut BytesMut) -> std::io::Result<usize> {
    if received.capacity() - received.len() < READ_CHUNK / 4 {
        received.reserve(READ_CHUNK);
    }
    stream.read_buf(received).await
}

/// Sleeps until `at`; never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
