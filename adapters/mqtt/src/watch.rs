//! Following registry changes (Hono 2.0): the MQTT side of adapter-core's
//! [`ferry_adapter_core::watch`]. A refusal that is terminal for MQTT ends the connection through
//! its link (`serving.rs`); the connection then closes (MQTT 5: DISCONNECT 0x87 first).

use ferry_adapter_core::ForwardError;
use ferry_adapter_core::watch::Revoke;
use ferry_registry_client::{DeviceId, TenantId};
use std::sync::Arc;

use crate::error::PublishError;
use crate::serving::Link;

/// Ends one MQTT connection through its link.
#[derive(Clone, Debug)]
pub(crate) struct Revoked(pub(crate) Arc<Link>);

impl Revoke for Revoked {
    fn refused(&self, tenant: &TenantId, device: &DeviceId, error: ForwardError) {
        let error = PublishError::from(error);
        if error.is_terminal() {
            tracing::info!(%tenant, %device, reason = %error, "closing the connection after a registry change");
            self.0.revoke();
        }
    }
}

/// The adapter's open, authenticated connections.
pub(crate) type ConnectionWatch = ferry_adapter_core::watch::ConnectionWatch<Revoked>;

/// Keeps one connection watched until dropped.
pub(crate) type Watched = ferry_adapter_core::watch::Watched<Revoked>;
