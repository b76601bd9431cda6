//! Following registry changes (Hono 2.0): the AMQP side of adapter-core's
//! [`ferry_adapter_core::watch`]. A refusal that is terminal for AMQP ends the connection with the
//! error condition of its kind.

use std::fmt;
use std::sync::Weak;

use fe2o3_amqp::types::definitions::Error as ErrorBody;
use ferry_adapter_core::ForwardError;
use ferry_adapter_core::watch::Revoke;
use ferry_registry_client::{DeviceId, TenantId};

use crate::connection::ConnectionState;
use crate::error::{connection_condition, is_terminal};

/// Ends one AMQP connection (if it is still open).
#[derive(Clone)]
pub(crate) struct Terminate(pub(crate) Weak<ConnectionState>);

impl fmt::Debug for Terminate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Terminate")
    }
}

impl Revoke for Terminate {
    fn refused(&self, tenant: &TenantId, device: &DeviceId, error: ForwardError) {
        if !is_terminal(&error, true) {
            return;
        }
        let Some(state) = self.0.upgrade() else {
            return;
        };
        tracing::info!(%tenant, %device, %error, "closing the connection after a registry change");
        let body = ErrorBody::new(connection_condition(error.kind()), error.to_string(), None);
        state.terminate(body);
    }
}

/// The adapter's open, authenticated connections.
pub(crate) type ConnectionWatch = ferry_adapter_core::watch::ConnectionWatch<Terminate>;
