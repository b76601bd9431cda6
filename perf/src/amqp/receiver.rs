//! The consumer's receiver link (AMQP 1.0 §2.6): a source address such as `telemetry/TENANT`,
//! generous link credit topped up as deliveries arrive, deliveries assembled from their transfer
//! frames, and unsettled deliveries accepted in ranges.
//!
//! Each complete delivery's body is read with `ferry_amqp_wire::message::body`, which skips
//! every section it does not need by its encoded size. After the frames of one read are handled, [`Receiver::process`]
//! settles the unsettled deliveries among them with one `disposition` per run of consecutive
//! delivery ids (`accepted`, settled: receiver settle mode `first`), and grants credit again once
//! half of it is used, in one `flow` that also opens the session's incoming window.

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Accepted, Source, Target, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Disposition, Flow, Transfer};
use ferry_amqp_wire::message::{self, Body, MessageError};
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Connection, LinkFlow, LinkFrame};
use super::error::AmqpError;

/// The link's handle on the client's side (the only link of the session).
const HANDLE: u32 = 0;

/// A delivery whose transfer frames are arriving.
#[derive(Debug)]
struct Assembly {
    delivery_id: u32,
    settled: bool,
    bytes: BytesMut,
}

/// Runs of consecutive delivery ids to accept.
#[derive(Debug, Default)]
struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    fn push(&mut self, id: u32) {
        match self.0.last_mut() {
            Some((_, last)) if last.wrapping_add(1) == id => *last = id,
            _ => self.0.push((id, id)),
        }
    }
}

/// A receiver link on its own connection.
#[derive(Debug)]
pub struct Receiver<S> {
    connection: Connection<S>,
    /// The link's handle on the peer's side, which its transfers carry.
    peer_handle: u32,
    /// The credit granted whenever it is topped up.
    credit_window: u32,
    link_credit: u32,
    delivery_count: u32,
    assembling: Option<Assembly>,
    to_accept: Ranges,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Receiver<S> {
    /// Attaches a receiver link named `name` to `source` on `connection` and grants `credit`.
    pub async fn attach(
        mut connection: Connection<S>,
        name: &str,
        source: &str,
        credit: u32,
    ) -> Result<Self, AmqpError> {
        let attach = Attach {
            name: name.to_owned(),
            handle: Handle(HANDLE),
            role: Role::Receiver,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(Source::builder().address(source).build())),
            target: Some(Box::new(TargetArchetype::Target(Target::builder().build()))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let answer = connection.attach(&attach).await?;
        let mut receiver = Self::attached(
            connection,
            answer.handle.0,
            answer.initial_delivery_count.unwrap_or(0),
            credit,
        );
        // Frames that came with the peer's attach (nothing can be delivered before the credit).
        receiver.process(|_| {})?;
        receiver.connection.write().await?;
        Ok(receiver)
    }

    /// The link after the attach exchange, with its first `flow` encoded.
    fn attached(
        connection: Connection<S>,
        peer_handle: u32,
        delivery_count: u32,
        credit: u32,
    ) -> Self {
        let mut receiver = Self {
            connection,
            peer_handle,
            credit_window: credit.max(1),
            link_credit: 0,
            delivery_count,
            assembling: None,
            to_accept: Ranges::default(),
        };
        receiver.grant();
        receiver
    }

    /// The connection, for reading, writing and heartbeats.
    pub fn connection(&mut self) -> &mut Connection<S> {
        &mut self.connection
    }

    /// Handles the frames received so far: every complete delivery's body goes to `delivered`
    /// (the bytes of its one Data section, empty for any other body; or why the message could not
    /// be read: it is accepted either way), then the outcomes and a credit
    /// top-up are encoded for the next write. An error (the peer detached, ended, closed, broke
    /// the protocol) ends the link.
    pub fn process(
        &mut self,
        mut delivered: impl FnMut(Result<&[u8], MessageError>),
    ) -> Result<(), AmqpError> {
        while let Some(frame) = self.connection.next_frame()? {
            match frame {
                LinkFrame::Transfer(transfer, payload) => {
                    if let Some((id, settled, message)) = self.on_transfer(&transfer, payload)? {
                        delivered(message::body(&message).map(|body| match body {
                            Body::Data(data) => data,
                            _ => &[],
                        }));
                        if !settled {
                            self.to_accept.push(id);
                        }
                    }
                }
                LinkFrame::Flow(flow) => self.on_flow(&flow),
                // The sender settling what was accepted: nothing left to do.
                LinkFrame::Disposition(_) => {}
            }
        }
        for (first, last) in self.to_accept.0.drain(..) {
            let disposition = Disposition {
                role: Role::Receiver,
                first,
                last: (last != first).then_some(last),
                settled: true,
                state: Some(Accepted {}.into()),
                batchable: false,
            };
            self.connection.disposition(&disposition);
        }
        if self.link_credit <= self.credit_window / 2 || self.connection.incoming_window_low() {
            self.grant();
        }
        Ok(())
    }

    /// Takes one transfer frame; a complete delivery comes back as (id, settled, message).
    fn on_transfer(
        &mut self,
        transfer: &Transfer,
        payload: Bytes,
    ) -> Result<Option<(u32, bool, Bytes)>, AmqpError> {
        if transfer.handle.0 != self.peer_handle {
            return Err(AmqpError::Protocol(format!(
                "a transfer on handle {}",
                transfer.handle.0
            )));
        }
        let settled = transfer.settled.unwrap_or(false);
        let assembly = match self.assembling.take() {
            Some(mut assembly) => {
                assembly.settled |= settled;
                assembly.bytes.extend_from_slice(&payload);
                assembly
            }
            None => {
                let Some(delivery_id) = transfer.delivery_id else {
                    return Err(AmqpError::Protocol(
                        "the first transfer of a delivery has no delivery-id".to_owned(),
                    ));
                };
                if self.link_credit == 0 {
                    return Err(AmqpError::Protocol(
                        "a transfer without link credit".to_owned(),
                    ));
                }
                self.link_credit -= 1;
                self.delivery_count = self.delivery_count.wrapping_add(1);
                if !transfer.more && !transfer.aborted {
                    // The common case: a message in one frame, not copied.
                    return Ok(Some((delivery_id, settled, payload)));
                }
                Assembly {
                    delivery_id,
                    settled,
                    bytes: BytesMut::from(&payload[..]),
                }
            }
        };
        if transfer.aborted {
            return Ok(None);
        }
        if transfer.more {
            self.assembling = Some(assembly);
            return Ok(None);
        }
        Ok(Some((
            assembly.delivery_id,
            assembly.settled,
            assembly.bytes.freeze(),
        )))
    }

    fn on_flow(&mut self, flow: &Flow) {
        if let Some(count) = flow.delivery_count {
            // §2.6.7: deliveries the sender counted beyond ours used up credit (drain).
            let limit = self.delivery_count.wrapping_add(self.link_credit);
            self.link_credit = limit.wrapping_sub(count).min(self.link_credit);
            self.delivery_count = count;
        }
        if flow.echo {
            self.send_flow();
        }
    }

    /// Tops the link credit up to the window.
    fn grant(&mut self) {
        self.link_credit = self.credit_window;
        self.send_flow();
    }

    fn send_flow(&mut self) {
        self.connection.flow(Some(LinkFlow {
            handle: HANDLE,
            delivery_count: self.delivery_count,
            link_credit: self.link_credit,
            drain: false,
        }));
    }

    /// Detaches, ends and closes (the caller bounds how long it may take).
    pub async fn close(self) {
        self.connection.close(Some(HANDLE)).await;
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::frames::amqp::FrameBody;
    use fe2o3_amqp::types::primitives::Binary;
    use ferry_amqp_wire::frame;

    use super::super::message::fixtures::northbound_data;
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn receiver(credit: u32) -> Receiver<tokio::io::DuplexStream> {
        Receiver::attached(Connection::for_test(512), HANDLE, 0, credit)
    }

    fn transfer(id: Option<u32>, settled: bool, more: bool) -> Transfer {
        Transfer {
            handle: Handle(HANDLE),
            delivery_id: id,
            delivery_tag: id.map(|i| Binary::from(i.to_be_bytes().to_vec())),
            message_format: Some(0),
            settled: Some(settled),
            more,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        }
    }

    /// Feeds transfer frames (performative, payload) as if received and processes them; returns
    /// the bodies delivered.
    fn receive(
        receiver: &mut Receiver<tokio::io::DuplexStream>,
        frames: &[(Transfer, &[u8])],
    ) -> Result<Vec<Result<Vec<u8>, MessageError>>, AmqpError> {
        for (transfer, payload) in frames {
            let received = receiver.connection.received();
            let start = received.len();
            frame::encode(received, 0, Some(transfer))
                .map_err(|e| AmqpError::Protocol(e.to_string()))?;
            received.extend_from_slice(payload);
            let size = (received.len() - start) as u32;
            received[start..start + 4].copy_from_slice(&size.to_be_bytes());
        }
        let mut bodies = Vec::new();
        receiver.process(|body| bodies.push(body.map(<[u8]>::to_vec)))?;
        Ok(bodies)
    }

    /// What the receiver wrote, decoded.
    fn written(receiver: &mut Receiver<tokio::io::DuplexStream>) -> Vec<FrameBody> {
        let mut out = std::mem::take(receiver.connection.output());
        let mut frames = Vec::new();
        while let Ok(Some(f)) = frame::next_frame(&mut out, u32::MAX) {
            frames.push(f.body);
        }
        frames
    }

    fn ranges(frames: &[FrameBody]) -> Vec<(u32, Option<u32>)> {
        frames
            .iter()
            .filter_map(|f| match f {
                FrameBody::Disposition(d) if d.settled && d.role == Role::Receiver => {
                    Some((d.first, d.last))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn unsettled_deliveries_are_accepted_in_ranges_and_presettled_ones_not_at_all() -> TestResult {
        let mut receiver = receiver(100);
        assert!(matches!(written(&mut receiver).as_slice(),
            [FrameBody::Flow(f)] if f.link_credit == Some(100) && f.delivery_count == Some(0)));
        let message = northbound_data(b"payload");
        let bodies = receive(
            &mut receiver,
            &[
                (transfer(Some(0), false, false), &message),
                (transfer(Some(1), false, false), &message),
                (transfer(Some(2), false, false), &message),
                (transfer(Some(3), true, false), &message),
                (transfer(Some(4), false, false), &message),
            ],
        )?;
        assert_eq!(bodies.len(), 5);
        assert!(bodies.iter().all(|b| b.as_deref() == Ok(&b"payload"[..])));
        assert_eq!(
            ranges(&written(&mut receiver)),
            vec![(0, Some(2)), (4, None)]
        );
        // Nothing more to settle: nothing is written.
        receive(&mut receiver, &[])?;
        assert!(written(&mut receiver).is_empty());
        Ok(())
    }

    #[test]
    fn credit_is_topped_up_once_half_is_used() -> TestResult {
        let mut receiver = receiver(4);
        written(&mut receiver);
        let message = northbound_data(b"x");
        receive(&mut receiver, &[(transfer(Some(0), true, false), &message)])?;
        assert!(written(&mut receiver).is_empty(), "3 of 4 left");
        receive(&mut receiver, &[(transfer(Some(1), true, false), &message)])?;
        assert!(matches!(written(&mut receiver).as_slice(),
            [FrameBody::Flow(f)] if f.link_credit == Some(4) && f.delivery_count == Some(2)
                && f.handle == Some(Handle(HANDLE))));
        // Beyond the credit is a protocol error.
        let burst: Vec<(Transfer, &[u8])> = (2..7)
            .map(|id| (transfer(Some(id), true, false), &message[..]))
            .collect();
        assert!(matches!(
            receive(&mut receiver, &burst),
            Err(AmqpError::Protocol(_))
        ));
        Ok(())
    }

    #[test]
    fn multi_frame_deliveries_are_joined_and_aborted_ones_dropped() -> TestResult {
        let mut receiver = receiver(10);
        written(&mut receiver);
        let payload: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        let message = northbound_data(&payload);
        let (a, rest) = message.split_at(300);
        let (b, c) = rest.split_at(500);
        let mut aborted = transfer(None, false, false);
        aborted.aborted = true;
        let bodies = receive(
            &mut receiver,
            &[
                (transfer(Some(0), false, true), a),
                (transfer(None, false, true), b),
                (transfer(None, false, false), c),
                (transfer(Some(1), false, true), a),
                (aborted, &[]),
            ],
        )?;
        assert_eq!(bodies, vec![Ok(payload)]);
        assert_eq!(ranges(&written(&mut receiver)), vec![(0, None)]);
        assert_eq!(
            receiver.link_credit, 8,
            "the aborted delivery used its credit"
        );
        Ok(())
    }

    #[test]
    fn a_sender_advancing_its_delivery_count_uses_up_credit() -> TestResult {
        let mut receiver = receiver(10);
        written(&mut receiver);
        let flow = Flow {
            next_incoming_id: Some(0),
            incoming_window: 100,
            next_outgoing_id: 0,
            outgoing_window: 100,
            handle: Some(Handle(HANDLE)),
            delivery_count: Some(7),
            link_credit: Some(0),
            available: Some(0),
            drain: true,
            echo: true,
            properties: None,
        };
        frame::encode(receiver.connection.received(), 0, Some(&flow))?;
        receive(&mut receiver, &[])?;
        // 3 left after the drain, below half: topped up; the echo is answered too.
        let frames = written(&mut receiver);
        assert!(matches!(frames.as_slice(),
            [FrameBody::Flow(echo), FrameBody::Flow(grant)]
                if echo.link_credit == Some(3) && echo.delivery_count == Some(7)
                    && grant.link_credit == Some(10)));
        Ok(())
    }

    #[test]
    fn transfers_carry_the_peers_handle() -> TestResult {
        let mut receiver = Receiver::attached(Connection::for_test(512), 3, 0, 10);
        let message = northbound_data(b"x");
        let mut ours = transfer(Some(0), true, false);
        ours.handle = Handle(3);
        assert_eq!(receive(&mut receiver, &[(ours, &message)])?.len(), 1);
        let other = transfer(Some(1), true, false);
        assert!(matches!(
            receive(&mut receiver, &[(other, &message)]),
            Err(AmqpError::Protocol(_))
        ));
        Ok(())
    }

    #[test]
    fn undecodable_bodies_are_reported_and_still_settled() -> TestResult {
        let mut receiver = receiver(10);
        written(&mut receiver);
        let bodies = receive(
            &mut receiver,
            &[(transfer(Some(0), false, false), &[0x53, 0x00])],
        )?;
        assert!(matches!(bodies.as_slice(), [Err(_)]), "{bodies:?}");
        assert_eq!(ranges(&written(&mut receiver)), vec![(0, None)]);
        Ok(())
    }
}
