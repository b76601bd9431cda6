//! The task that owns one upload link (the device's anonymous-relay sender, our receiver).
//!
//! Each delivery is parsed (`to`, body) and forwarded through adapter-core; up to
//! [`MAX_IN_FLIGHT`] forwards run concurrently, so one slow northbound round trip does not hold
//! up the link. Settlement follows hono-api.md §5: an unsettled delivery is settled with the
//! outcome of its forward (`accepted`, `rejected` with Hono's condition, or `released`); a
//! pre-settled one (a link in sender settle mode `settled`) is telemetry at most once, and a
//! pre-settled event is dropped. An oversized message closes the link; a terminal error
//! rejects the delivery, closes the link and ends the connection. On shutdown the link stops
//! taking deliveries and settles those in flight before it closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::{CreditMode, RecvError};
use fe2o3_amqp::types::definitions::Error as ErrorBody;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use ferry_adapter_core::{Endpoint, Qos};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt};

use crate::address::{self, Address};
use crate::connection::{ConnectionState, Shared};
use crate::error::{DeliveryError, Refusal, is_terminal, refusal_for};

/// Most deliveries of one link being forwarded at once; also the link credit.
pub(crate) const MAX_IN_FLIGHT: u32 = 32;
/// How long closing the link waits for the device's detach.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A delivery whose forward finished.
struct Forwarded {
    info: DeliveryInfo,
    outcome: Result<(), DeliveryError>,
    /// The message was for the sending device itself (not as a gateway for another device).
    for_itself: bool,
}

type InFlight = Pin<Box<dyn Future<Output = Forwarded> + Send>>;

/// What happened next on the link.
enum Event {
    Forwarded(Forwarded),
    Received(Box<Result<fe2o3_amqp::link::delivery::Delivery<Body<Value>>, RecvError>>),
    Shutdown,
    Terminal,
}

/// How a link ends.
enum End {
    /// The device detached or the connection went away: nothing to close.
    Gone,
    /// Close the link (shutdown, or with an error).
    Close(Option<ErrorBody>),
    /// Close the link with the error, then end the connection with it.
    Terminal(ErrorBody),
}

/// An attached upload link, ready to [`run`](UploadLink::run).
pub(crate) struct UploadLink {
    receiver: Receiver,
    presettled: bool,
    state: Arc<ConnectionState>,
    shared: Arc<Shared>,
}

impl UploadLink {
    /// Wraps an attached receiver; `presettled` when the device's sender settle mode is `settled`.
    pub(crate) fn new(
        receiver: Receiver,
        presettled: bool,
        state: Arc<ConnectionState>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            receiver,
            presettled,
            state,
            shared,
        }
    }

    /// Takes deliveries until the link or connection ends.
    pub(crate) async fn run(mut self) {
        self.receiver
            .set_credit_mode(CreditMode::Auto(MAX_IN_FLIGHT));
        if self.receiver.set_credit(MAX_IN_FLIGHT).await.is_err() {
            return;
        }
        let end = self.serve().await;
        let name = self.receiver.name().to_owned();
        let (error, terminal) = match end {
            End::Gone => return,
            End::Close(error) => (error, None),
            End::Terminal(error) => (Some(error.clone()), Some(error)),
        };
        // Boxed, like every rare step: the link's task keeps only the state of waiting for
        // deliveries while it is idle.
        let closing = Box::pin(async {
            match error {
                Some(error) => self.receiver.close_with_error(error).await,
                None => self.receiver.close().await,
            }
        });
        if !matches!(
            tokio::time::timeout(CLOSE_TIMEOUT, closing).await,
            Ok(Ok(()))
        ) {
            tracing::debug!(link = %name, "device did not answer the link close");
        }
        if let Some(error) = terminal {
            self.state.terminate(error);
        }
    }

    async fn serve(&mut self) -> End {
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let shutdown = self.shared.ctx.shutdown.clone();
        let terminal = self.state.terminal.clone();
        let mut draining = false;
        loop {
            if draining && in_flight.is_empty() {
                return End::Close(None);
            }
            let busy = !in_flight.is_empty();
            let can_receive = !draining && in_flight.len() < MAX_IN_FLIGHT as usize;
            let event = tokio::select! {
                biased;
                () = terminal.cancelled() => Event::Terminal,
                Some(done) = in_flight.next(), if busy => Event::Forwarded(done),
                () = shutdown.cancelled(), if !draining => Event::Shutdown,
                received = self.receiver.recv::<Body<Value>>(), if can_receive => Event::Received(Box::new(received)),
            };
            match event {
                Event::Terminal => return End::Gone,
                Event::Shutdown => draining = true,
                Event::Forwarded(done) => {
                    if let Some(end) = self.settle_ready(done, &mut in_flight).await {
                        return end;
                    }
                }
                Event::Received(received) => match *received {
                    Ok(delivery) => in_flight.push(self.forward(delivery)),
                    Err(RecvError::MessageDecode(e)) => {
                        let error = ErrorBody::new(
                            fe2o3_amqp::types::definitions::AmqpError::DecodeError,
                            "the message cannot be decoded".to_owned(),
                            None,
                        );
                        tracing::info!(error = %e.source, "undecodable message");
                        if Box::pin(self.receiver.reject(e.info, error)).await.is_err() {
                            return End::Gone;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "upload link ended");
                        return End::Gone;
                    }
                },
            }
        }
    }

    /// Starts forwarding one delivery.
    fn forward(&self, delivery: fe2o3_amqp::link::delivery::Delivery<Body<Value>>) -> InFlight {
        let (info, message) = delivery.into_parts();
        let sender = self.state.device.clone();
        let forwarder = self.shared.ctx.forwarder.clone();
        let max = self.shared.max_payload_size;
        let presettled = self.presettled;
        Box::pin(async move {
            let to = message
                .properties
                .as_ref()
                .and_then(|p| p.to.clone())
                .unwrap_or_default();
            let prepared = Address::parse(&to).and_then(|address| {
                let (tenant, device) = address.resolve(sender.as_ref())?;
                let qos = match (address.endpoint, presettled) {
                    (Endpoint::Event, true) => return Err(DeliveryError::PresettledEvent),
                    (Endpoint::Telemetry, true) => Qos::AtMostOnce,
                    (_, false) => Qos::AtLeastOnce,
                };
                let upload = address::upload(&message, &address, &to, qos, max)?;
                Ok((tenant, device, upload))
            });
            let (outcome, for_itself) = match prepared {
                Err(e) => (Err(e), true),
                Ok((tenant, device, upload)) => {
                    let for_itself = sender.as_ref().is_none_or(|s| s.device_id == device);
                    let outcome = forwarder
                        .forward(sender.as_ref(), &tenant, &device, upload)
                        .await
                        .map_err(DeliveryError::from);
                    (outcome, for_itself)
                }
            };
            Forwarded {
                info,
                outcome,
                for_itself,
            }
        })
    }

    /// Settles `first` and every other forward that is already done: the accepted ones together
    /// (fe2o3 sends one `disposition` per range of delivery ids instead of one per delivery),
    /// then the refused ones one by one. Returns how the link ends, if it does.
    async fn settle_ready(
        &self,
        first: Forwarded,
        in_flight: &mut FuturesUnordered<InFlight>,
    ) -> Option<End> {
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        let mut next = Some(first);
        while let Some(Forwarded {
            info,
            outcome,
            for_itself,
        }) = next
        {
            match outcome {
                Ok(()) => accepted.push(info),
                Err(error) => refused.push((info, error, for_itself)),
            }
            next = in_flight.next().now_or_never().flatten();
        }
        // For pre-settled deliveries this sends nothing but keeps the link credit flowing.
        if !accepted.is_empty() && self.receiver.accept_all(accepted).await.is_err() {
            return Some(End::Gone);
        }
        for (info, error, for_itself) in refused {
            if let Some(end) = self.refuse(info, error, for_itself).await {
                return Some(end);
            }
        }
        None
    }

    /// Settles a refused delivery; returns how the link ends, if it does.
    async fn refuse(
        &self,
        info: DeliveryInfo,
        error: DeliveryError,
        for_itself: bool,
    ) -> Option<End> {
        let refusal = refusal_for(error.kind());
        tracing::info!(%error, ?refusal, "delivery refused");
        let body = match refusal {
            Refusal::Rejected(condition) => {
                let body = error.to_amqp(condition);
                if self.receiver.reject(info, body.clone()).await.is_err() {
                    return Some(End::Gone);
                }
                body
            }
            Refusal::Released => {
                if self.receiver.release(info).await.is_err() {
                    return Some(End::Gone);
                }
                return None;
            }
            Refusal::CloseLink(condition) => {
                return Some(End::Close(Some(error.to_amqp(condition))));
            }
        };
        match &error {
            DeliveryError::Forward(e) if is_terminal(e, for_itself) => Some(End::Terminal(body)),
            _ => None,
        }
    }
}
