//! One application connection: AMQP and SASL handshake, sessions, and consumer link attaches.
//!
//! The connection task runs the handshake under a timeout, then accepts sessions; each session
//! runs in its own task and accepts links. A link whose source is `telemetry/TENANT` or
//! `event/TENANT` becomes a consumer link ([`crate::link`]); anything else is refused the way
//! AMQP 1.0 prescribes (attach with a null source, then detach with `amqp:not-found` or
//! `amqp:not-allowed`). Errors caused by the peer end the connection, never the process.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SessionAcceptor, SupportedReceiverSettleModes,
    SupportedSenderSettleModes,
};
use fe2o3_amqp::link::DetachError;
use fe2o3_amqp::types::definitions::{
    AmqpError, Error as AmqpErrorBody, ErrorCondition, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::TargetArchetype;
use fe2o3_amqp::types::performatives::Attach;
use ferry_adapter_core::Endpoint;
use ferry_adapter_core::coalesce::Coalescing;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::consumers::{LINK_QUEUE, Node};
use crate::server::Shared;

/// Most sessions one application connection may begin.
const MAX_SESSIONS: u16 = 32;
/// Most links one session may attach.
const MAX_LINKS: u32 = 64;
/// How long closing a session or connection waits for the peer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a refused link waits for the peer's detach.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one accepted TCP connection until it closes or the northbound shuts down.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("amqp_northbound_connection", %peer);
    async move {
        let acceptor = ConnectionAcceptor::builder()
            .container_id("ferry-northbound")
            .channel_max(MAX_SESSIONS)
            .sasl_acceptor(shared.authenticator.for_peer(peer))
            .build();
        let handshake =
            // fe2o3 flushes every frame: let the busy link's transfers share syscalls.
            tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(Coalescing::tcp(stream)));
        let mut connection = match handshake.await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                tracing::info!(%error, "application connection refused");
                return;
            }
            Err(_) => {
                tracing::info!("application connection handshake timed out");
                return;
            }
        };
        tracing::debug!("application connected");
        run_connection(&mut connection, &shared).await;
        match tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "connection closed with error"),
            Err(_) => tracing::debug!("peer did not answer the connection close"),
        }
        tracing::debug!("application connection ended");
    }
    .instrument(span)
    .await;
}

async fn run_connection(connection: &mut ListenerConnectionHandle, shared: &Arc<Shared>) {
    let session_acceptor = SessionAcceptor::builder().handle_max(MAX_LINKS).build();
    loop {
        let incoming = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            incoming = connection.next_incoming_session() => incoming,
        };
        let Some(incoming) = incoming else { return };
        match session_acceptor
            .accept_incoming_session(incoming, connection)
            .await
        {
            Ok(session) => {
                let shared = shared.clone();
                shared
                    .tasks
                    .clone()
                    .spawn(run_session(session, shared).in_current_span());
            }
            Err(error) => {
                tracing::info!(%error, "session refused");
                return;
            }
        }
    }
}

async fn run_session(mut session: ListenerSessionHandle, shared: Arc<Shared>) {
    loop {
        let attach = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            attach = session.next_incoming_attach() => attach,
        };
        let Some(attach) = attach else { break };
        handle_attach(attach, &mut session, &shared).await;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, session.end()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "session ended with error"),
        Err(_) => tracing::debug!("peer did not answer the session end"),
    }
}

async fn handle_attach(attach: Attach, session: &mut ListenerSessionHandle, shared: &Arc<Shared>) {
    let address = match attach.role {
        Role::Receiver => attach.source.as_ref().and_then(|s| s.address.clone()),
        Role::Sender => attach.target.as_deref().and_then(|t| match t {
            TargetArchetype::Target(t) => t.address.clone(),
            #[allow(unreachable_patterns)]
            // other archetypes exist with fe2o3's `transaction` feature
            _ => None,
        }),
    }
    .unwrap_or_default();
    let (condition, description) = if attach.role == Role::Sender {
        (
            AmqpError::NotAllowed,
            format!("sending to {address:?} is not allowed: this endpoint only serves consumers"),
        )
    } else {
        match Node::parse(&address) {
            Ok(node) => return attach_consumer(node, attach, session, shared).await,
            Err(reason) => (AmqpError::NotFound, reason),
        }
    };
    tracing::warn!(link = %attach.name, %address, %description, "link refused");
    // The link is attached as asked and closed at once with the reason. (AMQP also allows an
    // attach with a null terminus before the detach, but fe2o3-amqp clients answer that with a
    // second detach whose handle may already belong to their next link, which breaks the session;
    // a null target makes fe2o3-amqp's own receiver side end the session.)
    match LinkAcceptor::new()
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(link) => {
            let error = AmqpErrorBody::new(ErrorCondition::AmqpError(condition), description, None);
            let mut closing: Pin<Box<dyn Future<Output = Result<(), DetachError>> + Send>> =
                match link {
                    LinkEndpoint::Sender(sender) => Box::pin(sender.close_with_error(error)),
                    LinkEndpoint::Receiver(receiver) => Box::pin(receiver.close_with_error(error)),
                };
            // The detach follows the attach at once, before this session handles anything else
            // of the peer: polling once queues it now; the peer's reply is awaited elsewhere.
            if futures_util::poll!(closing.as_mut()).is_pending() {
                tokio::spawn(async move {
                    if !matches!(
                        tokio::time::timeout(DETACH_TIMEOUT, closing).await,
                        Ok(Ok(()))
                    ) {
                        tracing::debug!("refused link did not close cleanly");
                    }
                });
            }
        }
        Err(error) => tracing::debug!(%error, "refused link attach ended with error"),
    }
}

async fn attach_consumer(
    node: Node,
    attach: Attach,
    session: &mut ListenerSessionHandle,
    shared: &Arc<Shared>,
) {
    // Events are at least once: the consumer must settle them, so pre-settled mode is not offered.
    let acceptor = match node.endpoint {
        Endpoint::Event => LinkAcceptor::builder()
            .supported_sender_settle_modes(SupportedSenderSettleModes::UnsettledAndMixed)
            .fallback_sender_settle_mode(SenderSettleMode::Unsettled)
            .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
            .fallback_receiver_settle_mode(ReceiverSettleMode::First)
            .build(),
        Endpoint::Telemetry => LinkAcceptor::builder()
            .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
            .fallback_receiver_settle_mode(ReceiverSettleMode::First)
            .build(),
    };
    let name = attach.name.clone();
    let sender = match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Sender(sender)) => sender,
        Ok(LinkEndpoint::Receiver(_)) => {
            tracing::warn!(link = %name, "peer attached as sender to a consumer address");
            return;
        }
        Err(error) => {
            tracing::info!(link = %name, %node, %error, "consumer link attach failed");
            return;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(LINK_QUEUE);
    let added = shared.registry.add(&node, tx);
    tracing::info!(link = %name, %node, "consumer attached");
    if let Some(notify) = added.start_delivery {
        crate::delivery::spawn(node.tenant.clone(), notify, shared.clone());
    }
    shared.tasks.spawn(
        crate::link::run(
            sender,
            rx,
            node,
            added.id,
            shared.registry.clone(),
            shared.shutdown.clone(),
        )
        .in_current_span(),
    );
}
