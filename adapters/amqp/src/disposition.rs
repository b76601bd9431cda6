//! Batching settlements into `disposition` frames.
//!
//! One `disposition` settles the range `first..=last` of delivery ids with one outcome (AMQP 1.0
//! §2.7.6), so the outcomes decided since the last write go out as one frame per run of
//! consecutive ids with the same outcome: at full load mostly one frame for dozens of deliveries.
//! The adapter is the receiver and settles in mode `first`, so every frame is `settled`.

use fe2o3_amqp::types::definitions::Role;
use fe2o3_amqp::types::messaging::DeliveryState;
use fe2o3_amqp::types::performatives::Disposition;

/// Outcomes decided on one session and not yet sent.
#[derive(Debug, Default)]
pub(crate) struct Settlements(Vec<(u32, DeliveryState)>);

impl Settlements {
    /// Notes the outcome of delivery `id`.
    pub(crate) fn push(&mut self, id: u32, state: DeliveryState) {
        self.0.push((id, state));
    }

    /// Whether nothing waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `disposition` frames for everything noted, fewest first-to-last ranges; empties the
    /// list (and frees it: an idle session holds no buffer).
    pub(crate) fn take_frames(&mut self) -> Vec<Disposition> {
        let mut settled = std::mem::take(&mut self.0);
        settled.sort_unstable_by_key(|(id, _)| *id);
        let mut frames: Vec<Disposition> = Vec::new();
        for (id, state) in settled {
            if let Some(last) = frames.last_mut() {
                let end = last.last.unwrap_or(last.first);
                if end.wrapping_add(1) == id && last.state.as_ref() == Some(&state) {
                    last.last = Some(id);
                    continue;
                }
            }
            frames.push(Disposition {
                role: Role::Receiver,
                first: id,
                last: None,
                settled: true,
                state: Some(state),
                batchable: false,
            });
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::definitions::{AmqpError, Error as ErrorBody};
    use fe2o3_amqp::types::messaging::{Accepted, Rejected, Released};

    use super::*;

    fn accepted() -> DeliveryState {
        DeliveryState::Accepted(Accepted {})
    }

    fn rejected(why: &str) -> DeliveryState {
        DeliveryState::Rejected(Rejected {
            error: Some(ErrorBody::new(AmqpError::NotFound, why.to_owned(), None)),
        })
    }

    #[test]
    fn consecutive_ids_with_one_outcome_share_a_frame() {
        let mut settlements = Settlements::default();
        // Decided out of order, as forwards finish.
        for id in [3, 1, 2, 4, 7, 8] {
            settlements.push(id, accepted());
        }
        settlements.push(5, DeliveryState::Released(Released {}));
        settlements.push(9, rejected("a"));
        settlements.push(10, rejected("a"));
        settlements.push(11, rejected("b"));
        let ranges: Vec<_> = settlements
            .take_frames()
            .iter()
            .map(|d| (d.first, d.last, d.settled, d.role.clone()))
            .collect();
        let r = Role::Receiver;
        assert_eq!(
            ranges,
            [
                (1, Some(4), true, r.clone()),
                (5, None, true, r.clone()),
                (7, Some(8), true, r.clone()),
                (9, Some(10), true, r.clone()),
                (11, None, true, r),
            ]
        );
        assert!(settlements.is_empty());
        assert!(settlements.take_frames().is_empty());
    }

    #[test]
    fn the_outcome_of_each_range_is_kept() {
        let mut settlements = Settlements::default();
        settlements.push(1, accepted());
        settlements.push(2, rejected("a"));
        let frames = settlements.take_frames();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].state, Some(accepted()));
        assert_eq!(frames[1].state, Some(rejected("a")));
    }
}
