//! The task that owns one consumer link (our AMQP sender).
//!
//! It takes messages from the link's bounded queue one at a time and writes each as a transfer
//! (unsettled, except QoS 0 telemetry, which goes pre-settled when the consumer's settle mode
//! allows it); writing waits for link credit, so a consumer without credit fills its queue and
//! callers move on to other consumers or time out. The settlement future goes back to whoever
//! asked, so the task itself never waits for dispositions. The task ends when the consumer
//! detaches, the connection goes away or the northbound shuts down, and then unregisters the link.

use std::sync::Arc;

use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErrorBody};
use fe2o3_amqp::{Sendable, Sender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::consumers::{Node, Outgoing, Registry, SentReply};

/// How long a closing link waits for the consumer's detach.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a consumer link until it ends.
pub(crate) async fn run(
    mut sender: Sender,
    mut queue: mpsc::Receiver<Outgoing>,
    node: Node,
    id: u64,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut closing = false;
    // Waiting on cancellation is set up once, not for every message.
    let cancelled = shutdown.cancelled_owned();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => {
                closing = true;
                break;
            }
            error = sender.on_detach() => {
                tracing::info!(%node, %error, "consumer link detached");
                break;
            }
            item = queue.recv() => {
                let Some(Outgoing { message, mut reply }) = item else { break };
                if reply.as_ref().is_some_and(|r| r.is_closed()) {
                    // The caller gave up waiting (timeout): do not send what it reported as failed.
                    continue;
                }
                let sendable = Sendable::builder()
                    .message(*message)
                    .settled(reply.is_none())
                    .build();
                let sent = tokio::select! {
                    () = &mut cancelled => { closing = true; break; }
                    // Waiting for credit, the caller may give up: then the message is dropped
                    // rather than delivered after its sender was told it failed.
                    () = caller_gone(&mut reply) => continue,
                    sent = sender.send_batchable(sendable) => sent,
                };
                match sent {
                    Ok(settlement) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(settlement));
                        }
                    }
                    Err(SendError::MessageSizeExceeded(error)) => {
                        // Nothing was sent; the link stays usable for smaller messages.
                        tracing::warn!(%node, %error, "message exceeds the consumer's max-message-size");
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                    Err(error) => {
                        tracing::info!(%node, %error, "sending to a consumer failed; dropping the link");
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(error.to_string()));
                        }
                        break;
                    }
                }
            }
        }
    }
    registry.remove(&node, id);
    // Messages still queued are dropped with their reply channels, which their senders see as
    // a failure (events are then redelivered).
    queue.close();
    if closing {
        let error = AmqpErrorBody::new(
            AmqpError::IllegalState,
            "Ferry is shutting down".to_owned(),
            None,
        );
        match tokio::time::timeout(CLOSE_TIMEOUT, sender.close_with_error(error)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%node, %error, "closing consumer link failed"),
            Err(_) => tracing::debug!(%node, "consumer did not answer the link close"),
        }
    }
    tracing::debug!(%node, "consumer link task ended");
}

/// Resolves when the caller waiting for `reply` gave up; never for messages without a reply.
async fn caller_gone(reply: &mut Option<tokio::sync::oneshot::Sender<SentReply>>) {
    match reply {
        Some(reply) => reply.closed().await,
        None => std::future::pending().await,
    }
}
