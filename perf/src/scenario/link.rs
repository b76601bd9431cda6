//! What the devices on the harness's own clients (AMQP, HTTP, MQTT) share: one task per connection
//! that paces, encodes, writes and reads the outcomes itself.
//!
//! A transport wraps its connection as a [`Link`]; [`upload`] then sends on the device's schedule
//! (every message that is due goes out in one write: rate `max`, a device catching up, slots
//! that fell due during a write), records each outcome with its latency from the send, keeps the
//! connection alive, and waits for the outstanding outcomes at the end. Messages the link
//! acknowledges once written (pre-settled AMQP transfers, MQTT QoS 0) count as acknowledged when
//! the write is done. [`idle`] keeps a connection open for the `connections` scenario.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::pacer::Pacer;
use super::{DRAIN, Load};
use crate::net::Heartbeat;
use crate::stats::{Recorder, histogram, record_since};

/// One device's connection as the sending loop drives it.
pub(super) trait Link: Send {
    /// Why the connection failed.
    type Error: Send;

    /// The error's kind for the report.
    fn kind(error: &Self::Error) -> String;

    /// Whether encoded bytes wait to be written.
    fn has_output(&mut self) -> bool;

    /// Writes everything encoded so far, in one write.
    fn write(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Reads what the peer sent next (cancel safe).
    fn read(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Handles what was read: each outcome goes to `outcome` with its message's send time (the
    /// error kind of a refusal).
    fn process(
        &mut self,
        outcome: impl FnMut(Instant, Result<(), String>),
    ) -> Result<(), Self::Error>;

    /// Whether another message may be encoded now.
    fn can_send(&self) -> bool;

    /// Encodes `payload`, sent at `sent`, for the next write.
    fn send(&mut self, payload: &[u8], sent: Instant);

    /// Whether messages count as acknowledged once written (no outcome comes back).
    fn acknowledged_when_written(&self) -> bool;

    /// Messages waiting for their outcome.
    fn outstanding(&self) -> usize;

    /// How often [`Link::heartbeat`] must be called (`None`: never).
    fn heartbeat_interval(&mut self) -> Option<Duration>;

    /// Encodes whatever keeps an idle connection alive, if nothing was written since the last
    /// call.
    fn heartbeat(&mut self);
}

/// Sends on `load`'s schedule until the run stops, waits up to [`DRAIN`] for the outstanding
/// outcomes, and records everything in `load`'s recorder.
pub(super) async fn upload<L: Link>(link: &mut L, load: &mut Load) {
    let recorder = load.recorder.clone();
    let Some(start) = load.wait_start().await else {
        return;
    };
    let mut pacer = load.pacer(start);
    let mut upload = Upload {
        heartbeat: Heartbeat::new(link.heartbeat_interval()),
        link,
        recorder: &recorder,
        acks: histogram(),
        unwritten: Vec::new(),
    };
    let sent = upload.send_all(load, &mut pacer).await;
    let drained = match sent {
        Ok(()) => tokio::time::timeout(DRAIN, upload.drain()).await,
        Err(error) => Ok(Err(error)),
    };
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(error)) => recorder.error(L::kind(&error)),
        Err(_) => {
            for _ in 0..upload.link.outstanding() {
                recorder.error("timeout");
            }
        }
    }
    recorder.merge_ack_latency(&upload.acks);
}

/// Keeps `link` open (answering what comes, heartbeats) until `stop` fires; a failure goes to
/// `recorder`.
pub(super) async fn idle<L: Link>(link: &mut L, recorder: &Recorder, stop: &CancellationToken) {
    let mut heartbeat = Heartbeat::new(link.heartbeat_interval());
    let idle = async {
        loop {
            if link.has_output() {
                link.write().await?;
            }
            tokio::select! {
                read = link.read() => {
                    read?;
                    link.process(|_, _| {})?;
                }
                () = heartbeat.tick() => link.heartbeat(),
            }
        }
    };
    let outcome: Result<(), L::Error> = tokio::select! {
        () = stop.cancelled() => Ok(()),
        outcome = idle => outcome,
    };
    if let Err(error) = outcome {
        recorder.error(L::kind(&error));
    }
}

/// One device's sending: its link and what it recorded.
struct Upload<'a, L> {
    link: &'a mut L,
    recorder: &'a Recorder,
    /// Acknowledgement latencies (µs).
    acks: Histogram<u64>,
    /// Send times of messages acknowledged once written, not yet written.
    unwritten: Vec<Instant>,
    heartbeat: Heartbeat,
}

/// What woke a sending device.
enum Step<E> {
    Read(Result<(), E>),
    Slot(bool),
    Heartbeat,
}

impl<L: Link> Upload<'_, L> {
    /// Sends on the pacer's schedule until the run stops.
    async fn send_all(&mut self, load: &Load, pacer: &mut Pacer) -> Result<(), L::Error> {
        loop {
            self.write().await?;
            let can_send = self.link.can_send();
            let step = tokio::select! {
                biased;
                read = self.link.read() => Step::Read(read),
                more = pacer.next(), if can_send => Step::Slot(more),
                () = self.heartbeat.tick() => Step::Heartbeat,
            };
            match step {
                Step::Read(read) => {
                    read?;
                    self.process()?;
                }
                Step::Slot(false) => return Ok(()),
                Step::Slot(true) => {
                    self.send(load);
                    // Slots already due go out in the same write.
                    while self.link.can_send() {
                        match pacer.next().now_or_never() {
                            Some(true) => self.send(load),
                            Some(false) => return Ok(()),
                            None => break,
                        }
                    }
                }
                Step::Heartbeat => self.link.heartbeat(),
            }
        }
    }

    /// Waits for the outcomes of the messages still outstanding.
    async fn drain(&mut self) -> Result<(), L::Error> {
        loop {
            self.write().await?;
            if self.link.outstanding() == 0 {
                return Ok(());
            }
            tokio::select! {
                read = self.link.read() => {
                    read?;
                    self.process()?;
                }
                () = self.heartbeat.tick() => self.link.heartbeat(),
            }
        }
    }

    fn send(&mut self, load: &Load) {
        let payload = load.next_payload();
        let sent = Instant::now();
        self.link.send(&payload, sent);
        self.recorder.sent();
        if self.link.acknowledged_when_written() {
            self.unwritten.push(sent);
        }
    }

    /// Writes what was encoded; messages acknowledged once written count now.
    async fn write(&mut self) -> Result<(), L::Error> {
        if !self.link.has_output() {
            return Ok(());
        }
        self.link.write().await?;
        for sent in self.unwritten.drain(..) {
            self.recorder.acked();
            record_since(&mut self.acks, sent);
        }
        Ok(())
    }

    fn process(&mut self) -> Result<(), L::Error> {
        let (recorder, acks) = (self.recorder, &mut self.acks);
        self.link.process(|sent, outcome| match outcome {
            Ok(()) => {
                recorder.acked();
                record_since(acks, sent);
            }
            Err(kind) => recorder.error(kind),
        })
    }
}
