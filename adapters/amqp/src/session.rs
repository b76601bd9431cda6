//! One session of a device connection: link attaches until the session, the connection or the
//! adapter ends.
//!
//! A device's sender link with a null target (anonymous relay) becomes an upload link
//! ([`crate::link`]), run as its own task; anything else (a target address, a receiver link for
//! commands) is attached and detached at once with `amqp:not-implemented`. When the session
//! ends, it waits for its links to settle what they have in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SupportedReceiverSettleModes,
};
use fe2o3_amqp::link::DetachError;
use fe2o3_amqp::types::definitions::{
    AmqpError as Condition, Error as ErrorBody, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::TargetArchetype;
use fe2o3_amqp::types::performatives::Attach;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connection::{ConnectionState, Shared};
use crate::link::UploadLink;

/// Bytes a message may carry on top of its payload (properties, annotations, encoding).
const MESSAGE_OVERHEAD: usize = 16 * 1024;
/// How long ending a session or refusing a link waits for the peer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one accepted session.
pub(crate) async fn run(
    mut session: ListenerSessionHandle,
    state: Arc<ConnectionState>,
    shared: Arc<Shared>,
) {
    let links = TaskTracker::new();
    let shutdown = shared.ctx.shutdown.clone();
    loop {
        let attach = tokio::select! {
            () = shutdown.cancelled() => break,
            () = state.terminal.cancelled() => break,
            attach = session.next_incoming_attach() => attach,
        };
        let Some(attach) = attach else { break };
        // Boxed: attaching is rare, and its futures would otherwise stay in this task's state.
        let attached = Box::pin(handle_attach(attach, &mut session, &state, &shared));
        if let Some(link) = attached.await {
            links.spawn(link.run().in_current_span());
        }
    }
    links.close();
    links.wait().await;
    if !state.terminal.is_cancelled()
        && let Ok(Err(error)) = tokio::time::timeout(CLOSE_TIMEOUT, Box::pin(session.end())).await
    {
        tracing::debug!(%error, "session ended with error");
    }
}

/// Accepts an upload link, or refuses the attach and returns `None`.
async fn handle_attach(
    attach: Attach,
    session: &mut ListenerSessionHandle,
    state: &Arc<ConnectionState>,
    shared: &Arc<Shared>,
) -> Option<UploadLink> {
    let target = attach.target.as_deref().and_then(|t| match t {
        TargetArchetype::Target(t) => t.address.clone(),
        #[allow(unreachable_patterns)] // other archetypes exist with fe2o3's `transaction` feature
        _ => None,
    });
    let refusal = match (&attach.role, target) {
        (Role::Sender, None) => None,
        (Role::Sender, Some(address)) => Some((
            Condition::NotImplemented,
            format!(
                "target {address:?}: this adapter only supports anonymous relay (a null target, \
                 the address in each message's `to`)"
            ),
        )),
        (Role::Receiver, _) => Some((
            Condition::NotImplemented,
            "receiving commands is not supported yet".to_owned(),
        )),
    };
    if let Some((condition, description)) = refusal {
        tracing::info!(link = %attach.name, %description, "link refused");
        refuse(
            attach,
            session,
            ErrorBody::new(condition, description, None),
        )
        .await;
        return None;
    }
    let presettled = attach.snd_settle_mode == SenderSettleMode::Settled;
    let max_message_size = (shared.max_payload_size + MESSAGE_OVERHEAD) as u64;
    let acceptor = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .max_message_size(max_message_size)
        .build();
    let name = attach.name.clone();
    match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Receiver(receiver)) => {
            tracing::debug!(link = %name, presettled, "upload link attached");
            Some(UploadLink::new(
                receiver,
                presettled,
                Arc::clone(state),
                Arc::clone(shared),
            ))
        }
        Ok(LinkEndpoint::Sender(_)) => None,
        Err(error) => {
            tracing::info!(link = %name, %error, "link attach failed");
            None
        }
    }
}

/// Attaches the link as asked and detaches it at once with `error` (the way the northbound does:
/// fe2o3 clients mishandle an attach with a null terminus followed by a detach).
async fn refuse(attach: Attach, session: &mut ListenerSessionHandle, error: ErrorBody) {
    match LinkAcceptor::new()
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(link) => {
            let mut closing: Pin<Box<dyn Future<Output = Result<(), DetachError>> + Send>> =
                match link {
                    LinkEndpoint::Sender(sender) => Box::pin(sender.close_with_error(error)),
                    LinkEndpoint::Receiver(receiver) => Box::pin(receiver.close_with_error(error)),
                };
            // Polling once queues the detach before this session handles anything else of the
            // peer; the peer's answer is awaited in the background.
            if futures_util::poll!(closing.as_mut()).is_pending() {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
                });
            }
        }
        Err(error) => tracing::debug!(%error, "refused link attach ended with error"),
    }
}
