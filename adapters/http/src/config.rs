//! Configuration of the HTTP adapter (Hono's `hono.http.*`).
//!
//! Durations are seconds ([`ferry_adapter_core::config::duration_secs`]). The build step
//! ([`HttpConfig::validate`]) refuses nonsense before any port is bound.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferry_adapter_core::config::{DEFAULT_MAX_PAYLOAD_SIZE, duration_secs};
use serde::{Deserialize, Serialize};

use crate::error::HttpError;

/// Settings of the HTTP adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Whether the insecure (plain HTTP) port is opened (default true).
    pub insecure_port_enabled: bool,
    /// Address of the insecure port (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// Address of the TLS port (default `127.0.0.1:8443`); opened only when a TLS configuration
    /// is given.
    pub tls_bind: SocketAddr,
    /// Largest request body in bytes (default 2048, Hono's `maxPayloadSize`). At most this many
    /// bytes plus one are read from a body; a larger body is answered with 413.
    pub max_payload_size: usize,
    /// Most connections open at once over both ports (default 10000). Further connections wait in
    /// the listen backlog until one closes.
    pub max_connections: usize,
    /// Longest time a TLS handshake may take, in seconds (default 10).
    #[serde(with = "duration_secs")]
    pub tls_handshake_timeout: Duration,
    /// Longest time a connection may sit idle between requests, or take to send one request's
    /// headers or body, in seconds (default 75, Hono's `idleTimeout`).
    #[serde(with = "duration_secs")]
    pub idle_timeout: Duration,
    /// Whether devices must authenticate (default true). When false, devices may send without
    /// credentials to `/telemetry/TENANT/DEVICE`, unless their tenant requires authentication.
    pub authentication_required: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            insecure_port_enabled: true,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            tls_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8443)),
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            authentication_required: true,
        }
    }
}

impl HttpConfig {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), HttpError> {
        let fail = |why: &str| Err(HttpError::InvalidConfig(why.to_owned()));
        if self.max_connections == 0 {
            return fail("max_connections must be at least 1");
        }
        if self.max_payload_size == 0 {
            return fail("max_payload_size must be at least 1");
        }
        if self.tls_handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            return fail("tls_handshake_timeout and idle_timeout must be positive");
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
        let c: HttpConfig =
            serde_json::from_str(r#"{"bind": "127.0.0.1:0", "idle_timeout": 0.5}"#)?;
        assert_eq!(c.bind, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        assert_eq!(c.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.tls_bind.port(), 8443);
        assert_eq!(c.max_payload_size, 2048);
        assert!(c.authentication_required);
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<HttpConfig>(r#"{"port": 1}"#).is_err());
        let zero = HttpConfig {
            max_connections: 0,
            ..HttpConfig::default()
        };
        assert!(zero.validate().is_err());
        Ok(())
    }
}
