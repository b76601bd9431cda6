//! MQTT devices on the harness's own client ([`crate::mqtt`]): MQTT 3.1.1 or 5 with username and
//! password, QoS 0 or 1, one connection per device, optionally over TLS (`mqtts://`, ring
//! provider, the CA from `--ca`), where a device may authenticate with its client certificate
//! instead (CONNECT without username and password).
//!
//! Each device is one task ([`super::link`]) that paces, encodes, writes and reads its PUBACKs
//! itself. At QoS 1 up to [`WINDOW`] publishes are unacknowledged (fewer if an MQTT 5 server's
//! Receive Maximum says so); each PUBACK records its latency from the send, and an MQTT 5 PUBACK
//! with a failure reason counts as an error of that reason. Publishes that are due together (rate
//! `max`, a device catching up, slots that fell due during a write) go out in one write. At QoS 0
//! a message counts as acknowledged once it was written. The topic is Hono's `telemetry` /
//! `event`; against a plain broker the consumer subscribes to the same topic.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;

use super::link::{self, Link};
use super::{ACK_TIMEOUT, BoxFuture, Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::config::{Address, MqttVersion, RunConfig, Target, TransportKind};
use crate::mqtt::error::puback_kind;
use crate::mqtt::{Ack, Connect, Connection, MqttError};
use crate::net::{self, Stream};

/// QoS 1 publishes a device may have unacknowledged.
pub const WINDOW: u16 = 100;
/// Keep-alive of device connections, seconds.
const KEEP_ALIVE_SECS: u16 = 30;
/// How long closing a connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The MQTT device protocol (Hono's MQTT adapter, or any broker).
pub struct MqttTransport {
    address: Address,
    version: MqttVersion,
    /// The TLS configuration without a client certificate and the server's name (`mqtts://`).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    topic: &'static str,
    max_packet: u32,
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
            max_packet: u32::try_from(config.payload_size + 1024).unwrap_or(u32::MAX),
        })
    }

    /// Connects, sends CONNECT and waits for the CONNACK: a device with a certificate presents
    /// it (over `mqtts://`) and sends no credentials. Bounded by [`ACK_TIMEOUT`].
    async fn connect(&self, device: &Device) -> Result<Connection<Stream>, String> {
        let (tls, credentials) = match (&self.tls, &device.tls) {
            (Some((_, name)), Some(own)) => (Some((own.clone(), name.clone())), None),
            (tls, _) => (
                tls.clone(),
                Some((device.username.as_str(), device.password.as_str())),
            ),
        };
        let packet = Connect {
            version: self.version,
            client_id: &device.client_id,
            credentials,
            keep_alive: KEEP_ALIVE_SECS,
            max_packet: self.max_packet,
        };
        let connect = async {
            let stream = net::dial(&self.address.host, self.address.port, tls).await?;
            Connection::connect(stream, &packet, WINDOW).await
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
        let mut link = MqttLink {
            connection,
            topic: self.topic,
            qos: load.effective_qos(),
        };
        link::upload(&mut link, &mut load).await;
        close(link.connection).await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let connected = self.connect(&device).await;
        if let Err(kind) = &connected {
            hold.recorder.error(kind.clone());
        }
        let _ = hold.opened.send(connected.is_ok()).await;
        let Ok(connection) = connected else { return };
        let mut link = MqttLink {
            connection,
            topic: self.topic,
            qos: 0,
        };
        link::idle(&mut link, &hold.recorder, &hold.stop).await;
        close(link.connection).await;
    }
}

/// A device's connection as the sending loop drives it.
struct MqttLink {
    connection: Connection<Stream>,
    topic: &'static str,
    qos: u8,
}

impl Link for MqttLink {
    type Error = MqttError;

    fn kind(error: &MqttError) -> String {
        error.kind()
    }

    fn has_output(&mut self) -> bool {
        self.connection.has_output()
    }

    fn write(&mut self) -> impl Future<Output = Result<(), MqttError>> + Send {
        self.connection.write()
    }

    fn read(&mut self) -> impl Future<Output = Result<(), MqttError>> + Send {
        self.connection.read()
    }

    fn process(
        &mut self,
        mut outcome: impl FnMut(Instant, Result<(), String>),
    ) -> Result<(), MqttError> {
        self.connection.process(|sent, ack| {
            outcome(
                sent,
                match ack {
                    Ack::Accepted => Ok(()),
                    Ack::Refused(reason) => Err(puback_kind(reason)),
                },
            );
        })
    }

    fn can_send(&self) -> bool {
        self.connection.can_publish(self.qos)
    }

    fn send(&mut self, payload: &[u8], sent: Instant) {
        // The loop asked `can_send` first, so a QoS 1 publish has its packet id.
        let _ = self.connection.publish(self.topic, self.qos, payload, sent);
    }

    fn acknowledged_when_written(&self) -> bool {
        self.qos == 0
    }

    fn outstanding(&self) -> usize {
        self.connection.in_flight()
    }

    fn heartbeat_interval(&mut self) -> Option<Duration> {
        Some(self.connection.keep_alive_interval())
    }

    fn heartbeat(&mut self) {
        self.connection.keep_alive();
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
