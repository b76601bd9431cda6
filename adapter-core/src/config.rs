//! Configuration of the device pipeline shared by all adapters.
//!
//! Durations are written in seconds in the configuration file (integers or fractions), so they read
//! the same way in TOML and in environment variables; [`duration_secs`] is the serde helper that
//! adapters use for their own timeouts too.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Hono's default maximum payload size of every adapter, in bytes.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 2048;

/// Settings of the protocol-independent pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// Largest payload, in bytes, that the pipeline forwards (Hono's `maxPayloadSize`, 2048).
    /// An adapter with its own, smaller limit refuses larger bodies before they reach the pipeline.
    pub max_payload_size: usize,
    /// Highest bcrypt cost accepted in a stored password hash (default 12). A hash with a higher
    /// cost is refused with a log line instead of being computed: one such check could occupy a
    /// core for seconds, which any device could trigger at will.
    pub bcrypt_max_cost: u32,
    /// How long a successful password verification is remembered, in seconds (default 60). The
    /// cache key includes the stored hash, so a changed credential is never matched from the cache.
    #[serde(with = "duration_secs")]
    pub auth_cache_ttl: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            bcrypt_max_cost: 12,
            auth_cache_ttl: Duration::from_secs(60),
        }
    }
}

/// Serde helper: a [`Duration`] written as a number of seconds (`30`, `0.5`).
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as seconds (an integer when it is whole).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    /// Reads a non-negative number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| {
            serde::de::Error::custom(format!(
                "expected a non-negative number of seconds, got {secs}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_seconds_and_refuses_unknown_fields() -> Result<(), Box<dyn std::error::Error>> {
        let c: CoreConfig =
            serde_json::from_str(r#"{"auth_cache_ttl": 1.5, "bcrypt_max_cost": 10}"#)?;
        assert_eq!(c.auth_cache_ttl, Duration::from_millis(1500));
        assert_eq!(c.bcrypt_max_cost, 10);
        assert_eq!(c.max_payload_size, 2048);
        assert!(serde_json::from_str::<CoreConfig>(r#"{"max_payload": 1}"#).is_err());
        assert!(serde_json::from_str::<CoreConfig>(r#"{"auth_cache_ttl": -1}"#).is_err());
        let back: CoreConfig = serde_json::from_str(&serde_json::to_string(&c)?)?;
        assert_eq!(back, c);
        Ok(())
    }
}
