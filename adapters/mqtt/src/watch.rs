//! Following registry changes (Hono 2.0): the MQTT side of adapter-core's
//! [`ferry_adapter_core::watch`]. A refusal that is terminal for MQTT cancels the connection's
//! token; the connection then closes (MQTT 5: DISCONNECT 0x87 first).

use ferry_adapter_core::ForwardError;
use ferry_adapter_core::watch::Revoke;
use ferry_registry_client::{DeviceId, TenantId};
use tokio_util::sync::CancellationToken;

use crate::error::PublishError;

/// Ends one MQTT connection by cancelling its token.
#[derive(Clone, Debug)]
pub(crate) struct Revoked(pub(crate) CancellationToken);

impl Revoke for Revoked {
    fn refused(&self, tenant: &TenantId, device: &DeviceId, error: ForwardError) {
        let error = PublishError::from(error);
        if error.is_terminal() {
            tracing::info!(%tenant, %device, reason = %error, "closing the connection after a registry change");
            self.0.cancel();
        }
    }
}

/// The adapter's open, authenticated connections.
pub(crate) type ConnectionWatch = ferry_adapter_core::watch::ConnectionWatch<Revoked>;

/// Keeps one connection watched until dropped.
pub(crate) type Watched = ferry_adapter_core::watch::Watched<Revoked>;
