//! The embedded northbound: listener, accept loop, and the [`Northbound`] implementation.
//!
//! [`EmbeddedNorthbound::bind`] validates the configuration, opens the event store and binds the
//! listener; [`EmbeddedNorthbound::run`] accepts application connections (one task each, limited
//! by a semaphore) until the shutdown token is cancelled, then stops every connection, link and
//! delivery task. Sending works as soon as `bind` returned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::types::messaging::Outcome;
use ferry_adapter_core::{DownstreamMessage, Endpoint, Northbound, NorthboundError, Sending};
use ferry_registry_client::TenantId;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NorthboundConfig;
use crate::consumers::{HandOverError, Node, Offer, Outgoing, Registry, Reply};
use crate::error::SetupError;
use crate::event_store::{EventStore, StoreError};
use crate::sasl::Authenticator;

/// How long [`EmbeddedNorthbound::run`] waits for connection tasks after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the listener, connections, links and delivery tasks.
pub(crate) struct Shared {
    pub config: NorthboundConfig,
    pub authenticator: Authenticator,
    pub registry: Arc<Registry>,
    pub store: EventStore,
    /// Cancelled when the northbound stops; every task watches it.
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// Ferry's embedded AMQP 1.0 endpoint serving Hono's Telemetry and Event APIs to applications.
///
/// Share it as `Arc<EmbeddedNorthbound>` (or `Arc<dyn Northbound>`) with the adapters.
pub struct EmbeddedNorthbound {
    shared: Arc<Shared>,
    listener: Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for EmbeddedNorthbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedNorthbound")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl EmbeddedNorthbound {
    /// Validates `config`, opens the event store and binds the listener (port 0 picks a free port;
    /// see [`Self::local_addr`]). Connections are served once [`Self::run`] is called.
    pub async fn bind(config: NorthboundConfig) -> Result<Arc<Self>, SetupError> {
        config.validate()?;
        let store = EventStore::open(&config.event_store_path(), config.max_stored_events)?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| SetupError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| SetupError::Bind {
            addr: config.bind,
            source,
        })?;
        tracing::info!(%local_addr, "AMQP 1.0 northbound listening");
        let shared = Arc::new(Shared {
            authenticator: Authenticator::new(&config.users, config.allow_anonymous),
            config,
            registry: Arc::new(Registry::default()),
            store,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        Ok(Arc::new(Self {
            shared,
            listener: Mutex::new(Some(listener)),
            local_addr,
        }))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Number of consumer links currently attached to `ENDPOINT/TENANT`.
    pub fn consumer_count(&self, endpoint: Endpoint, tenant: &TenantId) -> usize {
        self.shared.registry.count(&Node {
            endpoint,
            tenant: tenant.clone(),
        })
    }

    /// Accepts application connections until `shutdown` is cancelled, then closes every
    /// connection and stops event delivery (events stay stored). Returns at once if it already
    /// ran.
    pub async fn run(&self, shutdown: CancellationToken) {
        let Some(listener) = self.listener.lock().await.take() else {
            return;
        };
        let permits = Arc::new(Semaphore::new(self.shared.config.max_connections));
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.shared.shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.shared.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = self.shared.clone();
                    self.shared.tasks.spawn(async move {
                        crate::connection::serve(stream, peer, shared).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Typically too many open files: back off instead of spinning.
                    tracing::warn!(%error, "accepting an application connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        self.shutdown().await;
    }

    /// Stops serving: closes consumer links and connections and stops event delivery.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("northbound tasks did not stop in time");
        }
        tracing::info!("AMQP 1.0 northbound stopped");
    }

    /// Hands telemetry to a consumer link of its tenant. Decided at once when a queue has room
    /// and the QoS asks for no outcome (QoS 0); otherwise waits (for room, or for the outcome)
    /// until the send timeout.
    fn send_telemetry(&self, message: DownstreamMessage) -> Sending<'_> {
        let tenant = message.tenant_id.clone();
        let (item, outcome) = Outgoing::telemetry(message);
        match self
            .shared
            .registry
            .offer(Endpoint::Telemetry, &tenant, item)
        {
            Offer::Queued => match outcome {
                None => Sending::decided(Ok(())),
                Some(outcome) => Sending::waiting(self.await_outcome(tenant, outcome, None)),
            },
            Offer::NoConsumer(_) => {
                Sending::decided(Err(NorthboundError::NoConsumer(telemetry_node(&tenant))))
            }
            Offer::Full(item, queue) => Sending::waiting(async move {
                let deadline = self.deadline();
                match queue.push(item, deadline).await {
                    Ok(()) => {}
                    Err(HandOverError::NoConsumer) => {
                        return Err(NorthboundError::NoConsumer(telemetry_node(&tenant)));
                    }
                    Err(HandOverError::NoCredit) => {
                        return Err(NorthboundError::Unavailable(format!(
                            "no consumer of {} has credit",
                            telemetry_node(&tenant)
                        )));
                    }
                }
                match outcome {
                    None => Ok(()),
                    Some(outcome) => self.await_outcome(tenant, outcome, Some(deadline)).await,
                }
            }),
        }
    }

    /// When a send that starts now times out.
    fn deadline(&self) -> Instant {
        Instant::now() + self.shared.config.send_timeout
    }

    /// Waits until `deadline` (or the send timeout) for the consumer's outcome of telemetry of
    /// `tenant`.
    async fn await_outcome(
        &self,
        tenant: TenantId,
        outcome: oneshot::Receiver<Reply>,
        deadline: Option<Instant>,
    ) -> Result<(), NorthboundError> {
        let deadline = deadline.unwrap_or_else(|| self.deadline());
        match tokio::time::timeout_at(deadline, outcome).await {
            Err(_) => Err(NorthboundError::Unavailable(format!(
                "no outcome from a consumer of {} within {:?}",
                telemetry_node(&tenant),
                self.shared.config.send_timeout
            ))),
            Ok(Err(_)) => Err(NorthboundError::Unavailable(
                "the consumer link went away".to_owned(),
            )),
            Ok(Ok(Err(reason))) => Err(NorthboundError::Unavailable(reason)),
            Ok(Ok(Ok(Outcome::Accepted(_)))) => Ok(()),
            Ok(Ok(Ok(other))) => Err(NorthboundError::Rejected(format!(
                "consumer of {} settled the message as {}",
                telemetry_node(&tenant),
                outcome_name(&other)
            ))),
        }
    }

    async fn store_event(&self, message: DownstreamMessage) -> Result<(), NorthboundError> {
        let tenant = message.tenant_id.clone();
        let message_id = uuid::Uuid::new_v4().to_string();
        match self.shared.store.insert(message, message_id).await {
            Ok(_) => {
                self.shared.registry.event_stored(&tenant);
                Ok(())
            }
            Err(StoreError::Full(n)) => Err(NorthboundError::Unavailable(format!(
                "the event store is full ({n} events)"
            ))),
            Err(error) => Err(NorthboundError::Storage(error.to_string())),
        }
    }
}

/// The consumer address of `tenant`'s telemetry, for errors.
fn telemetry_node(tenant: &TenantId) -> String {
    Node {
        endpoint: Endpoint::Telemetry,
        tenant: tenant.clone(),
    }
    .to_string()
}

/// The AMQP name of an outcome, for logs and errors.
pub(crate) fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Accepted(_) => "accepted",
        Outcome::Rejected(_) => "rejected",
        Outcome::Released(_) => "released",
        Outcome::Modified(_) => "modified",
        #[allow(unreachable_patterns)]
        _ => "unknown",
    }
}

impl Northbound for EmbeddedNorthbound {
    fn send(&self, message: DownstreamMessage) -> Sending<'_> {
        match message.endpoint {
            Endpoint::Telemetry => self.send_telemetry(message),
            Endpoint::Event => Sending::waiting(self.store_event(message)),
        }
    }
}

impl Drop for EmbeddedNorthbound {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
