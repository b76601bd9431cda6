//! AMQP 1.0 devices on the harness's own client ([`crate::amqp`]): one connection, session and
//! anonymous-relay sender link per device, over plain TCP (`amqp://`) or TLS from the first
//! byte (`amqps://`, ring provider, the CA from `--ca`), as Hono's AMQP adapter expects.
//! Devices authenticate with SASL PLAIN, or with their client certificate and SASL EXTERNAL
//! (`--auth x509`, `amqps://` only).
//!
//! Each device is one task that paces, encodes, writes and reads its outcomes itself. Unsettled
//! telemetry (QoS 1) and events keep up to [`WINDOW`] deliveries outstanding (the adapter's link
//! credit bounds it further); each `accepted` records its latency from the send. When slots are
//! due together (rate `max`, or a device catching up) the transfers go out in one write.
//! Pre-settled telemetry (QoS 0) counts as acknowledged once written. Each message's `to` is
//! `telemetry` or `event`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use hdrhistogram::Histogram;
use rustls_pki_types::ServerName;

use super::pacer::Pacer;
use super::{BoxFuture, DRAIN, Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::amqp::message::DeviceMessage;
use crate::amqp::{AmqpError, ConnectOptions, Connection, Mechanism, Outcome, Sender};
use crate::config::{Address, RunConfig, Target, TransportKind};
use crate::net::{self, Heartbeat, Stream};
use crate::stats::{Recorder, histogram, record_since};

/// Unsettled deliveries a device may have outstanding.
pub const WINDOW: usize = 100;
/// How long a device may take to connect and authenticate, attempts included.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before connecting again after a failed attempt.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long closing a link, session and connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for the sections around a payload, for the session window check.
const MESSAGE_OVERHEAD: usize = 64;

/// The AMQP 1.0 device protocol (Hono's AMQP adapter).
pub struct AmqpTransport {
    address: Address,
    /// The TLS configuration without a client certificate and the server's name (`amqps://`).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    message: DeviceMessage,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AmqpTransport {
    /// The transport for `config`'s target (a Ferry's AMQP adapter); `endpoint` picks the `to`.
    pub fn new(config: &RunConfig, endpoint: Endpoint) -> Result<Self, PerfError> {
        let Target::Ferry(ferry) = &config.target else {
            return Err(PerfError::Config(
                "--transport amqp needs --target ferry (Hono's AMQP adapter)".to_owned(),
            ));
        };
        let address = ferry.amqp.clone();
        config.require_tls_for_x509(&address, TransportKind::Amqp, "amqps")?;
        let tls = if address.tls {
            let config = crate::tls::anonymous_config(config.ca_file.as_deref())?;
            let name = ServerName::try_from(address.host.clone())
                .map_err(|e| PerfError::Config(format!("{}: {e}", address.host)))?;
            Some((config, name))
        } else {
            None
        };
        let message = DeviceMessage::new(endpoint.as_str())
            .map_err(|e| PerfError::Config(format!("AMQP message: {e}")))?;
        Ok(Self {
            address,
            tls,
            message,
        })
    }

    /// Connects, authenticates (EXTERNAL with the device's certificate, else PLAIN) and
    /// attaches the upload link.
    async fn connect(
        &self,
        device: &Device,
        presettled: bool,
    ) -> Result<Sender<Stream>, AmqpError> {
        let (tls, mechanism) = match (&self.tls, &device.tls) {
            (Some((_, name)), Some(own)) => {
                (Some((own.clone(), name.clone())), Mechanism::External)
            }
            (tls, _) => (
                tls.clone(),
                Mechanism::Plain {
                    username: device.username.clone(),
                    password: device.password.clone(),
                },
            ),
        };
        let stream = net::dial(&self.address.host, self.address.port, tls).await?;
        let options = ConnectOptions {
            container_id: &device.client_id,
            hostname: Some(&self.address.host),
            sasl: Some(&mechanism),
        };
        let connection = Connection::open(stream, &options).await?;
        Sender::attach(connection, "upload", presettled, WINDOW).await
    }

    /// Opens the device's link within [`OPEN_TIMEOUT`], trying again after a failure (when 100
    /// devices connect at once, the gateway's first password checks can outlast its handshake
    /// timeout). Every failed attempt is recorded.
    async fn open(
        &self,
        device: &Device,
        presettled: bool,
        recorder: &Recorder,
    ) -> Result<Sender<Stream>, String> {
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        loop {
            let error =
                match tokio::time::timeout_at(deadline, self.connect(device, presettled)).await {
                    Ok(Ok(sender)) => return Ok(sender),
                    Ok(Err(error)) => error,
                    Err(_) => return Err("timeout".to_owned()),
                };
            if error.is_refusal() {
                return Err(error.kind()); // refused credentials do not get better
            }
            recorder.error(format!("{} (retried)", error.kind()));
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY_DELAY)).await;
        }
    }

    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let recorder = load.recorder.clone();
        let presettled = load.effective_qos() == 0;
        let sender = match self.open(&device, presettled, &recorder).await {
            Ok(sender) => Some(sender),
            Err(kind) => {
                recorder.error(kind);
                None
            }
        };
        let _ = load.ready.send(sender.is_some()).await;
        let Some(mut sender) = sender else { return };
        let mut upload = Upload {
            heartbeat: Heartbeat::new(sender.connection().heartbeat_interval()),
            sender,
            recorder: &recorder,
            presettled,
            acks: histogram(),
            unwritten: Vec::new(),
            buffer: Vec::new(),
        };
        let Some(start) = load.wait_start().await else {
            close(upload.sender).await;
            return;
        };
        let mut pacer = load.pacer(start);
        let sent = upload.send_all(&self.message, &load, &mut pacer).await;
        let drained = match sent {
            Ok(()) => tokio::time::timeout(DRAIN, upload.drain()).await,
            Err(error) => Ok(Err(error)),
        };
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(error)) => recorder.error(error.kind()),
            Err(_) => {
                for _ in 0..upload.sender.unsettled() {
                    recorder.error("timeout");
                }
            }
        }
        recorder.merge_ack_latency(&upload.acks);
        close(upload.sender).await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let sender = self.open(&device, false, &hold.recorder).await;
        if let Err(kind) = &sender {
            hold.recorder.error(kind.clone());
        }
        let _ = hold.opened.send(sender.is_ok()).await;
        let Ok(mut sender) = sender else { return };
        let mut heartbeat = Heartbeat::new(sender.connection().heartbeat_interval());
        let idle = async {
            loop {
                if sender.connection().has_output() {
                    sender.connection().write().await?;
                }
                tokio::select! {
                    read = sender.connection().read() => {
                        read?;
                        sender.process(|_, _| {})?;
                    }
                    () = heartbeat.tick() => sender.connection().heartbeat(),
                }
            }
        };
        let outcome: Result<(), AmqpError> = tokio::select! {
            () = hold.stop.cancelled() => Ok(()),
            outcome = idle => outcome,
        };
        if let Err(error) = outcome {
            hold.recorder.error(error.kind());
        }
        close(sender).await;
    }
}

/// One device's sending: its link and what it recorded.
struct Upload<'a> {
    sender: Sender<Stream>,
    recorder: &'a Recorder,
    presettled: bool,
    /// Acknowledgement latencies (µs).
    acks: Histogram<u64>,
    /// Send times of pre-settled deliveries not yet written.
    unwritten: Vec<Instant>,
    /// The message being encoded.
    buffer: Vec<u8>,
    heartbeat: Heartbeat,
}

/// What woke a sending device.
enum Step {
    Read(Result<(), AmqpError>),
    Slot(bool),
    Heartbeat,
}

impl Upload<'_> {
    /// Sends on the pacer's schedule until the run stops.
    async fn send_all(
        &mut self,
        message: &DeviceMessage,
        load: &Load,
        pacer: &mut Pacer,
    ) -> Result<(), AmqpError> {
        let len = load.payload.size() + MESSAGE_OVERHEAD;
        loop {
            self.write().await?;
            let can_send = self.sender.can_send(len);
            let step = tokio::select! {
                biased;
                read = self.sender.connection().read() => Step::Read(read),
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
                    self.send(message, load);
                    // Slots already due go out in the same write.
                    while self.sender.can_send(len) {
                        match pacer.next().now_or_never() {
                            Some(true) => self.send(message, load),
                            Some(false) => return Ok(()),
                            None => break,
                        }
                    }
                }
                Step::Heartbeat => self.sender.connection().heartbeat(),
            }
        }
    }

    /// Waits for the outcomes of the deliveries still unsettled.
    async fn drain(&mut self) -> Result<(), AmqpError> {
        loop {
            self.write().await?;
            if self.sender.unsettled() == 0 {
                return Ok(());
            }
            tokio::select! {
                read = self.sender.connection().read() => {
                    read?;
                    self.process()?;
                }
                () = self.heartbeat.tick() => self.sender.connection().heartbeat(),
            }
        }
    }

    fn send(&mut self, message: &DeviceMessage, load: &Load) {
        message.write(&load.next_payload(), &mut self.buffer);
        let sent = Instant::now();
        self.sender.send(&self.buffer, sent);
        self.recorder.sent();
        if self.presettled {
            self.unwritten.push(sent);
        }
    }

    /// Writes what was encoded; pre-settled deliveries count as acknowledged once written.
    async fn write(&mut self) -> Result<(), AmqpError> {
        if !self.sender.connection().has_output() {
            return Ok(());
        }
        self.sender.connection().write().await?;
        for sent in self.unwritten.drain(..) {
            self.recorder.acked();
            record_since(&mut self.acks, sent);
        }
        Ok(())
    }

    fn process(&mut self) -> Result<(), AmqpError> {
        let (recorder, acks) = (self.recorder, &mut self.acks);
        self.sender.process(|sent, outcome| match outcome {
            Outcome::Accepted => {
                recorder.acked();
                record_since(acks, sent);
            }
            Outcome::Released => recorder.error("amqp released"),
            Outcome::Rejected(error) => recorder.error(format!(
                "amqp rejected {}",
                error.map_or_else(|| "-".to_owned(), |e| format!("{:?}", e.condition))
            )),
            Outcome::Modified | Outcome::Other => recorder.error("amqp other outcome"),
        })
    }
}

async fn close(sender: Sender<Stream>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sender.close()).await;
}

impl Transport for AmqpTransport {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn drive(self: Arc<Self>, device: Device, load: Load) -> BoxFuture {
        Box::pin(self.drive_device(device, load))
    }

    fn hold(self: Arc<Self>, device: Device, hold: Hold) -> BoxFuture {
        Box::pin(self.hold_connection(device, hold))
    }
}
