//! The adapter's ports: binding, and the accept loops.
//!
//! Each accept loop accepts, takes a permit of the connection limit (waiting while the limit is
//! reached), then spawns a [`Connection`] task; TLS handshakes happen in that task, so a slow client never holds up
//! accepting. On shutdown the loops stop accepting and [`AmqpAdapter::run`] waits until every
//! connection settled what it had in flight and closed.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_adapter_core::AdapterContext;
use ferry_adapter_core::accept::{Port, Ports, connection_slot, next_connection};
use ferry_registry_client::ChangeListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::AmqpConfig;
use crate::connection::{Connection, Shared};
use crate::error::AmqpError;
use crate::watch::ConnectionWatch;

/// The AMQP adapter, bound and ready to [`run`](AmqpAdapter::run).
pub struct AmqpAdapter {
    ports: Ports,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for AmqpAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAdapter")
            .field("local_addr", &self.local_addr())
            .field("tls_local_addr", &self.tls_local_addr())
            .finish_non_exhaustive()
    }
}

impl AmqpAdapter {
    /// Validates `config` and binds the insecure port (if enabled) and, given a TLS server
    /// configuration, the TLS port. ALPN protocols of `tls` are cleared for this port: AMQP
    /// clients do not negotiate one. Secret extraction is enabled on it, so that a TLS 1.3
    /// connection's traffic keys can be handed to the lean record layer
    /// (`ferry_adapter_core::tls::accept`).
    pub async fn bind(
        config: &AmqpConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        ctx: AdapterContext,
    ) -> Result<Self, AmqpError> {
        config.validate()?;
        let tls = tls.map(|tls| {
            let mut tls = Arc::unwrap_or_clone(tls);
            tls.alpn_protocols.clear();
            tls.enable_secret_extraction = true;
            (config.tls_bind, Arc::new(tls))
        });
        let ports = Ports::bind(config.insecure_port_enabled.then_some(config.bind), tls).await?;
        let max_payload_size = config
            .max_payload_size
            .min(ctx.forwarder.max_payload_size());
        let watch = Arc::new(ConnectionWatch::new(ctx.forwarder.clone()));
        Ok(Self {
            ports,
            shared: Arc::new(Shared {
                ctx,
                max_payload_size,
                tls_handshake_timeout: config.tls_handshake_timeout,
                handshake_timeout: config.handshake_timeout,
                idle_timeout: config.idle_timeout,
                authentication_required: config.authentication_required,
                connection_events: config.connection_events,
                tenants: Arc::default(),
                watch,
            }),
            permits: Arc::new(Semaphore::new(config.max_connections)),
        })
    }

    /// The listener to register with the registry (after its cache) so that open connections
    /// of a tenant or device that gets disabled or deleted are closed at once.
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
    /// every connection has settled its deliveries in flight and closed.
    pub async fn run(self) {
        let accept = |port: Port, tracker: TaskTracker| {
            let (shared, permits) = (Arc::clone(&self.shared), Arc::clone(&self.permits));
            async move {
                accept_loop(port, shared, permits, tracker).await;
            }
        };
        self.ports.serve(accept).await;
        tracing::info!("AMQP adapter stopped");
    }
}

async fn accept_loop(
    port: Port,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let shutdown = shared.ctx.shutdown.clone();
    let tls = port.tls.is_some();
    tracing::debug!(addr = %port.addr, tls, "AMQP adapter accepting");
    loop {
        let Some((stream, peer)) = next_connection(&port.listener, &shutdown).await else {
            break;
        };
        // The permit is taken after accepting: a loop waiting for a permit would otherwise hold
        // it while it waits for a connection on its own port, starving the other port. At most
        // one accepted connection per port waits here for a free slot.
        let Some(permit) = connection_slot(&permits, &shutdown).await else {
            break;
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
    tracing::info!(addr = %port.addr, tls, "AMQP adapter stopped accepting");
}
