//! MQTT devices: MQTT 3.1.1 or 5 ([`client`], rumqttc's two APIs) with username and password,
//! QoS 0 or 1, one connection per device, optionally over TLS (`mqtts://`, ring provider, the CA
//! from `--ca`), where a device may authenticate with its client certificate instead (CONNECT
//! without username and password).
//!
//! The publisher task paces and hands publishes to rumqttc; the event-loop task matches
//! written publishes (same order) to the send times and PUBACKs to the packet, so
//! acknowledgement latency is exact at QoS 1. At QoS 0 a message counts as acknowledged once it was
//! written to the socket. The topic is Hono's `telemetry` / `event`; against a plain broker the
//! consumer subscribes to the same topic.

pub mod client;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::client::{Client, ClientOptions, Events, Polled};
use super::{ACK_TIMEOUT, BoxFuture, DRAIN, Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::config::{Address, MqttVersion, RunConfig, Target, TransportKind};
use crate::stats::{Recorder, histogram};

/// Publishes a device may have unacknowledged (rumqttc's window).
const INFLIGHT: u16 = 100;
/// Requests queued between the publisher and the event loop.
const CHANNEL: usize = 64;

/// The MQTT device protocol (Hono's MQTT adapter, or any broker).
#[derive(Debug)]
pub struct MqttTransport {
    address: Address,
    version: MqttVersion,
    tls: Option<Arc<rustls::ClientConfig>>,
    topic: &'static str,
    max_packet: usize,
}

/// Builds a rustls client configuration (ring) trusting the CA certificates in `ca_file`, without
/// a client certificate.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, PerfError> {
    crate::tls::client_config(&crate::tls::roots(ca_file)?, None)
}

/// Send times of publishes handed to rumqttc, matched to packet ids by the event loop.
#[derive(Default)]
struct InFlight {
    queued: Mutex<VecDeque<Instant>>,
    outstanding: AtomicI64,
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
            Some(tls_config(config.ca_file.as_deref())?)
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

    fn client(&self, device: &Device) -> (Client, Events) {
        // A device with a certificate presents it (over `mqtts://`) and sends no credentials.
        let (tls, credentials) = match (&device.tls, &self.tls) {
            (Some(own), Some(_)) => (Some(own), None),
            _ => (
                self.tls.as_ref(),
                Some((device.username.as_str(), device.password.as_str())),
            ),
        };
        client::new(&ClientOptions {
            version: self.version,
            address: &self.address,
            tls,
            client_id: &device.client_id,
            credentials,
            max_packet: self.max_packet,
            inflight: INFLIGHT,
            channel: CHANNEL,
            // Connecting (TCP, TLS, CONNACK) may take as long as an acknowledgement (rumqttc: 5 s).
            connect_timeout: ACK_TIMEOUT,
        })
    }

    /// One new connection (a full TLS handshake for `mqtts://`), CONNECT, one PUBLISH at QoS 1
    /// until its PUBACK, DISCONNECT: the outcome as an error kind.
    pub async fn send_once(&self, device: &Device, payload: bytes::Bytes) -> Result<(), String> {
        let (client, mut events) = self.client(device);
        let exchange = async {
            events.connected(ACK_TIMEOUT).await?;
            if !client.publish(self.topic, 1, payload).await {
                return Err("mqtt client closed".to_owned());
            }
            events
                .until(ACK_TIMEOUT, |p| matches!(p, Polled::Acknowledged(_)))
                .await
        };
        let outcome = tokio::time::timeout(ACK_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err("timeout".to_owned()));
        client.disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(100), events.poll()).await;
        outcome
    }

    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let recorder = load.recorder.clone();
        let (client, mut events) = self.client(&device);
        let connected = events.connected(Duration::from_secs(30)).await;
        if let Err(kind) = &connected {
            recorder.error(kind.clone());
        }
        let _ = load.ready.send(connected.is_ok()).await;
        let qos = load.effective_qos();
        let inflight = Arc::new(InFlight::default());
        let done = tokio_util::sync::CancellationToken::new();
        let closing = tokio_util::sync::CancellationToken::new();
        let event_loop = tokio::spawn(run_events(
            events,
            qos,
            inflight.clone(),
            recorder.clone(),
            Closing {
                closing: closing.clone(),
                done: done.clone(),
            },
        ));
        if let Some(start) = load.wait_start().await {
            let mut pacer = load.pacer(start);
            while pacer.next().await {
                let payload = load.next_payload();
                if let Ok(mut q) = inflight.queued.lock() {
                    q.push_back(Instant::now());
                }
                inflight.outstanding.fetch_add(1, Ordering::Relaxed);
                match pacer
                    .unless_stopped(client.publish(self.topic, qos, payload))
                    .await
                {
                    Some(true) => recorder.sent(),
                    Some(false) => {
                        recorder.error("mqtt client closed");
                        break;
                    }
                    None => {
                        if let Ok(mut q) = inflight.queued.lock() {
                            q.pop_back();
                        }
                        inflight.outstanding.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            // Give outstanding publishes their acknowledgements.
            let deadline = Instant::now() + DRAIN;
            while inflight.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        closing.cancel();
        client.disconnect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        done.cancel();
        let _ = event_loop.await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let (client, mut events) = self.client(&device);
        let connected = events.connected(Duration::from_secs(60)).await;
        if let Err(kind) = &connected {
            hold.recorder.error(kind.clone());
        }
        let _ = hold.opened.send(connected.is_ok()).await;
        if connected.is_err() {
            return;
        }
        loop {
            tokio::select! {
                polled = events.poll() => {
                    if let Err(kind) = polled {
                        hold.recorder.error(kind);
                        return;
                    }
                }
                () = hold.stop.cancelled() => break,
            }
        }
        client.disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    }
}

/// How an event loop learns that its client is going away.
struct Closing {
    /// The client is disconnecting: errors are expected now.
    closing: tokio_util::sync::CancellationToken,
    /// Stop polling.
    done: tokio_util::sync::CancellationToken,
}

/// Drives one client's event loop: matches publishes to acknowledgements and records them.
async fn run_events(
    mut events: Events,
    qos: u8,
    inflight: Arc<InFlight>,
    recorder: Arc<Recorder>,
    Closing { closing, done }: Closing,
) {
    let mut by_pkid: HashMap<u16, Instant> = HashMap::new();
    let mut acks = histogram();
    // One wait for the end, polled only when the event loop has nothing to report.
    let done = done.cancelled_owned();
    tokio::pin!(done);
    loop {
        let event = tokio::select! {
            biased;
            e = events.poll() => e,
            () = &mut done => break,
        };
        match event {
            Ok(Polled::Written(pkid)) => {
                let t0 = inflight.queued.lock().ok().and_then(|mut q| q.pop_front());
                if qos == 0 {
                    recorder.acked();
                    inflight.outstanding.fetch_sub(1, Ordering::Relaxed);
                } else if let Some(t0) = t0 {
                    by_pkid.insert(pkid, t0);
                }
            }
            Ok(Polled::Acknowledged(pkid)) => {
                if let Some(t0) = by_pkid.remove(&pkid) {
                    recorder.acked();
                    acks.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                    inflight.outstanding.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Ok(Polled::Refused(pkid, kind)) => {
                if by_pkid.remove(&pkid).is_some() {
                    recorder.error(kind);
                    inflight.outstanding.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(kind) => {
                if closing.is_cancelled() {
                    break;
                }
                recorder.error(kind);
                // rumqttc reconnects on the next poll; do not spin against a dead broker.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = &mut done => break,
                }
            }
        }
    }
    recorder.merge_ack_latency(&acks);
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
