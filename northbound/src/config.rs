//! Configuration of the embedded northbound (a serde tree with defaults and a validation step).
//!
//! Durations are written as strings with a unit (`"2s"`, `"500ms"`, `"1m"`) or as a number of
//! milliseconds.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    /// any send waits for room on a consumer link (default 2 s).
    #[serde(deserialize_with = "de_duration")]
    pub send_timeout: Duration,
    /// How long a new connection may take for the AMQP and SASL handshake (default 10 s).
    #[serde(deserialize_with = "de_duration")]
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
    /// How long to wait before an event released by a consumer is offered again (default 200 ms).
    #[serde(deserialize_with = "de_duration")]
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

/// Parses `"500ms"`, `"2s"`, `"1m"`, `"1h"` or a plain number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. \"2s\" or \"500ms\""))?;
    let millis = match unit.trim() {
        "" | "ms" => Some(value),
        "s" => value.checked_mul(1000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        other => return Err(format!("invalid duration unit {other:?} in {text:?}")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_millis(42)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn config_deserializes_and_rejects_unknown_fields() -> Result<(), Box<dyn std::error::Error>> {
        let config: NorthboundConfig = serde_json::from_str(
            r#"{"bind":"127.0.0.1:0","users":[{"name":"app","password":"pw"}],"send_timeout":"500ms"}"#,
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
