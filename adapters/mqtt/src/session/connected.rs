//! Phase 2, `Connected`: reading packets, forwarding uploads with a bounded number in flight,
//! PUBACKs in arrival order, error subscriptions and `on-error`, keep-alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_adapter_core::ForwardMemo;
use futures_util::FutureExt;
use rmqtt_codec::error::DecodeError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

use super::{CloseReason, Closing, InFlight, Outcome, Shared};
use crate::error::PublishError;
use crate::limits::TenantGuard;
use crate::packet::{Inbound, Outbound, PublishIn, Transport, TransportError};
use crate::publish::{self, Identity};
use crate::serving::{End, Registered};
use crate::topic::ErrorSubscription;
use crate::watch::Watched;

/// Longest time a write may wait for a client that does not read: its connection is closed
/// instead of holding a connection slot forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a serving connection waited for.
enum Event {
    /// It has to end.
    End(End),
    /// The oldest forward in flight finished.
    Forwarded(Outcome),
    /// Bytes arrived (0: the end of the stream), or reading failed.
    Read(std::io::Result<usize>),
}

/// Phase 2: connected and serving.
pub(crate) struct Connected<S> {
    pub(super) transport: Transport<S>,
    pub(super) shared: Arc<Shared>,
    /// The client's address (log lines carry it: the connection's span is DEBUG only).
    pub(super) peer: SocketAddr,
    pub(super) identity: Identity,
    /// The client id, for the `disconnected` event (empty when connection events are off).
    pub(super) client_id: Box<str>,
    /// A boxed slice, not a `Vec`: 8 bytes less in every connection, and subscriptions change
    /// rarely (a SUBSCRIBE or UNSUBSCRIBE rebuilds it).
    pub(super) error_subscriptions: Box<[ErrorSubscription]>,
    pub(super) in_flight: InFlight,
    /// The tenant and registration answers of the last upload, reused by the next while the
    /// registry is unchanged; made at the first PUBLISH (an idle connection pays 8 bytes).
    pub(super) memo: Option<Arc<ForwardMemo>>,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    pub(super) _tenant: Option<TenantGuard>,
    /// Ends the connection from outside: keep-alive, shutdown, registry changes (`serving.rs`).
    pub(super) link: Registered,
    pub(super) _watched: Option<Watched>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connected<S> {
    /// Serves until the connection ends.
    ///
    /// Not an `async fn`: one of those keeps its `self` argument and the local it is moved
    /// into side by side (a `Connected` twice in every idle connection's state); the `async`
    /// block keeps the captured `self` only.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep `self` twice in the connection's state"
    )]
    pub(crate) fn serve(mut self) -> impl Future<Output = Closing<S>> + Send {
        async move {
            let reason = self.serve_loop().await;
            Closing {
                transport: self.transport,
                shared: self.shared,
                peer: self.peer,
                reason,
                connected: Some((self.identity, self.client_id, self.in_flight)),
                _permit: None,
            }
        }
    }

    async fn serve_loop(&mut self) -> CloseReason {
        loop {
            while self.in_flight.len() < self.shared.max_in_flight {
                match self.transport.decode() {
                    Ok(Some(packet)) => {
                        if let Err(reason) = self.handle(packet) {
                            return reason;
                        }
                    }
                    Ok(None) => break,
                    Err(TransportError::Decode(DecodeError::MaxSizeExceeded { size, max })) => {
                        // Refused from the fixed header, before the packet is buffered.
                        return CloseReason::PayloadTooLarge {
                            size: size as usize,
                            max: max as usize,
                        };
                    }
                    Err(e) => return e.into(),
                }
            }
            if self.transport.has_pending_writes()
                && let Err(reason) = self.flush().await
            {
                return reason;
            }
            if self.in_flight.is_empty() {
                self.transport.release_read_buffer();
                self.in_flight.release();
            }
            // One poll of everything the connection waits for: no timer, read or waiter
            // future is kept in an idle connection's state.
            match std::future::poll_fn(|cx| self.poll_event(cx)).await {
                Event::End(end) => return end.into(),
                Event::Forwarded(outcome) => {
                    // Not reading while the in-flight window is full is our doing, not the
                    // client's: it must not count as idle time.
                    self.shared.serving.touch(&self.link);
                    if let Err(reason) = self.complete(outcome) {
                        return reason;
                    }
                    // Acknowledge every upload that is done by now in the same write.
                    while let Some(Some(outcome)) = self.in_flight.next().now_or_never() {
                        if let Err(reason) = self.complete(outcome) {
                            return reason;
                        }
                    }
                }
                Event::Read(Ok(0)) => return CloseReason::PeerClosed,
                Event::Read(Ok(_)) => self.shared.serving.touch(&self.link),
                Event::Read(Err(e)) => return TransportError::Io(e).into(),
            }
        }
    }

    /// What happened first: the link ended the connection, the oldest forward finished, or
    /// bytes arrived (read only while the in-flight window has room: backpressure).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Poll::Ready(end) = self.link.poll_end(cx) {
            return Poll::Ready(Event::End(end));
        }
        if let Poll::Ready(Some(outcome)) = self.in_flight.poll_next(cx) {
            return Poll::Ready(Event::Forwarded(outcome));
        }
        if self.in_flight.len() < self.shared.max_in_flight
            && let Poll::Ready(read) = self.transport.poll_fill(cx)
        {
            return Poll::Ready(Event::Read(read));
        }
        Poll::Pending
    }

    /// Writes the packets waiting in the write buffer, within the write timeout, unless the
    /// link ends the connection first.
    async fn flush(&mut self) -> Result<(), CloseReason> {
        let link = &self.link;
        // Boxed: the write timeout's timer would otherwise enlarge the idle state.
        let mut flush = Box::pin(tokio::time::timeout(WRITE_TIMEOUT, self.transport.flush()));
        let flushed = std::future::poll_fn(|cx| match link.poll_end(cx) {
            Poll::Ready(end) => Poll::Ready(Err(end)),
            Poll::Pending => flush.as_mut().poll(cx).map(Ok),
        })
        .await;
        match flushed {
            Err(end) => Err(end.into()),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(TransportError::Io(e).into()),
            Ok(Err(_)) => Err(CloseReason::WriteTimeout),
        }
    }

    fn queue(&mut self, packet: Outbound) -> Result<(), CloseReason> {
        let announce = self.shared.announce();
        self.transport.queue(packet, announce)?;
        Ok(())
    }

    fn handle(&mut self, packet: Inbound) -> Result<(), CloseReason> {
        match packet {
            Inbound::Publish(publish) => self.publish(*publish),
            Inbound::Subscribe { packet_id, filters } => {
                let granted = filters.iter().map(|f| self.subscribe(f)).collect();
                self.queue(Outbound::SubAck { packet_id, granted })
            }
            Inbound::Unsubscribe { packet_id, filters } => {
                let count = filters.len();
                let mut subscriptions = std::mem::take(&mut self.error_subscriptions).into_vec();
                for filter in &filters {
                    if let Some(s) = ErrorSubscription::parse(filter) {
                        subscriptions.retain(|e| *e != s);
                    }
                }
                self.error_subscriptions = subscriptions.into_boxed_slice();
                self.queue(Outbound::UnsubAck { packet_id, count })
            }
            Inbound::Ping => self.queue(Outbound::Pong),
            Inbound::Disconnect => Err(CloseReason::ClientDisconnect),
            Inbound::Ack => Ok(()),
            Inbound::Connect(_) => Err(CloseReason::ProtocolViolation("second CONNECT")),
            Inbound::Unexpected(what) => Err(CloseReason::ProtocolViolation(what)),
        }
    }

    /// Accepts error subscriptions of the connected device's own tenant; commands come later,
    /// so every other filter is refused (SUBACK 0x80).
    fn subscribe(&mut self, filter: &str) -> bool {
        let Some(subscription) = ErrorSubscription::parse(filter) else {
            tracing::debug!(filter, "subscription refused");
            return false;
        };
        let allowed = match &self.identity {
            Identity::Device(d) => subscription
                .tenant()
                .is_none_or(|t| t == d.tenant_id.as_str()),
            Identity::Anonymous => {
                subscription.tenant().is_some()
                    && matches!(subscription.device(), crate::topic::DeviceFilter::Device(_))
            }
        };
        if allowed && !self.error_subscriptions.contains(&subscription) {
            let mut subscriptions = std::mem::take(&mut self.error_subscriptions).into_vec();
            subscriptions.push(subscription);
            self.error_subscriptions = subscriptions.into_boxed_slice();
        }
        allowed
    }

    fn publish(&mut self, publish: PublishIn) -> Result<(), CloseReason> {
        let max = self.shared.max_payload_size;
        if publish.payload.len() > max {
            return Err(CloseReason::PayloadTooLarge {
                size: publish.payload.len(),
                max,
            });
        }
        let ack = publish::ack_id(&publish);
        let (context, prepared) = publish::prepare(&publish, &self.identity);
        let sender = self.identity.device().cloned();
        let forwarder = self.shared.ctx.forwarder.clone();
        let memo = Arc::clone(
            self.memo
                .get_or_insert_with(|| Arc::new(self.shared.watch.forward_memo())),
        );
        self.in_flight.push_back(Box::pin(async move {
            let result = match prepared {
                Ok(p) => forwarder
                    .forward_with(&memo, sender.as_ref(), &p.tenant, &p.device, p.upload)
                    .await
                    .map_err(PublishError::from),
                Err(e) => Err(e),
            };
            Outcome {
                ack,
                context: Some(context),
                result,
            }
        }));
        Ok(())
    }

    fn complete(&mut self, outcome: Outcome) -> Result<(), CloseReason> {
        let error = match outcome.result {
            Ok(()) => {
                return outcome
                    .ack
                    .map_or(Ok(()), |id| self.queue(Outbound::PubAck(id)));
            }
            Err(error) => error,
        };
        let Some(context) = outcome.context else {
            tracing::warn!(peer = %self.peer, reason = %error, "connection event not sent");
            return Ok(());
        };
        let own = self.identity.device().map(|d| &d.device_id);
        let subscription = context.device.as_ref().and_then(|device| {
            self.error_subscriptions
                .iter()
                .find(|s| s.covers(device, own))
                .map(|s| (s, device))
        });
        let status = error.status();
        let actions = publish::on_failure(
            context.on_error,
            subscription.is_some(),
            error.is_terminal(),
        );
        tracing::info!(
            peer = %self.peer,
            tenant = self.identity.device().map_or("-", |d| d.tenant_id.as_str()),
            device = context.device.as_ref().map_or("-", |d| d.as_str()),
            status,
            reason = %error,
            on_error = ?context.on_error,
            disconnect = actions.disconnect,
            "upload refused"
        );
        let mut packets = Vec::with_capacity(2);
        if let Some((subscription, device)) = subscription.filter(|_| actions.publish_error) {
            packets.push(Outbound::Publish {
                topic: subscription.error_topic(
                    device,
                    context.word,
                    &context.correlation_id,
                    status,
                ),
                payload: publish::error_payload(
                    status,
                    &error.client_message(),
                    &context.correlation_id,
                ),
            });
        }
        if let Some(id) = outcome.ack.filter(|_| actions.ack) {
            packets.push(Outbound::PubAck(id));
        }
        for packet in packets {
            self.queue(packet)?;
        }
        if actions.disconnect {
            return Err(CloseReason::PublishFailed { error });
        }
        Ok(())
    }
}
