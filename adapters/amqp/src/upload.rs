//! Forwarding one delivery, and what its outcome means for the device (hono-api.md §5).
//!
//! The message is read (only the fields the upload needs: `ferry_amqp_wire::message`; the payload
//! shares the received bytes), its `to` parsed and resolved against the sender, and the upload
//! forwarded through adapter-core. An unsettled delivery is then settled with the outcome
//! (`accepted`, `rejected` with Hono's condition, or `released`); a pre-settled one is telemetry
//! at most once, and a pre-settled event is dropped. An oversized message closes its link; a
//! terminal error rejects the delivery, closes the link and ends the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fe2o3_amqp::types::definitions::Error as ErrorBody;
use fe2o3_amqp::types::messaging::{Accepted, DeliveryState, Rejected, Released};
use ferry_adapter_core::{AuthenticatedDevice, Endpoint, ForwardMemo, Forwarder, Qos};
use ferry_amqp_wire::message;

use crate::address::{self, Address};
use crate::engine::{Delivery, DeliveryKey, Engine};
use crate::error::{DeliveryError, Refusal, is_terminal};

/// A delivery whose forward finished.
#[derive(Debug)]
pub(crate) struct Forwarded {
    key: DeliveryKey,
    settled: bool,
    outcome: Result<(), DeliveryError>,
    /// The message was for the sending device itself (not as a gateway for another device).
    for_itself: bool,
}

/// A forward under way.
pub(crate) type InFlight = Pin<Box<dyn Future<Output = Forwarded> + Send>>;

/// Starts forwarding `delivery` of `sender` (`None`: an unauthenticated device) with the
/// connection's forwarder and memo; payloads over `max` bytes are refused.
pub(crate) fn forward(
    delivery: Delivery,
    sender: Option<AuthenticatedDevice>,
    forwarder: Forwarder,
    memo: Arc<ForwardMemo>,
    max: usize,
) -> InFlight {
    Box::pin(async move {
        let Delivery { key, received } = delivery;
        let settled = received.settled;
        let prepared = match message::scan(&received.message) {
            Err(e) => Err(DeliveryError::Decode(e.to_string())),
            Ok(view) => {
                let to = view.to.unwrap_or_default();
                Address::parse(to).and_then(|address| {
                    let (tenant, device) = address.resolve(sender.as_ref())?;
                    let qos = match (address.endpoint, settled) {
                        (Endpoint::Event, true) => return Err(DeliveryError::PresettledEvent),
                        (Endpoint::Telemetry, true) => Qos::AtMostOnce,
                        (_, false) => Qos::AtLeastOnce,
                    };
                    let upload = address::upload(&view, &received.message, &address, to, qos, max)?;
                    Ok((tenant, device, upload))
                })
            }
        };
        let (outcome, for_itself) = match prepared {
            Err(e) => (Err(e), true),
            Ok((tenant, device, upload)) => {
                let for_itself = sender.as_ref().is_none_or(|s| s.device_id == device);
                let outcome = forwarder
                    .forward_with(&memo, sender.as_ref(), &tenant, &device, upload)
                    .await
                    .map_err(DeliveryError::from);
                (outcome, for_itself)
            }
        };
        Forwarded {
            key,
            settled,
            outcome,
            for_itself,
        }
    })
}

/// Settles a finished forward in `engine`; returns the error the connection ends with, if the
/// refusal is terminal.
pub(crate) fn settle(engine: &mut Engine, forwarded: Forwarded) -> Option<ErrorBody> {
    let Forwarded {
        key,
        settled,
        outcome: result,
        for_itself,
    } = forwarded;
    let outcome = |state: DeliveryState| (!settled).then_some(state);
    let error = match result {
        Ok(()) => {
            engine.settle(&key, outcome(Accepted {}.into()));
            return None;
        }
        Err(error) => error,
    };
    let refusal = error.refusal();
    tracing::info!(%error, ?refusal, settled, "delivery refused");
    match refusal {
        Refusal::Rejected(condition) => {
            let body = error.to_amqp(condition);
            let state = Rejected {
                error: Some(body.clone()),
            };
            engine.settle(&key, outcome(state.into()));
            match &error {
                DeliveryError::Forward(e) if is_terminal(e, for_itself) => {
                    engine.detach(&key, body.clone());
                    Some(body)
                }
                _ => None,
            }
        }
        Refusal::Released => {
            engine.settle(&key, outcome(Released {}.into()));
            None
        }
        Refusal::CloseLink(condition) => {
            engine.settle(&key, None);
            engine.detach(&key, error.to_amqp(condition));
            None
        }
    }
}
