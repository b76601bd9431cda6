//! Messages on their way from a device to the northbound.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_registry_client::{DeviceId, TenantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Content type of Hono's empty notification (a "time till disconnect" announcement).
pub const EMPTY_NOTIFICATION: &str = "application/vnd.eclipse-hono-empty-notification";

/// Content type used when a device sends a body without a type and nothing else sets one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The northbound API a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// Telemetry: at most once or at least once, may be dropped without a consumer.
    Telemetry,
    /// Events: always at least once, kept durably until a consumer accepts them.
    Event,
}

impl Endpoint {
    /// The address prefix of the endpoint in Hono's northbound API (`telemetry`, `event`).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Telemetry => "telemetry",
            Endpoint::Event => "event",
        }
    }
}

/// Delivery guarantee a device asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Qos {
    /// Fire and forget (`qos` = 0).
    AtMostOnce,
    /// The device is acknowledged only after the northbound accepted the message (`qos` = 1).
    AtLeastOnce,
}

impl Qos {
    /// Hono's numeric representation (`0` or `1`).
    pub fn as_u8(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

/// What a protocol adapter hands to [`crate::Forwarder::forward`] for one upload.
#[derive(Clone, Debug)]
pub struct Upload {
    /// Telemetry or event.
    pub endpoint: Endpoint,
    /// Requested delivery guarantee (events are always at least once).
    pub qos: Qos,
    /// Content type given by the device, if any.
    pub content_type: Option<String>,
    /// Time to live requested by the device (events only).
    pub ttl: Option<Duration>,
    /// Seconds the device stays reachable for commands (`hono-ttd`).
    pub ttd: Option<i32>,
    /// Protocol-specific address the message was sent to (URI, topic, AMQP `to`).
    pub orig_address: String,
    /// MQTT's retain flag, forwarded as the `x-opt-retain` annotation.
    pub retain: bool,
    /// The payload, as received.
    pub payload: Bytes,
}

/// A message as the northbound sends it to applications (Hono's Telemetry and Event APIs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownstreamMessage {
    /// Tenant the device belongs to.
    pub tenant_id: TenantId,
    /// Device the message originates from (not the gateway that sent it).
    pub device_id: DeviceId,
    /// Telemetry or event.
    pub endpoint: Endpoint,
    /// Delivery guarantee.
    pub qos: Qos,
    /// MIME type of the payload.
    pub content_type: String,
    /// Creation time in milliseconds since the Unix epoch.
    pub creation_time: i64,
    /// Time to live, in milliseconds (`ttl` in Hono's API).
    pub ttl_ms: Option<u64>,
    /// Time till disconnect in seconds (`ttd`).
    pub ttd: Option<i32>,
    /// Adapter type name, e.g. `hono-http` (`orig_adapter`).
    pub orig_adapter: AdapterType,
    /// Address the device sent the message to (`orig_address`).
    pub orig_address: String,
    /// Further application properties (device and tenant defaults, `gateway_id`).
    pub properties: BTreeMap<String, serde_json::Value>,
    /// MQTT retain flag (`x-opt-retain` message annotation).
    pub retain: bool,
    /// The payload.
    pub payload: Bytes,
}

/// Milliseconds since the Unix epoch: a message's `creation_time` when it is made now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An adapter type name such as `hono-http`, shared by every message of the adapter (cloning it
/// allocates nothing). Compares with and reads as a `str`; serialised as a string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AdapterType(Arc<str>);

impl From<&str> for AdapterType {
    fn from(name: &str) -> Self {
        Self(Arc::from(name))
    }
}

impl From<String> for AdapterType {
    fn from(name: String) -> Self {
        Self(Arc::from(name))
    }
}

impl Deref for AdapterType {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for AdapterType {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for AdapterType {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for AdapterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AdapterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for AdapterType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AdapterType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}
