//! Configuration of the AMQP adapter (Hono's `hono.amqp.*`).
//!
//! Durations are seconds ([`ferry_adapter_core::config::duration_secs`]). The build step
//! ([`AmqpConfig::validate`]) refuses nonsense before any port is bound.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferry_adapter_core::config::{DEFAULT_MAX_PAYLOAD_SIZE, duration_secs};
use serde::{Deserialize, Serialize};

use crate::error::AmqpError;

/// Settings of the AMQP 1.0 adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Whether the insecure (plain AMQP) port is opened (default true). Passwords then travel in
    /// clear text: keep it on loopback or disable it in production.
    pub insecure_port_enabled: bool,
    /// Address of the insecure port (default `127.0.0.1:5672`).
    pub bind: SocketAddr,
    /// Address of the TLS port (default `127.0.0.1:5671`; TLS from the first byte, `amqps://`);
    /// opened only when a TLS configuration is given.
    pub tls_bind: SocketAddr,
    /// Largest message payload in bytes (default 2048, Hono's `maxPayloadSize`). A larger message
    /// is dropped and its link closed with `amqp:link:message-size-exceeded`.
    pub max_payload_size: usize,
    /// Most connections served at once over both ports (default 10000). Further connections wait
    /// (one per port accepted, the rest in the listen backlog) until one closes.
    pub max_connections: usize,
    /// Longest time a TLS handshake may take, in seconds (default 10).
    #[serde(with = "duration_secs")]
    pub tls_handshake_timeout: Duration,
    /// Longest time the AMQP and SASL handshake (protocol headers, SASL exchange, `open`) may
    /// take after the TCP or TLS connection is up, in seconds (default 10).
    #[serde(with = "duration_secs")]
    pub handshake_timeout: Duration,
    /// Idle timeout announced in `open` and enforced on incoming traffic, in seconds (default 60,
    /// Hono's `idleTimeout`). A device that sends nothing, not even empty frames, for this long
    /// is disconnected.
    #[serde(with = "duration_secs")]
    pub idle_timeout: Duration,
    /// Whether devices must authenticate (default true). When false, SASL ANONYMOUS is offered
    /// too and anonymous devices send to `t/TENANT/DEVICE`, unless their tenant requires
    /// authentication.
    pub authentication_required: bool,
    /// Whether `connected`/`disconnected` connection events are sent to `event/TENANT` for
    /// authenticated devices (default false; Hono's `HONO_CONNECTIONEVENTS_PRODUCER=events`).
    /// Their `remote-id` is the container id of the device's `open`.
    pub connection_events: bool,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            insecure_port_enabled: true,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 5672)),
            tls_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 5671)),
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            authentication_required: true,
            connection_events: false,
        }
    }
}

impl AmqpConfig {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), AmqpError> {
        let fail = |why: &str| Err(AmqpError::InvalidConfig(why.to_owned()));
        if self.max_connections == 0 {
            return fail("max_connections must be at least 1");
        }
        if self.max_payload_size == 0 {
            return fail("max_payload_size must be at least 1");
        }
        if self.tls_handshake_timeout.is_zero()
            || self.handshake_timeout.is_zero()
            || self.idle_timeout.is_zero()
        {
            return fail(
                "tls_handshake_timeout, handshake_timeout and idle_timeout must be positive",
            );
        }
        if u32::try_from(self.idle_timeout.as_millis()).is_err() {
            return fail("idle_timeout must fit AMQP's milliseconds field (at most 49 days)");
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
        let c: AmqpConfig =
            serde_json::from_str(r#"{"bind": "127.0.0.1:0", "idle_timeout": 0.5}"#)?;
        assert_eq!(c.bind, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        assert_eq!(c.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.tls_bind.port(), 5671);
        assert_eq!(AmqpConfig::default().bind.port(), 5672);
        assert_eq!(AmqpConfig::default().idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_payload_size, 2048);
        assert!(c.authentication_required);
        assert!(!c.connection_events);
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<AmqpConfig>(r#"{"port": 1}"#).is_err());
        let zero = AmqpConfig {
            max_connections: 0,
            ..AmqpConfig::default()
        };
        assert!(zero.validate().is_err());
        let forever = AmqpConfig {
            idle_timeout: Duration::from_secs(u64::from(u32::MAX)),
            ..AmqpConfig::default()
        };
        assert!(forever.validate().is_err());
        Ok(())
    }
}
