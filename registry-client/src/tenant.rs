//! Hono's Tenant API object, as the Tenant API `get` answers it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::TenantId;

fn yes() -> bool {
    true
}

/// A tenant as returned by the Tenant API (hono-api.md §7). Unknown members are kept in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantObject {
    /// The tenant's identifier.
    pub tenant_id: TenantId,
    /// A disabled tenant's devices are all refused.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per-adapter settings. Absent: every adapter is enabled. Present: unlisted types are disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<Vec<AdapterConfig>>,
    /// Default properties for the tenant's devices (`content-type`, `ttl`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub defaults: Map<String, Value>,
    /// Resource limits (`max-connections`, `max-ttl`, `data-volume`, ...), kept as Hono sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<Value>,
    /// The CAs whose certificates authenticate the tenant's devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_ca: Vec<TrustedCa>,
    /// Extension properties (`messaging-type`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub ext: Map<String, Value>,
    /// Any other member (`tracing`, `minimum-message-size`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How one protocol adapter type may be used by a tenant's devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AdapterConfig {
    /// Adapter type name, e.g. `hono-http`.
    #[serde(rename = "type")]
    pub adapter_type: String,
    /// Whether devices may use the adapter (a listed type defaults to disabled).
    #[serde(default)]
    pub enabled: bool,
    /// Whether devices must authenticate.
    #[serde(default = "yes")]
    pub device_authentication_required: bool,
    /// Adapter-specific settings such as `max-ttd`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub ext: Map<String, Value>,
    /// Any other member.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A trusted certificate authority of a tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TrustedCa {
    /// Identifier of the entry (management API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The CA's subject DN in RFC 2253 form.
    pub subject_dn: String,
    /// Base64 encoded DER SubjectPublicKeyInfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// `RSA` (default) or `EC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Start of the CA's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// End of the CA's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    /// Whether unknown devices with certificates from this CA are provisioned on first connect.
    #[serde(default)]
    pub auto_provisioning_enabled: bool,
    /// Template for the auth-id derived from a device certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_id_template: Option<String>,
    /// Any other member.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Whether a tenant lets devices use an adapter type, and whether they must authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterAccess {
    /// The adapter may be used; `authentication_required` as configured.
    Enabled {
        /// Devices must authenticate.
        authentication_required: bool,
    },
    /// The tenant disabled the adapter, or listed adapters without this one.
    Disabled,
}

impl TenantObject {
    /// Applies Hono's `adapters` rules: an absent list enables every adapter, a present list
    /// enables only the listed types whose `enabled` is true.
    pub fn adapter_access(&self, adapter_type: &str) -> AdapterAccess {
        let Some(adapters) = &self.adapters else {
            return AdapterAccess::Enabled {
                authentication_required: true,
            };
        };
        match adapters.iter().find(|a| a.adapter_type == adapter_type) {
            Some(a) if a.enabled => AdapterAccess::Enabled {
                authentication_required: a.device_authentication_required,
            },
            _ => AdapterAccess::Disabled,
        }
    }

    /// The configuration entry of one adapter type, if listed.
    pub fn adapter(&self, adapter_type: &str) -> Option<&AdapterConfig> {
        self.adapters
            .as_ref()?
            .iter()
            .find(|a| a.adapter_type == adapter_type)
    }

    /// A limit from `resource-limits` as a number, e.g. `max-ttl`.
    pub fn resource_limit(&self, name: &str) -> Option<i64> {
        self.resource_limits.as_ref()?.get(name)?.as_i64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(json: Value) -> TenantObject {
        match serde_json::from_value(json) {
            Ok(t) => t,
            Err(e) => panic!("test tenant does not parse: {e}"),
        }
    }

    #[test]
    fn adapter_rules_follow_hono() {
        let all = tenant(serde_json::json!({"tenant-id": "t"}));
        assert!(all.enabled);
        assert!(matches!(
            all.adapter_access("hono-http"),
            AdapterAccess::Enabled { .. }
        ));
        let listed = tenant(serde_json::json!({
            "tenant-id": "t",
            "adapters": [
                {"type": "hono-mqtt", "enabled": true, "device-authentication-required": false},
                {"type": "hono-coap"}
            ]
        }));
        assert_eq!(
            listed.adapter_access("hono-mqtt"),
            AdapterAccess::Enabled {
                authentication_required: false
            }
        );
        assert_eq!(listed.adapter_access("hono-coap"), AdapterAccess::Disabled);
        assert_eq!(listed.adapter_access("hono-http"), AdapterAccess::Disabled);
    }

    #[test]
    fn unknown_members_survive_a_round_trip() {
        let json = serde_json::json!({"tenant-id": "t", "enabled": false, "tracing": {"sampling-mode": "all"}});
        let t = tenant(json.clone());
        assert!(!t.enabled);
        assert_eq!(serde_json::to_value(&t).ok(), Some(json));
    }
}
