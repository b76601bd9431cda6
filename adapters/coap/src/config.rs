//! Configuration of the CoAP adapter (Hono's `hono.coap.*`).
//!
//! Durations are seconds ([`ferry_adapter_core::config::duration_secs`]). The build step
//! ([`CoapConfig::validate`]) refuses values that cannot work before any port is bound.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferry_adapter_core::config::{DEFAULT_MAX_PAYLOAD_SIZE, duration_secs};
use serde::{Deserialize, Serialize};

use crate::error::CoapError;

/// Settings of the CoAP adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// Address of the plain UDP port (default `127.0.0.1:5683`). Opened only when
    /// `authentication_required` is false: plain CoAP has no way to authenticate a device.
    pub bind: SocketAddr,
    /// Address of the DTLS port (default `127.0.0.1:5684`).
    pub dtls_bind: SocketAddr,
    /// Whether devices must authenticate (default true). When false, the plain UDP port is opened
    /// and devices may send to `PUT /t/TENANT/DEVICE` without credentials, unless their tenant
    /// requires authentication.
    pub authentication_required: bool,
    /// Largest request payload in bytes (default 2048, Hono's `maxPayloadSize`); larger payloads
    /// are answered with 4.13 and a Size1 option.
    pub max_payload_size: usize,
    /// How long a confirmable request may take before it is acknowledged with an empty ACK and
    /// answered later in a separate confirmable response, in seconds (default 0.5, Hono's
    /// `timeoutToAck`).
    #[serde(with = "duration_secs")]
    pub timeout_to_ack: Duration,
    /// Longest time a DTLS handshake may take, in seconds (default 10). A half-open handshake
    /// holds its peer slot at most this long.
    #[serde(with = "duration_secs")]
    pub handshake_timeout: Duration,
    /// How long a DTLS session may stay silent before it is dropped, in seconds (default 600).
    /// The device then starts a new handshake.
    #[serde(with = "duration_secs")]
    pub idle_timeout: Duration,
    /// Most DTLS peers (sessions and handshakes) at once (default 10000); further ClientHellos
    /// are dropped until a slot frees. On the plain port, the most requests in flight at once
    /// (further requests are answered with 5.03).
    pub max_peers: usize,
    /// Kernel receive buffer of each UDP port in bytes (default 4194304; 0 keeps the system
    /// default). Linux grants at most `net.core.rmem_max`. A small buffer drops datagrams
    /// whenever the read loop falls behind for a moment, and devices have to retransmit.
    pub receive_buffer: usize,
}

impl Default for CoapConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 5683)),
            dtls_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 5684)),
            authentication_required: true,
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            timeout_to_ack: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_peers: 10_000,
            receive_buffer: 4 << 20,
        }
    }
}

impl CoapConfig {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), CoapError> {
        let fail = |why: &str| Err(CoapError::InvalidConfig(why.to_owned()));
        if self.max_peers == 0 {
            return fail("max_peers must be at least 1");
        }
        if self.max_payload_size == 0 || self.max_payload_size > 60_000 {
            return fail("max_payload_size must be between 1 and 60000 (one UDP datagram)");
        }
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            return fail("handshake_timeout and idle_timeout must be positive");
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
        let c: CoapConfig =
            serde_json::from_str(r#"{"dtls_bind": "127.0.0.1:0", "timeout_to_ack": 0.2}"#)?;
        assert_eq!(c.dtls_bind, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        assert_eq!(c.timeout_to_ack, Duration::from_millis(200));
        assert_eq!(c.bind.port(), 5683);
        assert!(c.bind.ip().is_loopback());
        assert!(c.authentication_required);
        assert_eq!(c.max_payload_size, 2048);
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<CoapConfig>(r#"{"port": 1}"#).is_err());
        let zero = CoapConfig {
            max_peers: 0,
            ..CoapConfig::default()
        };
        assert!(zero.validate().is_err());
        let back: CoapConfig = serde_json::from_str(&serde_json::to_string(&c)?)?;
        assert_eq!(back, c);
        Ok(())
    }
}
