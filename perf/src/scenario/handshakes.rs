//! One message per connection: the `handshakes` and `provision-storm` scenarios.
//!
//! [`OneShot`] opens a new connection for one message (with a client certificate: a full TLS
//! handshake, no resumption), sends it, waits for its acknowledgement (HTTP 2xx, MQTT PUBACK)
//! and closes. [`Handshakes`] is the transport of the `handshakes` scenario: every scheduled
//! message is such a connection, so the acknowledgement latency is connect → 202 (or → PUBACK)
//! and the acknowledged rate is handshakes per second.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::http::HttpTransport;
use super::mqtt::MqttTransport;
use super::{BoxFuture, Device, Hold, Load, Transport};
use crate::stats::histogram;

/// A device protocol that can send one message on a new connection.
#[derive(Clone, Debug)]
pub enum OneShot {
    /// HTTP: POST on a new connection.
    Http(Arc<HttpTransport>),
    /// MQTT: CONNECT, PUBLISH (QoS 1), DISCONNECT.
    Mqtt(Arc<MqttTransport>),
}

impl OneShot {
    /// Connects `device`, sends `payload` and waits for its acknowledgement; the error kind if
    /// anything failed.
    pub async fn send(&self, device: &Device, qos: u8, payload: Bytes) -> Result<(), String> {
        match self {
            OneShot::Http(t) => t.send_once(device, qos, payload).await,
            OneShot::Mqtt(t) => t.send_once(device, payload).await,
        }
    }

    /// The name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            OneShot::Http(t) => t.name(),
            OneShot::Mqtt(t) => t.name(),
        }
    }
}

/// The `handshakes` scenario's transport: a new connection for every message.
#[derive(Debug)]
pub struct Handshakes {
    once: OneShot,
}

impl Handshakes {
    /// Handshakes over `once`'s protocol.
    pub fn new(once: OneShot) -> Self {
        Self { once }
    }

    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let recorder = load.recorder.clone();
        let qos = load.effective_qos();
        // The first connection also warms the gateway's caches (tenant, credentials).
        let warmed = self.once.send(&device, qos, load.warmup_payload()).await;
        if let Err(kind) = &warmed {
            recorder.error(format!("{kind} (warm-up)"));
        }
        let _ = load.ready.send(warmed.is_ok()).await;
        if warmed.is_err() {
            return;
        }
        let Some(start) = load.wait_start().await else {
            return;
        };
        let mut pacer = load.pacer(start);
        let mut latencies = histogram();
        while pacer.next().await {
            let payload = load.next_payload();
            recorder.sent();
            let t0 = Instant::now();
            match self.once.send(&device, qos, payload).await {
                Ok(()) => {
                    recorder.acked();
                    crate::stats::record_since(&mut latencies, t0);
                }
                Err(kind) => recorder.error(kind),
            }
        }
        recorder.merge_ack_latency(&latencies);
    }
}

impl Transport for Handshakes {
    fn name(&self) -> &'static str {
        self.once.name()
    }

    fn drive(self: Arc<Self>, device: Device, load: Load) -> BoxFuture {
        Box::pin(self.drive_device(device, load))
    }

    /// Holding a connection is the protocol's own business.
    fn hold(self: Arc<Self>, device: Device, hold: Hold) -> BoxFuture {
        match &self.once {
            OneShot::Http(t) => t.clone().hold(device, hold),
            OneShot::Mqtt(t) => t.clone().hold(device, hold),
        }
    }
}
