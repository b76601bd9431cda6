//! What every adapter listener receives: the shared handles of the device pipeline.
//!
//! One cheap-to-clone struct instead of long argument lists; adding a handle (metrics, resource
//! limits, command routing) does not touch every adapter's signatures.

use std::sync::Arc;

use ferry_registry_client::DeviceRegistry;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::CoreConfig;
use crate::forward::Forwarder;
use crate::northbound::Northbound;

/// Shared handles for one adapter. Clones share everything.
#[derive(Clone, Debug)]
pub struct AdapterContext {
    /// Proves device identities.
    pub authenticator: Authenticator,
    /// Checks uploads and sends them north.
    pub forwarder: Forwarder,
    /// Fires when the process shuts down: listeners stop accepting and let in-flight work finish.
    pub shutdown: CancellationToken,
}

impl AdapterContext {
    /// Builds the context of the adapter type `adapter_type` (e.g. `hono-http`).
    ///
    /// `registry` should be the cached registry ([`ferry_registry_client::Cached`]).
    pub fn new(
        config: &CoreConfig,
        adapter_type: impl Into<String>,
        registry: Arc<dyn DeviceRegistry>,
        northbound: Arc<dyn Northbound>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            authenticator: Authenticator::new(Arc::clone(&registry), config),
            forwarder: Forwarder::new(registry, northbound, adapter_type, config.max_payload_size),
            shutdown,
        }
    }
}
