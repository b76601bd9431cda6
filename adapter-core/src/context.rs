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

    /// The context of another adapter type of the same process: it shares this context's
    /// authenticator (one bcrypt bound and one cache of verified passwords for the process),
    /// registry, northbound and shutdown.
    pub fn for_adapter(&self, adapter_type: impl Into<String>) -> Self {
        Self {
            authenticator: self.authenticator.clone(),
            forwarder: self.forwarder.for_adapter(adapter_type),
            shutdown: self.shutdown.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferry_registry_client::{DeviceId, TenantId};

    use super::*;
    use crate::message::{Endpoint, Qos, Upload};
    use crate::test_util::{FakeNorthbound, FakeRegistry};

    fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}

    #[test]
    fn adapters_of_one_process_share_the_authenticator() {
        let http = AdapterContext::new(
            &CoreConfig::default(),
            "hono-http",
            Arc::new(FakeRegistry::new()),
            Arc::new(FakeNorthbound::new()),
            CancellationToken::new(),
        );
        let mqtt = http.for_adapter("hono-mqtt");
        assert_eq!(mqtt.forwarder.adapter_type(), "hono-mqtt");
        assert_eq!(http.forwarder.adapter_type(), "hono-http");
        assert!(mqtt.authenticator.is_shared_with(&http.authenticator));
        let separate = AdapterContext::new(
            &CoreConfig::default(),
            "hono-mqtt",
            Arc::new(FakeRegistry::new()),
            Arc::new(FakeNorthbound::new()),
            CancellationToken::new(),
        );
        assert!(!separate.authenticator.is_shared_with(&http.authenticator));
    }

    /// Adapters spawn a task per connection: the pipeline's futures must be `Send + 'static`
    /// when they own a clone of the context.
    #[test]
    fn pipeline_futures_can_be_spawned() -> Result<(), Box<dyn std::error::Error>> {
        let ctx = AdapterContext::new(
            &CoreConfig::default(),
            "hono-http",
            Arc::new(FakeRegistry::new()),
            Arc::new(FakeNorthbound::new()),
            CancellationToken::new(),
        );
        let (tenant, device) = (TenantId::parse("t")?, DeviceId::parse("d")?);
        let future = async move {
            let sender = ctx
                .authenticator
                .authenticate_password("a@t", "p")
                .await
                .ok();
            let upload = Upload {
                endpoint: Endpoint::Telemetry,
                qos: Qos::AtMostOnce,
                content_type: None,
                ttl: None,
                ttd: None,
                orig_address: String::new(),
                retain: false,
                payload: Bytes::new(),
            };
            ctx.forwarder
                .forward(sender.as_ref(), &tenant, &device, upload)
                .await
        };
        spawnable(&future);
        Ok(())
    }
}
