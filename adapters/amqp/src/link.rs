//! The state of one attached link of a device: link credit and the delivery being assembled.
//!
//! An upload link (the device's anonymous-relay sender, our receiver) holds at most
//! [`CREDIT_WINDOW`] deliveries: those being forwarded plus the credit the device holds. Credit
//! refills as deliveries settle, not per message: once at least a quarter of the window can be
//! given back, one `flow` tops the device's credit up to the window minus what is in flight. So a
//! device keeps up to 128 messages in the pipeline, the adapter sends about one `flow` per 32
//! settled messages, and a connection holds at most 128 messages per link.

use bytes::Bytes;
use fe2o3_amqp::types::definitions::{Error as ErrorBody, LinkError};
use fe2o3_amqp::types::performatives::Transfer;

use crate::transfer::Assembly;

/// Most deliveries of one upload link in the adapter's hands: in flight plus the device's credit.
pub(crate) const CREDIT_WINDOW: u32 = 128;
/// Credit is topped up once this much of the window can be given back.
const REFILL_STEP: u32 = CREDIT_WINDOW / 4;

/// A complete delivery taken off a link.
#[derive(Debug)]
pub(crate) struct Received {
    /// The delivery id.
    pub(crate) delivery_id: u32,
    /// The device settled it (at most once): no outcome goes back.
    pub(crate) settled: bool,
    /// The encoded message.
    pub(crate) message: Bytes,
}

/// What a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An upload link: transfers are forwarded.
    Upload,
    /// A link the adapter detached (refused, or closed with an error): it waits for the device's detach.
    Detached,
}

/// One link of a session.
#[derive(Debug)]
pub(crate) struct Link {
    /// Unique within the connection: settlements of a link that is gone are told apart.
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    /// The device's sender settle mode is `settled`.
    presettled: bool,
    pub(crate) delivery_count: u32,
    /// The credit the device holds.
    pub(crate) credit: u32,
    /// Deliveries received and not yet settled by the adapter.
    in_flight: u32,
    assembling: Option<Assembly>,
    max_message_size: u64,
}

impl Link {
    /// A link the device attached; `initial_delivery_count` from its attach.
    pub(crate) fn new(
        id: u64,
        kind: Kind,
        presettled: bool,
        initial_delivery_count: u32,
        max_message_size: u64,
    ) -> Self {
        Self {
            id,
            kind,
            presettled,
            delivery_count: initial_delivery_count,
            credit: 0,
            in_flight: 0,
            assembling: None,
            max_message_size,
        }
    }

    /// Takes one transfer frame; a complete delivery is returned. An error detaches the link.
    pub(crate) fn on_transfer(
        &mut self,
        transfer: &Transfer,
        payload: Bytes,
    ) -> Result<Option<Received>, ErrorBody> {
        if self.kind == Kind::Detached {
            return Ok(None);
        }
        let settled = transfer.settled.unwrap_or(false) || self.presettled;
        let assembling = match self.assembling.take() {
            Some(mut assembling) => {
                if transfer.aborted {
                    return Ok(None);
                }
                if let Err(e) = assembling.append(settled, &payload, self.max_message_size) {
                    return Err(size_exceeded(e));
                }
                assembling
            }
            None => {
                let Some(delivery_id) = transfer.delivery_id else {
                    return Err(ErrorBody::new(
                        fe2o3_amqp::types::definitions::AmqpError::InvalidField,
                        "the first transfer of a delivery has no delivery-id".to_owned(),
                        None,
                    ));
                };
                if self.credit == 0 {
                    return Err(ErrorBody::new(
                        LinkError::TransferLimitExceeded,
                        "transfer without link credit".to_owned(),
                        None,
                    ));
                }
                self.credit -= 1;
                self.delivery_count = self.delivery_count.wrapping_add(1);
                if transfer.aborted {
                    return Ok(None);
                }
                Assembly::start(delivery_id, settled, payload, self.max_message_size)
                    .map_err(size_exceeded)?
            }
        };
        if transfer.more {
            self.assembling = Some(assembling);
            return Ok(None);
        }
        self.in_flight += 1;
        Ok(Some(Received {
            delivery_id: assembling.delivery_id,
            settled: assembling.settled,
            message: assembling.finish(),
        }))
    }

    /// A delivery of this link was settled by the adapter.
    pub(crate) fn settled(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Whether deliveries are being forwarded.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight > 0
    }

    /// The credit to grant now, if a top-up is due (`force`: whatever it is, e.g. for an echo).
    pub(crate) fn refill(&mut self, force: bool) -> Option<u32> {
        if self.kind != Kind::Upload {
            return None;
        }
        let target = CREDIT_WINDOW.saturating_sub(self.in_flight);
        if force || target >= self.credit + REFILL_STEP {
            self.credit = target;
            return Some(target);
        }
        None
    }
}

fn size_exceeded(e: crate::transfer::TooLarge) -> ErrorBody {
    ErrorBody::new(LinkError::MessageSizeExceeded, e.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(delivery_id: Option<u32>, more: bool) -> Transfer {
        Transfer {
            handle: fe2o3_amqp::types::definitions::Handle(0),
            delivery_id,
            delivery_tag: None,
            message_format: None,
            settled: None,
            more,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        }
    }

    fn upload() -> Link {
        Link::new(1, Kind::Upload, false, 0, 100)
    }

    #[test]
    fn credit_refills_as_deliveries_settle_not_per_message() -> Result<(), ErrorBody> {
        let mut link = upload();
        assert_eq!(link.refill(false), Some(CREDIT_WINDOW));
        for id in 0..CREDIT_WINDOW {
            let received = link.on_transfer(&transfer(Some(id), false), Bytes::new())?;
            assert!(received.is_some());
        }
        assert_eq!(link.credit, 0);
        assert_eq!(link.delivery_count, CREDIT_WINDOW);
        // A few settlements give nothing back yet...
        for _ in 0..REFILL_STEP - 1 {
            link.settled();
            assert_eq!(link.refill(false), None);
        }
        // ...a quarter of the window does, in one flow.
        link.settled();
        assert_eq!(link.refill(false), Some(REFILL_STEP));
        assert_eq!(link.refill(false), None);
        assert_eq!(link.refill(true), Some(REFILL_STEP));
        Ok(())
    }

    #[test]
    fn a_transfer_without_credit_detaches_the_link() {
        let mut link = upload();
        let error = link
            .on_transfer(&transfer(Some(0), false), Bytes::new())
            .err();
        assert_eq!(
            error.map(|e| e.condition),
            Some(LinkError::TransferLimitExceeded.into())
        );
    }

    #[test]
    fn multi_frame_deliveries_take_one_credit_and_honour_the_size() -> Result<(), ErrorBody> {
        let mut link = upload();
        link.refill(false);
        let first = link.on_transfer(&transfer(Some(5), true), Bytes::from(vec![1u8; 60]))?;
        assert!(first.is_none());
        let done = link
            .on_transfer(&transfer(None, false), Bytes::from(vec![2u8; 40]))?
            .ok_or("incomplete")
            .map_err(|e| ErrorBody::new(LinkError::DetachForced, e.to_owned(), None))?;
        assert_eq!(done.delivery_id, 5);
        assert_eq!(done.message.len(), 100);
        assert_eq!(link.credit, CREDIT_WINDOW - 1);
        assert!(link.is_busy());

        link.on_transfer(&transfer(Some(6), true), Bytes::from(vec![1u8; 60]))?;
        let error = link
            .on_transfer(&transfer(None, false), Bytes::from(vec![2u8; 41]))
            .err();
        assert_eq!(
            error.map(|e| e.condition),
            Some(LinkError::MessageSizeExceeded.into())
        );
        Ok(())
    }

    #[test]
    fn a_first_transfer_needs_a_delivery_id_and_refused_links_ignore_transfers() {
        let mut link = upload();
        link.refill(false);
        assert!(
            link.on_transfer(&transfer(None, false), Bytes::new())
                .is_err()
        );
        let mut refused = Link::new(2, Kind::Detached, false, 0, 100);
        assert!(matches!(
            refused.on_transfer(&transfer(Some(0), false), Bytes::new()),
            Ok(None)
        ));
        assert_eq!(refused.refill(true), None);
    }
}
