//! The state of one link an application attached: a consumer link (our sender) with its queue,
//! credit and settle mode, or a refused link waiting for the application's `detach`.
//!
//! Credit follows AMQP 1.0 §2.6.7: the consumer's `flow` sets the credit to its delivery count
//! plus its link credit minus ours; every delivery spends one and advances our delivery count.
//! A `drain` request that finds nothing to send uses the credit up and is answered with a `flow`.

use std::sync::Arc;

use fe2o3_amqp::types::definitions::SenderSettleMode;

use crate::consumers::{LinkQueue, Node};

/// What a link is.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A consumer of `telemetry/TENANT` or `event/TENANT`.
    Consumer(Consumer),
    /// Refused or closed by us: it waits for the application's `detach`.
    Detached,
}

/// A consumer link's registration.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// The source address.
    pub node: Node,
    /// The id the registry knows it by.
    pub registration: u64,
    /// Where messages for it wait.
    pub queue: Arc<LinkQueue>,
}

/// One link of a session.
#[derive(Debug)]
pub(crate) struct Link {
    /// Unique within the connection: outcomes of a link that is gone are told apart.
    pub id: u64,
    pub kind: Kind,
    /// The negotiated sender settle mode.
    pub settle_mode: SenderSettleMode,
    /// Our delivery count.
    pub delivery_count: u32,
    /// Deliveries the consumer is ready for.
    pub credit: u32,
    /// The consumer asked to use up the credit.
    pub drain: bool,
    /// A `flow` is due (echo requested, or a drain finished).
    pub flow_due: bool,
    /// The consumer's largest message (`None` or 0: no limit).
    pub max_message_size: Option<u64>,
}

impl Link {
    /// A link in state `kind` with no credit yet.
    pub(crate) fn new(id: u64, kind: Kind, settle_mode: SenderSettleMode) -> Self {
        Self {
            id,
            kind,
            settle_mode,
            delivery_count: 0,
            credit: 0,
            drain: false,
            flow_due: false,
            max_message_size: None,
        }
    }

    /// Takes the consumer's link `flow`: its delivery count (absent before it saw our attach),
    /// its credit and its drain flag.
    pub(crate) fn on_flow(&mut self, delivery_count: Option<u32>, link_credit: u32, drain: bool) {
        let count = delivery_count.unwrap_or(self.delivery_count);
        let credit = count
            .wrapping_add(link_credit)
            .wrapping_sub(self.delivery_count);
        // A count ahead of ours (a confused peer) leaves no credit rather than nearly 2^32.
        self.credit = if credit > link_credit { 0 } else { credit };
        self.drain = drain;
    }

    /// Spends one credit on a delivery.
    pub(crate) fn spend(&mut self) {
        self.credit = self.credit.saturating_sub(1);
        self.delivery_count = self.delivery_count.wrapping_add(1);
    }

    /// Ends a drain when nothing is left to send: the credit is used up and a `flow` is due.
    pub(crate) fn finish_drain(&mut self) {
        if self.drain && self.credit > 0 {
            self.delivery_count = self.delivery_count.wrapping_add(self.credit);
            self.credit = 0;
            self.flow_due = true;
        }
    }

    /// Whether a delivery goes pre-settled: always in mode `settled`, never in `unsettled`, and
    /// in `mixed` when nobody waits for the outcome.
    pub(crate) fn presettled(&self, outcome_wanted: bool) -> bool {
        match self.settle_mode {
            SenderSettleMode::Settled => true,
            SenderSettleMode::Unsettled => false,
            SenderSettleMode::Mixed => !outcome_wanted,
        }
    }

    /// The consumer part, if the link is one.
    pub(crate) fn consumer(&self) -> Option<&Consumer> {
        match &self.kind {
            Kind::Consumer(consumer) => Some(consumer),
            Kind::Detached => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_follows_the_consumers_flow_and_drain_uses_it_up() {
        let mut link = Link::new(0, Kind::Detached, SenderSettleMode::Mixed);
        link.on_flow(None, 10, false);
        assert_eq!(link.credit, 10);
        for _ in 0..4 {
            link.spend();
        }
        assert_eq!((link.credit, link.delivery_count), (6, 4));
        // The consumer had not seen all four deliveries when it granted 10 more.
        link.on_flow(Some(2), 10, false);
        assert_eq!(link.credit, 8);
        link.on_flow(Some(9), 1, false);
        assert_eq!(link.credit, 0, "a count ahead of ours gives no credit");
        link.on_flow(Some(4), 5, true);
        link.finish_drain();
        assert_eq!(
            (link.credit, link.delivery_count, link.flow_due),
            (0, 9, true)
        );
        assert!(link.presettled(false) && !link.presettled(true));
    }
}
