//! Configuration of the embedded northbound (a serde tree with defaults and a validation step).
//!
//! Durations are written as a number of seconds (`2`, `0.5`), like every other Ferry setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferry_adapter_core::config::duration_secs;
use serde::Deserialize;

use crate::error::SetupError;

/// Hono's AMQP messaging port in the sandbox, which Ferry's embedded northbound uses by default.
pub const DEFAULT_PORT: u16 = 15672;

/// Settings of the embedded AMQP 1.0 northbound endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NorthboundConfig {
    /// Address the AMQP 1.0 listener binds to (default `127.0.0.1:15672`).
    pub bind: SocketAddr,
    /// Application users allowed to log in with SASL PLAIN.
    pub users: Vec<UserConfig>,
    /// Whether SASL ANONYMOUS is accepted. Only sensible when everything binds to loopback.
    pub allow_anonymous: bool,
    /// Directory holding the durable event store (`events.sqlite`).
    pub data_dir: PathBuf,
    /// How long a QoS 1 telemetry send waits for credit and for the consumer's outcome, and how long
    /// any send waits for room on a consumer link in seconds (default 2).
    #[serde(with = "duration_secs")]
    pub send_timeout: Duration,
    /// How long a new connection may take for the AMQP and SASL handshake in seconds (default 10).
    #[serde(with = "duration_secs")]
    pub handshake_timeout: Duration,
    /// Maximum number of concurrent application connections (default 1000). Further connections
    /// wait in the listen backlog.
    pub max_connections: usize,
    /// Maximum number of unsettled events per tenant on their way to consumers (default 256).
    pub max_unsettled_events: usize,
    /// Number of events loaded from the store at a time (default 100).
    pub event_page_size: usize,
    /// Maximum number of events kept in the store; further events are refused (default 1,000,000).
    pub max_stored_events: u64,
    /// How long to wait before an event released by a consumer is offered again in seconds (default 0.2).
    #[serde(with = "duration_secs")]
    pub redelivery_delay: Duration,
}

impl Default for NorthboundConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            users: Vec::new(),
            allow_anonymous: false,
            data_dir: PathBuf::from("data"),
            send_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1000,
            max_unsettled_events: 256,
            event_page_size: 100,
            max_stored_events: 1_000_000,
            redelivery_delay: Duration::from_millis(200),
        }
    }
}

impl NorthboundConfig {
    /// Checks the settings before any port is bound or file is opened.
    pub fn validate(&self) -> Result<(), SetupError> {
        let invalid = |reason: &str| Err(SetupError::Config(reason.to_owned()));
        if self.users.is_empty() && !self.allow_anonymous {
            return invalid(
                "no application users are configured and allow_anonymous is false: no application could connect",
            );
        }
        if let Some(user) = self.users.iter().find(|u| u.name.is_empty()) {
            return invalid(&format!("a user has an empty name ({user:?})"));
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1");
        }
        if self.max_unsettled_events == 0 || self.event_page_size == 0 {
            return invalid("max_unsettled_events and event_page_size must be at least 1");
        }
        if self.send_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return invalid("send_timeout and handshake_timeout must be greater than zero");
        }
        Ok(())
    }

    /// Path of the SQLite event store inside [`Self::data_dir`].
    pub fn event_store_path(&self) -> PathBuf {
        self.data_dir.join("events.sqlite")
    }
}

/// An application allowed to consume messages (SASL PLAIN).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The SASL `authcid`.
    pub name: String,
    /// The password, compared in constant time.
    pub password: String,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_and_rejects_unknown_fields() -> Result<(), Box<dyn std::error::Error>> {
        let config: NorthboundConfig = serde_json::from_str(
            r#"{"bind":"127.0.0.1:0","users":[{"name":"app","password":"pw"}],"send_timeout":0.5}"#,
        )?;
        assert_eq!(config.send_timeout, Duration::from_millis(500));
        assert_eq!(config.users.len(), 1);
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("pw\""));
        let unknown: Result<NorthboundConfig, _> = serde_json::from_str(r#"{"bnd":"x"}"#);
        assert!(unknown.is_err());
        Ok(())
    }

    #[test]
    fn no_way_to_log_in_is_refused() {
        let config = NorthboundConfig::default();
        assert!(matches!(config.validate(), Err(SetupError::Config(_))));
    }
}
