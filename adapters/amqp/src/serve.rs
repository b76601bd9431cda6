//! The open connection's loop, in the connection's one task: it reads frames into the
//! [`Engine`], forwards complete deliveries concurrently (futures in this task, no extra
//! tasks or channels), settles them as their forwards finish, and writes everything that became
//! ready in one write: the outcomes batched into few `disposition` frames, credit top-ups,
//! answers to the device's frames.
//!
//! Timers: a device that sends nothing (not even empty frames) for the adapter's idle timeout
//! while none of its deliveries is in flight is closed with `amqp:resource-limit-exceeded`; the
//! adapter sends an empty frame when it wrote nothing for half the device's idle timeout. While
//! nothing is in flight the receive and send buffers are released. At most [`MAX_IN_FLIGHT`]
//! deliveries are forwarded at once; beyond that the connection stops reading. On shutdown the
//! connection stops reading, settles the deliveries in flight (within [`DRAIN_TIMEOUT`]) and
//! closes; a terminal error closes it at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::types::definitions::{AmqpError, Error as ErrorBody};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::connection::{ConnectionState, Shared};
use crate::engine::{Engine, Event};
use crate::io::Io;
use crate::link::CREDIT_WINDOW;
use crate::upload::{self, Forwarded, InFlight};

/// How long closing waits for the device's `close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection waits for its deliveries in flight to settle on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most deliveries of one connection being forwarded at once, whatever its number of links:
/// beyond it the connection stops reading until some settle. With the message size limit this
/// bounds what one device can make the adapter hold.
const MAX_IN_FLIGHT: usize = 2 * CREDIT_WINDOW as usize;

/// An open connection: its stream, its engine, and the device's wish for heartbeats.
pub(crate) struct Served<S> {
    pub(crate) io: Io<S>,
    pub(crate) engine: Engine,
    /// Send an empty frame when nothing was written for this long.
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) shared: Arc<Shared>,
}

/// What woke the loop.
enum Step {
    Terminal,
    Shutdown,
    Forwarded(Forwarded),
    Read(io::Result<usize>),
    Timer,
    Announced,
}

/// How the loop ended.
enum End {
    /// The stream is gone: nothing more to send.
    Gone,
    /// The device closed; the answer is in the output.
    PeerClosed,
    /// Close with this error (or none).
    Close(Option<ErrorBody>),
    /// Shutdown: settle what is in flight, then close.
    Drain,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Served<S> {
    /// Serves until the device leaves, a terminal error or shutdown; `connected` (the connected
    /// event) runs alongside and is always finished before this returns.
    pub(crate) async fn run<F>(&mut self, state: &ConnectionState, connected: Pin<Box<F>>)
    where
        F: Future<Output = ()>,
    {
        let mut connected = Some(connected);
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let end = self.serve(state, &mut connected, &mut in_flight).await;
        match end {
            End::Gone => {}
            End::PeerClosed => {
                let _ = self.write().await;
            }
            End::Close(error) => {
                if let Some(error) = &error {
                    tracing::info!(%error, "closing the connection");
                }
                self.close(error).await;
            }
            End::Drain => {
                let draining = async {
                    while let Some(done) = in_flight.next().await {
                        let _ = upload::settle(&mut self.engine, done);
                    }
                };
                if tokio::time::timeout(DRAIN_TIMEOUT, draining).await.is_err() {
                    tracing::warn!("deliveries were not settled in time");
                }
                self.close(None).await;
            }
        }
        if let Some(connected) = connected {
            connected.await;
        }
    }

    async fn serve<F>(
        &mut self,
        state: &ConnectionState,
        connected: &mut Option<Pin<Box<F>>>,
        in_flight: &mut FuturesUnordered<InFlight>,
    ) -> End
    where
        F: Future<Output = ()>,
    {
        let shutdown = self.shared.ctx.shutdown.clone();
        let idle_timeout = self.shared.idle_timeout;
        let mut last_received = Instant::now();
        let mut last_sent = Instant::now();
        let timer = tokio::time::sleep_until(self.next_deadline(last_received, last_sent));
        tokio::pin!(timer);
        // Devices may send their first frames together with the `open`.
        if let Some(end) = self.take_frames(state, in_flight) {
            return end;
        }
        loop {
            if !self.engine.output().is_empty() {
                if self.write().await.is_err() {
                    return End::Gone;
                }
                last_sent = Instant::now();
            }
            if in_flight.is_empty() && self.engine.is_idle() {
                self.io.release();
                *self.engine.output() = BytesMut::new();
            }
            let step = tokio::select! {
                biased;
                () = state.terminal.cancelled() => Step::Terminal,
                Some(done) = in_flight.next(), if !in_flight.is_empty() => Step::Forwarded(done),
                () = shutdown.cancelled() => Step::Shutdown,
                read = self.io.read(), if in_flight.len() < MAX_IN_FLIGHT => Step::Read(read),
                () = &mut timer => Step::Timer,
                () = async {
                    if let Some(connected) = connected.as_mut() {
                        connected.await;
                    }
                }, if connected.is_some() => Step::Announced,
            };
            match step {
                Step::Terminal => return End::Close(state.take_error()),
                Step::Shutdown => return End::Drain,
                Step::Announced => *connected = None,
                Step::Forwarded(done) => {
                    let mut next = Some(done);
                    while let Some(done) = next {
                        if let Some(error) = upload::settle(&mut self.engine, done) {
                            return End::Close(Some(error));
                        }
                        next = in_flight.next().now_or_never().flatten();
                    }
                }
                Step::Read(Ok(1..)) => {
                    last_received = Instant::now();
                    if let Some(end) = self.take_frames(state, in_flight) {
                        return end;
                    }
                }
                Step::Read(Ok(0)) => {
                    tracing::debug!("the device closed the stream");
                    return End::Gone;
                }
                Step::Read(Err(error)) => {
                    tracing::debug!(%error, "read failed");
                    return End::Gone;
                }
                Step::Timer => {
                    let now = Instant::now();
                    if !in_flight.is_empty() {
                        // A device waiting for outcomes is not idle.
                        last_received = now;
                    } else if now >= last_received + idle_timeout {
                        return End::Close(Some(ErrorBody::new(
                            AmqpError::ResourceLimitExceeded,
                            "idle timeout: nothing received".to_owned(),
                            None,
                        )));
                    }
                    if self.heartbeat.is_some_and(|beat| now >= last_sent + beat) {
                        self.engine.heartbeat();
                        last_sent = now;
                    }
                    timer
                        .as_mut()
                        .reset(self.next_deadline(last_received, last_sent));
                }
            }
            self.engine.flush();
        }
    }

    /// The earlier of the idle deadline and the next heartbeat.
    fn next_deadline(&self, last_received: Instant, last_sent: Instant) -> Instant {
        let idle = last_received + self.shared.idle_timeout;
        match self.heartbeat {
            Some(beat) => idle.min(last_sent + beat),
            None => idle,
        }
    }

    /// Hands every complete frame received to the engine and starts forwarding the deliveries.
    fn take_frames(
        &mut self,
        state: &ConnectionState,
        in_flight: &mut FuturesUnordered<InFlight>,
    ) -> Option<End> {
        loop {
            let frame = match self.engine.next_frame(&mut self.io.received) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => {
                    tracing::info!(%error, "framing error");
                    return Some(End::Close(Some(ferry_amqp_wire::framing_error(error))));
                }
            };
            match self.engine.on_frame(frame) {
                Ok(None) => {}
                Ok(Some(Event::Delivery(delivery))) => in_flight.push(upload::forward(
                    delivery,
                    state.device.clone(),
                    self.shared.ctx.forwarder.clone(),
                    state.memo(&self.shared.watch),
                    self.shared.max_payload_size,
                )),
                Ok(Some(Event::Closed(error))) => {
                    if let Some(error) = error {
                        tracing::info!(%error, "the device closed the connection with an error");
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

    /// Writes the engine's output; a device that does not read for the idle timeout is given up.
    async fn write(&mut self) -> io::Result<()> {
        let out = self.engine.output();
        let written = tokio::time::timeout(self.shared.idle_timeout, self.io.write(out)).await;
        out.clear();
        written.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
    }

    /// Sends `close` and waits (a little) for the device's.
    pub(crate) async fn close(&mut self, error: Option<ErrorBody>) {
        self.engine.close(error);
        if self.write().await.is_err() {
            return;
        }
        let answered = async {
            loop {
                loop {
                    match self.engine.next_frame(&mut self.io.received) {
                        Ok(Some(frame)) if matches!(frame.body, FrameBody::Close(_)) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                if !matches!(self.io.read().await, Ok(1..)) {
                    return;
                }
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, answered).await.is_err() {
            tracing::debug!("the device did not answer the close");
        }
    }
}
