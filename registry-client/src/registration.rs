//! Hono's Device Registration API assertion.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::DeviceId;

/// The answer to `assert`: the device exists, is enabled, and the gateway (if any) may act for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistrationAssertion {
    /// The asserted device.
    pub device_id: DeviceId,
    /// Gateways that may act for the device (`viaGroups` resolved to their members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<DeviceId>,
    /// Default properties of the device; they beat the tenant's defaults.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub defaults: Map<String, Value>,
    /// Any other member (`downstream-message-mapper`, `command-endpoint`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
