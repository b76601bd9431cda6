//! MQTT devices on the harness's own client ([`crate::mqtt`]): MQTT 3.1.1 or 5 with username and
//! password, QoS 0 or 1, one connection per device, optionally over TLS (`mqtts://`, ring
//! provider, the CA from `--ca`), where a device may authenticate with its client certificate
//! instead (CONNECT without username and password).
//!
//! Each device is one task that paces, encodes, writes and reads its PUBACKs itself. At QoS 1 up
//! to [`WINDOW`] publishes are unacknowledged (fewer if an MQTT 5 server's Receive Maximum says
//! so); each PUBACK records its latency from the send, and an MQTT 5 PUBACK with a failure reason
//! counts as an error of that reason. Publishes that are due together (rate `max`, a device
//! catching up, slots that fell due during a write) go out in one write. At QoS 0 a message
//! counts as acknowledged once it was written. The topic is Hono's `telemetry` / `event`; against
//! a plain broker the consumer subscribes to the same topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use hdrhistogram::Histogram;
use rustls_pki_types::ServerName;

use super::pacer::Pacer;
use super::{ACK_TIMEOUT, BoxFuture, DRAIN, Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::config::{Address, MqttVersion, RunConfig, Target, TransportKind};
use crate::mqtt::error::puback_kind;
use crate::mqtt::{Ack, Connection, MqttError, Options};
use crate::net::{self, Heartbeat, Stream};
use crate::stats::{Recorder, histogram, record_since};

/// QoS 1 publishes a device may have unacknowledged.
pub const WINDOW: u16 = 100;
/// Keep-alive of device connections.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long closing a connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The MQTT device protocol (Hono's MQTT adapter, or any broker).
pub struct MqttTransport {
    address: Address,
    version: MqttVersion,
    /// The TLS configuration without a client certificate and the server's name (`mqtts://`).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    topic: &'static str,
    max_packet: usize,
}

impl std::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTransport")
            .field("address", &self.address)
            .field("version", &self.version)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl MqttTransport {
    /// The transport for `config`'s target; `endpoint` picks the topic.
    pub fn new(config: &RunConfig, endpoint: Endpoint) -> Result<Self, PerfError> {
        let address = match &config.target {
            Target::Ferry(f) => f.mqtt.clone(),
            Target::MqttBroker(a) => a.clone(),
            Target::HttpServer(_) => {
                return Err(PerfError::Config(
                    "an HTTP server target needs --transport http".to_owned(),
                ));
            }
        };
        config.require_tls_for_x509(&address, TransportKind::Mqtt, "mqtts")?;
        let tls = if address.tls {
            let tls = crate::tls::anonymous_config(config.ca_file.as_deref())?;
            let name = ServerName::try_from(address.host.clone())
                .map_err(|e| PerfError::Config(format!("{}: {e}", address.host)))?;
            Some((tls, name))
        } else {
            None
        };
        Ok(Self {
            address,
            version: config.mqtt_version,
            tls,
            topic: endpoint.as_str(),
            max_packet: config.payload_size + 1024,
        })
    }

    /// Connects and sends CONNECT: a device with a certificate presents it (over `mqtts://`)
    /// and sends no credentials. Bounded by [`ACK_TIMEOUT`].
    async fn connect(&self, device: &Device) -> Result<Connection<Stream>, String> {
        let (tls, credentials) = match (&self.tls, &device.tls) {
            (Some((_, name)), Some(own)) => (Some((own.clone(), name.clone())), None),
            (tls, _) => (
                tls.clone(),
                Some((device.username.as_str(), device.password.as_str())),
            ),
        };
        let options = Options {
            version: self.version,
            client_id: &device.client_id,
            credentials,
            keep_alive: KEEP_ALIVE,
            max_packet: self.max_packet,
            window: WINDOW,
        };
        let connect = async {
            let stream = net::dial(&self.address.host, self.address.port, tls).await?;
            Connection::connect(stream, &options).await
        };
        match tokio::time::timeout(ACK_TIMEOUT, connect).await {
            Ok(connected) => connected.map_err(|e: MqttError| e.kind()),
            Err(_) => Err("timeout".to_owned()),
        }
    }

    /// One new connection (a full TLS handshake for `mqtts://`), CONNECT, one PUBLISH at QoS 1
    /// until its PUBACK, DISCONNECT: the outcome as an error kind.
    pub async fn send_once(&self, device: &Device, payload: bytes::Bytes) -> Result<(), String> {
        let mut connection = self.connect(device).await?;
        connection.publish(self.topic, 1, &payload, Instant::now());
        let mut outcome = None;
        let acked = async {
            connection.write().await?;
            while outcome.is_none() {
                connection.read().await?;
                connection.process(|_, ack| outcome = Some(ack))?;
            }
            Ok::<_, MqttError>(())
        };
        let acked = tokio::time::timeout(ACK_TIMEOUT, acked).await;
        close(connection).await;
        match (acked, outcome) {
            (Err(_), _) => Err("timeout".to_owned()),
            (Ok(Err(error)), _) => Err(error.kind()),
            (Ok(Ok(())), Some(Ack::Refused(reason))) => Err(puback_kind(reason)),
            (Ok(Ok(())), _) => Ok(()),
        }
    }

    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let recorder = load.recorder.clone();
        let connected = self.connect(&device).await;
        if let Err(kind) = &connected {
            recorder.error(kind.clone());
        }
        let _ = load.ready.send(connected.is_ok()).await;
        let Ok(connection) = connected else { return };
        let mut upload = Upload {
            keep_alive: Heartbeat::new(Some(connection.keep_alive_interval())),
            connection,
            topic: self.topic,
            qos: load.effective_qos(),
            recorder: &recorder,
            acks: histogram(),
            unwritten: Vec::new(),
        };
        let Some(start) = load.wait_start().await else {
            close(upload.connection).await;
            return;
        };
        let mut pacer = load.pacer(start);
        let sent = upload.send_all(&load, &mut pacer).await;
        let drained = match sent {
            Ok(()) => tokio::time::timeout(DRAIN, upload.drain()).await,
            Err(error) => Ok(Err(error)),
        };
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(error)) => recorder.error(error.kind()),
            Err(_) => {
                for _ in 0..upload.connection.in_flight() {
                    recorder.error("timeout");
                }
            }
        }
        recorder.merge_ack_latency(&upload.acks);
        close(upload.connection).await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let connected = self.connect(&device).await;
        if let Err(kind) = &connected {
            hold.recorder.error(kind.clone());
        }
        let _ = hold.opened.send(connected.is_ok()).await;
        let Ok(mut connection) = connected else {
            return;
        };
        let mut keep_alive = Heartbeat::new(Some(connection.keep_alive_interval()));
        let idle = async {
            loop {
                if connection.has_output() {
                    connection.write().await?;
                }
                tokio::select! {
                    read = connection.read() => {
                        read?;
                        connection.process(|_, _| {})?;
                    }
                    () = keep_alive.tick() => connection.keep_alive(),
                }
            }
        };
        let outcome: Result<(), MqttError> = tokio::select! {
            () = hold.stop.cancelled() => Ok(()),
            outcome = idle => outcome,
        };
        if let Err(error) = outcome {
            hold.recorder.error(error.kind());
        }
        close(connection).await;
    }
}

/// One device's sending: its connection and what it recorded.
struct Upload<'a> {
    connection: Connection<Stream>,
    topic: &'static str,
    qos: u8,
    recorder: &'a Recorder,
    /// Acknowledgement latencies (µs).
    acks: Histogram<u64>,
    /// Send times of QoS 0 publishes not yet written.
    unwritten: Vec<Instant>,
    keep_alive: Heartbeat,
}

/// What woke a sending device.
enum Step {
    Read(Result<(), MqttError>),
    Slot(bool),
    KeepAlive,
}

impl Upload<'_> {
    /// Sends on the pacer's schedule until the run stops.
    async fn send_all(&mut self, load: &Load, pacer: &mut Pacer) -> Result<(), MqttError> {
        loop {
            self.write().await?;
            let can_send = self.connection.can_publish(self.qos);
            let step = tokio::select! {
                biased;
                read = self.connection.read() => Step::Read(read),
                more = pacer.next(), if can_send => Step::Slot(more),
                () = self.keep_alive.tick() => Step::KeepAlive,
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
                    while self.connection.can_publish(self.qos) {
                        match pacer.next().now_or_never() {
                            Some(true) => self.send(load),
                            Some(false) => return Ok(()),
                            None => break,
                        }
                    }
                }
                Step::KeepAlive => self.connection.keep_alive(),
            }
        }
    }

    /// Waits for the PUBACKs of the publishes still in flight.
    async fn drain(&mut self) -> Result<(), MqttError> {
        loop {
            self.write().await?;
            if self.connection.in_flight() == 0 {
                return Ok(());
            }
            tokio::select! {
                read = self.connection.read() => {
                    read?;
                    self.process()?;
                }
                () = self.keep_alive.tick() => self.connection.keep_alive(),
            }
        }
    }

    fn send(&mut self, load: &Load) {
        let payload = load.next_payload();
        let sent = Instant::now();
        if self
            .connection
            .publish(self.topic, self.qos, &payload, sent)
        {
            self.recorder.sent();
            if self.qos == 0 {
                self.unwritten.push(sent);
            }
        }
    }

    /// Writes what was encoded; QoS 0 publishes count as acknowledged once written.
    async fn write(&mut self) -> Result<(), MqttError> {
        if !self.connection.has_output() {
            return Ok(());
        }
        self.connection.write().await?;
        for sent in self.unwritten.drain(..) {
            self.recorder.acked();
            record_since(&mut self.acks, sent);
        }
        Ok(())
    }

    fn process(&mut self) -> Result<(), MqttError> {
        let (recorder, acks) = (self.recorder, &mut self.acks);
        self.connection.process(|sent, ack| match ack {
            Ack::Accepted => {
                recorder.acked();
                record_since(acks, sent);
            }
            Ack::Refused(reason) => recorder.error(puback_kind(reason)),
        })
    }
}

async fn close(connection: Connection<Stream>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.disconnect()).await;
}

impl Transport for MqttTransport {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn drive(self: Arc<Self>, device: Device, load: Load) -> BoxFuture {
        Box::pin(self.drive_device(device, load))
    }

    fn hold(self: Arc<Self>, device: Device, hold: Hold) -> BoxFuture {
        Box::pin(self.hold_connection(device, hold))
    }
}
