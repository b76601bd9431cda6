//! Scenarios and the transports they drive.
//!
//! A [`Transport`] knows one device protocol: how a device connects, authenticates, sends on a
//! schedule and learns each message's fate ([`Transport::drive`]), and how it holds an idle
//! connection ([`Transport::hold`]). Scenarios ([`run`]) are protocol-free: they provision, start
//! the consumer, spawn one task per device, start every sender at the same instant, sample the
//! counters once a second and stop. HTTP, MQTT and CoAP today; AMQP slots in as a further transport.

pub mod amqp;
pub mod coap;
mod handshakes;
pub mod http;
mod link;
pub mod mqtt;
pub mod pacer;
mod requests;
mod runner;
mod sampler;
mod storm;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::payload::{PayloadBuilder, Stamp, WARMUP_SEQ, now_us};
use crate::rate::Schedule;
use crate::stats::Recorder;
use pacer::Pacer;

pub use runner::run;

/// A boxed, sendable future (what trait methods return, so transports can be trait objects).
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// How late a sender may fall behind its schedule before it skips slots.
const MAX_LAG: Duration = Duration::from_secs(1);

/// How long a request or publish may wait for its acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a device waits, after the run stopped, for its outstanding acknowledgements.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Telemetry (QoS 0 or 1).
    Telemetry,
    /// Events.
    Event,
}

impl Endpoint {
    /// Hono's name (`telemetry`, `event`): the HTTP path, the MQTT topic and the northbound address.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Telemetry => "telemetry",
            Endpoint::Event => "event",
        }
    }
}

/// One simulated device.
#[derive(Clone, Debug)]
pub struct Device {
    /// Its number in the run.
    pub index: usize,
    /// MQTT client id (unique per connection).
    pub client_id: String,
    /// `auth-id@tenant`.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Its TLS configuration with its client certificate, when it authenticates with one (then
    /// no username or password is sent).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What a sending device needs: where its numbers go, what to send and when.
#[derive(Clone, Debug)]
pub struct Load {
    /// Counters and histograms of the run.
    pub recorder: Arc<Recorder>,
    /// Telemetry or events.
    pub endpoint: Endpoint,
    /// QoS of telemetry (events are always 1).
    pub qos: u8,
    /// Builds payloads.
    pub payload: PayloadBuilder,
    /// Sequence numbers of the run.
    pub seq: Arc<AtomicU64>,
    /// This device's rate (`None`: as fast as acknowledgements allow).
    pub rate: Option<f64>,
    /// Offset of this device's slots within one interval (0..1).
    pub phase: f64,
    /// Reports once whether the device connected (and warmed up).
    pub ready: mpsc::Sender<bool>,
    /// Carries the common start instant.
    pub start: watch::Receiver<Option<Instant>>,
    /// Fires when sending must stop.
    pub stop: CancellationToken,
}

impl Load {
    /// The QoS this message kind is sent with.
    pub fn effective_qos(&self) -> u8 {
        match self.endpoint {
            Endpoint::Event => 1,
            Endpoint::Telemetry => self.qos,
        }
    }

    /// Waits for the start instant; `None` if the run stopped first.
    pub async fn wait_start(&mut self) -> Option<Instant> {
        let stop = self.stop.clone();
        tokio::select! {
            changed = self.start.wait_for(Option::is_some) => changed.ok().and_then(|s| *s),
            () = stop.cancelled() => None,
        }
    }

    /// The clock of this device from `start` (no waiting at rate `max`) until the run stops.
    pub fn pacer(&self, start: Instant) -> Pacer {
        let schedule = self
            .rate
            .map(|rate| Schedule::new(start, rate, self.phase, MAX_LAG));
        Pacer::new(schedule, self.recorder.clone(), self.stop.clone())
    }

    /// The next message's payload (a fresh sequence number, stamped now).
    pub fn next_payload(&self) -> Bytes {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.payload.build(Stamp {
            sent_us: now_us(),
            seq,
            run: self.recorder.run(),
        })
    }

    /// A warm-up payload (the consumer ignores it).
    pub fn warmup_payload(&self) -> Bytes {
        warmup_payload(&self.payload, &self.recorder)
    }
}

/// A warm-up payload for the run of `recorder`.
pub fn warmup_payload(payload: &PayloadBuilder, recorder: &Recorder) -> Bytes {
    payload.build(Stamp {
        sent_us: now_us(),
        seq: WARMUP_SEQ,
        run: recorder.run(),
    })
}

/// What a device holding an idle connection needs.
#[derive(Clone, Debug)]
pub struct Hold {
    /// Counters of the run (errors).
    pub recorder: Arc<Recorder>,
    /// Builds the warm-up payload (HTTP authenticates with one request).
    pub payload: PayloadBuilder,
    /// Reports once whether the connection is open and authenticated.
    pub opened: mpsc::Sender<bool>,
    /// Fires when the connection should close.
    pub stop: CancellationToken,
}

/// A device protocol the harness can drive.
pub trait Transport: Send + Sync + 'static {
    /// The name used in reports.
    fn name(&self) -> &'static str;

    /// Connects `device`, reports readiness, waits for the start, sends on the schedule until
    /// the stop, waits for outstanding acknowledgements and records every outcome.
    fn drive(self: Arc<Self>, device: Device, load: Load) -> BoxFuture;

    /// Opens and authenticates one connection for `device`, reports it, and keeps it open (and
    /// alive) until the stop.
    fn hold(self: Arc<Self>, device: Device, hold: Hold) -> BoxFuture;
}
