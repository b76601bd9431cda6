//! Hono's connection events (hono-api.md §11.3): `connected` and `disconnected` notifications
//! that the connection-oriented adapters (MQTT, AMQP) send to `event/TENANT` for authenticated
//! devices when configured to (Hono's `HONO_CONNECTIONEVENTS_PRODUCER=events`).
//!
//! As Hono's event-based producer does, an event needs only its tenant to exist: there is no
//! enabled, adapter or registration check, so a device that was disabled (and disconnected for
//! it) still gets its `disconnected` event. The payload names the cause, the remote id (the MQTT
//! client id, the AMQP container id) and the adapter type as `source`; the event's time to live
//! is the tenant's `max-ttl`, if it has one.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Forwarder, tenant_lookup_error};
use crate::auth::AuthenticatedDevice;
use crate::error::ForwardError;
use crate::message::{DownstreamMessage, Endpoint, Qos};
use crate::ttl;

/// Content type of Hono's connection events.
pub const CONTENT_TYPE: &str = "application/vnd.eclipse-hono-dc-notification+json";

/// Why a connection event is sent (its `cause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The device's connection was accepted.
    Connected,
    /// The device's connection ended, for whatever reason.
    Disconnected,
}

impl Cause {
    /// The `cause` field of the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Connected => "connected",
            Cause::Disconnected => "disconnected",
        }
    }
}

impl Forwarder {
    /// Sends the connection event `cause` of `device`, whose connection the peer knows as
    /// `remote_id`, to `event/TENANT`. Returns once the northbound stored it.
    pub async fn connection_event(
        &self,
        device: &AuthenticatedDevice,
        cause: Cause,
        remote_id: &str,
    ) -> Result<(), ForwardError> {
        let tenant = self
            .inner
            .registry
            .get_tenant(&device.tenant_id)
            .await
            .map_err(|e| tenant_lookup_error(e, &device.tenant_id))?
            .payload;
        let payload = serde_json::json!({
            "cause": cause.as_str(),
            "remote-id": remote_id,
            "source": self.inner.adapter_type,
        });
        let (max_ttl, _) = ttl::keys(Endpoint::Event, Qos::AtLeastOnce);
        let message = DownstreamMessage {
            tenant_id: device.tenant_id.clone(),
            device_id: device.device_id.clone(),
            endpoint: Endpoint::Event,
            qos: Qos::AtLeastOnce,
            content_type: CONTENT_TYPE.to_owned(),
            creation_time: crate::message::now_millis(),
            ttl_ms: ttl::effective_ttl_ms(tenant.resource_limit(max_ttl), None, None),
            ttd: None,
            orig_adapter: self.inner.adapter_type.clone(),
            orig_address: String::new(),
            properties: BTreeMap::new(),
            retain: false,
            payload: Bytes::from(payload.to_string()),
        };
        self.inner.northbound.send(message).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_registry_client::{DeviceId, TenantId};
    use serde_json::json;

    use super::*;
    use crate::ErrorKind;
    use crate::test_util::{FakeNorthbound, FakeRegistry, tenant};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn events_carry_cause_remote_id_and_source_even_for_a_disabled_device() -> TestResult {
        let registry = Arc::new(FakeRegistry::new());
        let northbound = Arc::new(FakeNorthbound::new());
        registry.add_tenant(tenant(json!({
            "tenant-id": "t1",
            "resource-limits": {"max-ttl": 30}
        }))?);
        // The device is not registered (as after it was disabled): the event is still sent.
        let device = AuthenticatedDevice {
            tenant_id: TenantId::parse("t1")?,
            device_id: DeviceId::parse("gone")?,
            auth_id: "gone".to_owned(),
        };
        let forwarder = Forwarder::new(registry.clone(), northbound.clone(), "hono-amqp", 16);
        forwarder
            .connection_event(&device, Cause::Connected, "container-1")
            .await?;
        forwarder
            .connection_event(&device, Cause::Disconnected, "container-1")
            .await?;
        let sent = northbound.sent();
        let [connected, disconnected] = sent.as_slice() else {
            return Err(format!("expected two events, got {sent:?}").into());
        };
        assert_eq!(connected.endpoint, Endpoint::Event);
        assert_eq!(connected.qos, Qos::AtLeastOnce);
        assert_eq!(connected.content_type, CONTENT_TYPE);
        assert_eq!(connected.device_id.as_str(), "gone");
        assert_eq!(connected.orig_adapter, "hono-amqp");
        assert_eq!(connected.ttl_ms, Some(30_000));
        let payload: serde_json::Value = serde_json::from_slice(&connected.payload)?;
        assert_eq!(
            payload,
            json!({"cause": "connected", "remote-id": "container-1", "source": "hono-amqp"})
        );
        let payload: serde_json::Value = serde_json::from_slice(&disconnected.payload)?;
        assert_eq!(payload["cause"], "disconnected");

        // An unknown tenant gets no event.
        let stranger = AuthenticatedDevice {
            tenant_id: TenantId::parse("nowhere")?,
            ..device
        };
        let refused = forwarder
            .connection_event(&stranger, Cause::Disconnected, "c")
            .await;
        assert!(matches!(refused, Err(e) if e.kind() == ErrorKind::NotFound));
        assert_eq!(northbound.sent().len(), 2);
        Ok(())
    }
}
