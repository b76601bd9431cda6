//! Hono's "effective TTL" rule (hono-api.md §14), as a pure function.
//!
//! Events use the tenant's `max-ttl` and the `ttl` default; telemetry uses
//! `max-ttl-telemetry-qos0`/`-qos1` and `ttl-telemetry-qos0`/`-qos1`, so telemetry has no ttl
//! unless the tenant or device configured one.
//!
//! 1. eff = max if max > -1, else -1 (unlimited).
//! 2. If the message has a ttl and (eff = -1 or ttl < eff), use it; otherwise use the default ttl
//!    (device default beats tenant default) under the same rule.
//! 3. If eff ≠ -1, the message gets `ttl` = eff × 1000 ms.

use crate::message::{Endpoint, Qos};

/// Names of the `resource-limits` maximum and the `defaults` key for one kind of message.
pub(crate) fn keys(endpoint: Endpoint, qos: Qos) -> (&'static str, &'static str) {
    match (endpoint, qos) {
        (Endpoint::Event, _) => ("max-ttl", "ttl"),
        (Endpoint::Telemetry, Qos::AtMostOnce) => ("max-ttl-telemetry-qos0", "ttl-telemetry-qos0"),
        (Endpoint::Telemetry, Qos::AtLeastOnce) => ("max-ttl-telemetry-qos1", "ttl-telemetry-qos1"),
    }
}

/// All `defaults` keys that are TTLs (they never become application properties).
pub(crate) const TTL_DEFAULT_KEYS: [&str; 4] = [
    "ttl",
    "ttl-telemetry-qos0",
    "ttl-telemetry-qos1",
    "ttl-command-response",
];

/// The effective TTL in milliseconds, or `None` for unlimited.
///
/// `max` comes from the tenant's resource limits, `requested` from the message (seconds),
/// `default` from the device's or tenant's defaults (seconds). Negative values mean "not set".
pub(crate) fn effective_ttl_ms(
    max: Option<i64>,
    requested: Option<u64>,
    default: Option<i64>,
) -> Option<u64> {
    let max = max.and_then(|m| u64::try_from(m).ok());
    let fits = |ttl: u64| max.is_none_or(|m| ttl < m);
    let default = default.and_then(|d| u64::try_from(d).ok());
    let eff = requested
        .filter(|&t| fits(t))
        .or(default.filter(|&t| fits(t)))
        .or(max)?;
    Some(eff.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_without_anything() {
        assert_eq!(effective_ttl_ms(None, None, None), None);
        assert_eq!(effective_ttl_ms(Some(-1), None, Some(-1)), None);
    }

    #[test]
    fn requested_ttl_below_max_wins() {
        assert_eq!(effective_ttl_ms(Some(60), Some(30), Some(10)), Some(30_000));
        assert_eq!(effective_ttl_ms(None, Some(30), Some(10)), Some(30_000));
        assert_eq!(effective_ttl_ms(Some(-1), Some(30), None), Some(30_000));
    }

    #[test]
    fn too_long_request_falls_back_to_default_then_max() {
        assert_eq!(
            effective_ttl_ms(Some(60), Some(120), Some(10)),
            Some(10_000)
        );
        assert_eq!(
            effective_ttl_ms(Some(60), Some(120), Some(90)),
            Some(60_000)
        );
        assert_eq!(effective_ttl_ms(Some(60), Some(120), None), Some(60_000));
        // Hono compares with "<": a ttl equal to the max is replaced by the max (same value).
        assert_eq!(effective_ttl_ms(Some(60), Some(60), None), Some(60_000));
    }

    #[test]
    fn default_applies_without_request() {
        assert_eq!(effective_ttl_ms(None, None, Some(15)), Some(15_000));
        assert_eq!(effective_ttl_ms(Some(5), None, Some(15)), Some(5_000));
        assert_eq!(effective_ttl_ms(Some(5), None, None), Some(5_000));
    }

    #[test]
    fn keys_per_message_kind() {
        assert_eq!(keys(Endpoint::Event, Qos::AtMostOnce), ("max-ttl", "ttl"));
        assert_eq!(
            keys(Endpoint::Telemetry, Qos::AtLeastOnce),
            ("max-ttl-telemetry-qos1", "ttl-telemetry-qos1")
        );
    }
}
