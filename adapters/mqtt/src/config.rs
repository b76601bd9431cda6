//! Configuration of the MQTT adapter (Hono's `hono.mqtt.*`), the `[mqtt]` section of Ferry's
//! configuration.
//!
//! Durations are seconds ([`ferry_adapter_core::config::duration_secs`]). The build step
//! ([`MqttConfig::validate`]) refuses nonsense before any port is bound.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferry_adapter_core::config::{DEFAULT_MAX_PAYLOAD_SIZE, duration_secs};
use serde::{Deserialize, Serialize};

use crate::error::MqttError;

/// Settings of the MQTT adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Address of the insecure (plain TCP) port (default `127.0.0.1:1883`).
    pub bind: SocketAddr,
    /// Address of the TLS port (default `127.0.0.1:8883`); opened only when a TLS configuration
    /// is given.
    pub tls_bind: SocketAddr,
    /// Whether the insecure port is opened (default true).
    pub insecure_port_enabled: bool,
    /// Largest PUBLISH payload in bytes (default 2048, Hono's `maxPayloadSize`). A larger
    /// message is dropped and the connection closed.
    pub max_payload_size: usize,
    /// Most connections open at once over both ports (default 10000, Hono's `maxConnections`).
    /// A device connecting beyond the limit gets CONNACK 0x03 (MQTT 5: 0x9C).
    pub max_connections: usize,
    /// Longest time from accepting a connection (after the TLS handshake) until its CONNECT
    /// packet arrived, in seconds (default 10).
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,
    /// Longest time a TLS handshake may take, in seconds (default 10).
    #[serde(with = "duration_secs")]
    pub tls_handshake_timeout: Duration,
    /// Whether devices must authenticate (default true). When false, a device may connect
    /// without credentials and publish to `telemetry/TENANT/DEVICE` (and `event/...`), unless
    /// its tenant requires authentication.
    pub authentication_required: bool,
    /// Whether `connected`/`disconnected` connection events are sent to `event/TENANT` for
    /// authenticated devices (default false; Hono's `HONO_CONNECTIONEVENTS_PRODUCER=events`).
    pub connection_events: bool,
    /// Most QoS 1 (and QoS 0) messages of one connection being forwarded at once (default 16).
    /// More in flight raise the throughput of one device; when the limit is reached the adapter
    /// stops reading from that connection until a forward completes (backpressure). PUBACKs go
    /// out in the order the messages arrived. Also announced as MQTT 5 `receive-maximum`.
    pub max_in_flight: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)),
            tls_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8883)),
            insecure_port_enabled: true,
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            authentication_required: true,
            connection_events: false,
            max_in_flight: 16,
        }
    }
}

impl MqttConfig {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), MqttError> {
        let fail = |why: &str| Err(MqttError::InvalidConfig(why.to_owned()));
        if self.max_connections == 0 {
            return fail("max_connections must be at least 1");
        }
        if self.max_payload_size == 0 || self.max_payload_size > 256 * 1024 * 1024 {
            return fail("max_payload_size must be between 1 and 268435456");
        }
        if self.max_in_flight == 0 {
            return fail("max_in_flight must be at least 1");
        }
        if self.connect_timeout.is_zero() || self.tls_handshake_timeout.is_zero() {
            return fail("connect_timeout and tls_handshake_timeout must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_hono_and_unknown_fields_are_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let c: MqttConfig =
            serde_json::from_str(r#"{"bind": "127.0.0.1:0", "connect_timeout": 0.5}"#)?;
        assert_eq!(c.bind, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.tls_bind.port(), 8883);
        assert_eq!(c.max_payload_size, 2048);
        assert!(c.authentication_required);
        assert!(!c.connection_events);
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<MqttConfig>(r#"{"port": 1}"#).is_err());
        for broken in [
            MqttConfig {
                max_connections: 0,
                ..MqttConfig::default()
            },
            MqttConfig {
                max_in_flight: 0,
                ..MqttConfig::default()
            },
            MqttConfig {
                connect_timeout: Duration::ZERO,
                ..MqttConfig::default()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
        Ok(())
    }
}
