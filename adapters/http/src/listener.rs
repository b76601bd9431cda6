//! The adapter's ports: binding, and the accept loops.
//!
//! Each accept loop accepts, then takes a permit of the connection limit (waiting for one while
//! the limit is reached; the ports share the limit, and an idle port holds no permit), then
//! spawns a [`Connection`] task; TLS handshakes happen in that task, so a slow client never holds up
//! accepting. On shutdown the loops stop accepting and [`HttpAdapter::run`] waits until every
//! connection task has finished its request in flight.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_adapter_core::AdapterContext;
use ferry_adapter_core::accept::{Port, Ports, connection_slot, next_connection};
use ferry_registry_client::ChangeListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::connection::{Connection, ConnectionConfig};
use crate::error::HttpError;
use crate::service::Shared;

/// The HTTP adapter, bound and ready to [`run`](HttpAdapter::run).
pub struct HttpAdapter {
    ports: Ports,
    shared: Arc<Shared>,
    connection: Arc<ConnectionConfig>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for HttpAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAdapter")
            .field("local_addr", &self.local_addr())
            .field("tls_local_addr", &self.tls_local_addr())
            .finish_non_exhaustive()
    }
}

impl HttpAdapter {
    /// Validates `config` and binds the insecure port (if enabled) and, given a TLS server
    /// configuration (with ALPN `http/1.1` set by the caller), the TLS port.
    pub async fn bind(
        config: &HttpConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        ctx: AdapterContext,
    ) -> Result<Self, HttpError> {
        config.validate()?;
        let ports = Ports::bind(
            config.insecure_port_enabled.then_some(config.bind),
            tls.map(|tls| (config.tls_bind, tls)),
        )
        .await?;
        let max_payload_size = config
            .max_payload_size
            .min(ctx.forwarder.max_payload_size());
        Ok(Self {
            ports,
            shared: Arc::new(Shared {
                ctx,
                max_payload_size,
                body_timeout: config.idle_timeout,
                authentication_required: config.authentication_required,
                generation: Arc::default(),
            }),
            connection: Arc::new(ConnectionConfig {
                tls_handshake_timeout: config.tls_handshake_timeout,
                idle_timeout: config.idle_timeout,
            }),
            permits: Arc::new(Semaphore::new(config.max_connections)),
        })
    }

    /// Tell this about every committed registry change: connections reuse their last password
    /// authentication only while nothing changed.
    pub fn change_listener(&self) -> Arc<dyn ChangeListener> {
        Arc::clone(&self.shared.generation) as Arc<dyn ChangeListener>
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
    /// every request in flight was answered.
    pub async fn run(self) {
        let accept = |port: Port, tracker: TaskTracker| {
            let (shared, connection, permits) = (
                Arc::clone(&self.shared),
                Arc::clone(&self.connection),
                Arc::clone(&self.permits),
            );
            async move {
                accept_loop(port, shared, connection, permits, tracker).await;
            }
        };
        self.ports.serve(accept).await;
        tracing::info!("HTTP adapter stopped");
    }
}

async fn accept_loop(
    port: Port,
    shared: Arc<Shared>,
    config: Arc<ConnectionConfig>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let shutdown = shared.ctx.shutdown.clone();
    let tls = port.tls.is_some();
    tracing::info!(addr = %port.addr, tls, "HTTP adapter listening");
    loop {
        let Some((stream, peer)) = next_connection(&port.listener, &shutdown).await else {
            break;
        };
        let Some(permit) = connection_slot(&permits, &shutdown).await else {
            break;
        };
        let connection = Connection {
            stream,
            peer,
            tls: port.tls.clone(),
            shared: Arc::clone(&shared),
            config: Arc::clone(&config),
            permit,
        };
        tracker.spawn(connection.run());
    }
    tracing::info!(addr = %port.addr, tls, "HTTP adapter stopped accepting");
}
