//! The adapter's ports: binding, and the accept loops.
//!
//! Each accept loop takes a permit of the adapter's connection limit and spawns a
//! [`Connection`] task; TLS handshakes happen in that task. When no permit is left, the
//! connection is still accepted (a bounded number at a time) so that the device learns why:
//! its CONNECT is answered with CONNACK 0x03 (MQTT 5: 0x9C). On shutdown the loops stop
//! accepting and [`MqttAdapter::run`] waits until every connection task has ended.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_adapter_core::AdapterContext;
use ferry_adapter_core::accept::{Port, Ports, next_connection};
use ferry_registry_client::ChangeListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::MqttConfig;
use crate::connection::Connection;
use crate::error::MqttError;
use crate::limits::TenantConnections;
use crate::packet::PACKET_OVERHEAD;
use crate::serving::ServingConnections;
use crate::session::{Permit, Shared};
use crate::watch::ConnectionWatch;

/// How many connections over the limit may wait for their refusal at once; beyond that they
/// are closed without a CONNACK.
const MAX_REFUSALS_IN_PROGRESS: usize = 64;

/// The MQTT adapter, bound and ready to [`run`](MqttAdapter::run).
pub struct MqttAdapter {
    ports: Ports,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
}

impl std::fmt::Debug for MqttAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttAdapter")
            .field("local_addr", &self.local_addr())
            .field("tls_local_addr", &self.tls_local_addr())
            .finish_non_exhaustive()
    }
}

impl MqttAdapter {
    /// Validates `config` and binds the insecure port (if enabled) and, given a TLS server
    /// configuration, the TLS port. `ctx` must be built for the adapter type
    /// [`crate::ADAPTER_TYPE`].
    pub async fn bind(
        config: &MqttConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        ctx: AdapterContext,
    ) -> Result<Self, MqttError> {
        config.validate()?;
        // rustls hands a TLS 1.3 connection's traffic keys over to the lean record layer only
        // with secret extraction enabled (`ferry_adapter_core::tls::accept`).
        let tls = tls.map(|tls| {
            let mut tls = Arc::unwrap_or_clone(tls);
            tls.enable_secret_extraction = true;
            (config.tls_bind, Arc::new(tls))
        });
        let ports = Ports::bind(config.insecure_port_enabled.then_some(config.bind), tls).await?;
        let max_payload_size = config
            .max_payload_size
            .min(ctx.forwarder.max_payload_size());
        let max_packet_size = u32::try_from(max_payload_size + PACKET_OVERHEAD)
            .map_err(|_| MqttError::InvalidConfig("max_payload_size is too large".to_owned()))?;
        let watch = Arc::new(ConnectionWatch::new(ctx.forwarder.clone()));
        Ok(Self {
            ports,
            shared: Arc::new(Shared {
                ctx,
                max_payload_size,
                max_packet_size,
                connect_timeout: config.connect_timeout,
                tls_handshake_timeout: config.tls_handshake_timeout,
                authentication_required: config.authentication_required,
                connection_events: config.connection_events,
                max_in_flight: usize::from(config.max_in_flight),
                tenants: Arc::new(TenantConnections::default()),
                watch,
                serving: Arc::new(ServingConnections::new()),
            }),
            permits: Arc::new(Semaphore::new(config.max_connections)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS)),
        })
    }

    /// The registry change listener closing open connections whose tenant or device got
    /// disabled or deleted; register it after the registry cache's listener.
    pub fn change_listener(&self) -> Arc<dyn ChangeListener> {
        Arc::clone(&self.shared.watch) as Arc<dyn ChangeListener>
    }

    /// The bound address of the insecure port, if it is open.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.ports.local_addr()
    }

    /// The bound address of the TLS port, if it is open.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.ports.tls_local_addr()
    }

    /// Serves until the context's shutdown token fires, then stops accepting and returns once
    /// every connection has closed (forwards in flight finish first). The keep-alive sweeper
    /// runs alongside; on shutdown it tells every serving connection to end.
    pub async fn run(self) {
        let sweeper = Arc::clone(&self.shared.serving).sweep(self.shared.ctx.shutdown.clone());
        let accept = |port: Port, tracker: TaskTracker| {
            let (shared, permits, refusals) = (
                Arc::clone(&self.shared),
                Arc::clone(&self.permits),
                Arc::clone(&self.refusals),
            );
            async move {
                accept_loop(port, shared, permits, refusals, tracker).await;
            }
        };
        tokio::join!(self.ports.serve(accept), sweeper);
        tracing::info!("MQTT adapter stopped");
    }
}

async fn accept_loop(
    port: Port,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let shutdown = shared.ctx.shutdown.clone();
    let tls = port.tls.is_some();
    tracing::debug!(addr = %port.addr, tls, "MQTT adapter accepting");
    loop {
        let Some((stream, peer)) = next_connection(&port.listener, &shutdown).await else {
            break;
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => Permit::Within(permit),
            Err(_) => match Arc::clone(&refusals).try_acquire_owned() {
                Ok(refusal) => {
                    tracing::info!(%peer, "connection limit reached; refusing");
                    Permit::Over(refusal)
                }
                Err(_) => {
                    tracing::info!(%peer, "connection limit reached; closing without CONNACK");
                    continue;
                }
            },
        };
        let connection = Connection {
            stream,
            peer,
            tls: port.tls.clone(),
            shared: Arc::clone(&shared),
            permit,
        };
        tracker.spawn(connection.run());
    }
    tracing::info!(addr = %port.addr, tls, "MQTT adapter stopped accepting");
}
