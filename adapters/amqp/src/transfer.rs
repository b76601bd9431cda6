//! Assembling one delivery from its transfer frames (AMQP 1.0 §2.6.14).
//!
//! A delivery's first transfer carries its delivery id; frames with `more` set are followed by
//! further frames of the same delivery. A single-frame message keeps the received bytes without
//! a copy; a multi-frame one is copied together, never beyond the link's maximum message size.

use bytes::{Bytes, BytesMut};

/// The message size limit was crossed; the delivery is dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("message of at least {size} bytes exceeds the maximum of {max}")]
pub(crate) struct TooLarge {
    /// Bytes received so far.
    pub(crate) size: u64,
    /// The link's maximum message size.
    pub(crate) max: u64,
}

/// A delivery whose transfers are arriving.
#[derive(Debug)]
pub(crate) struct Assembly {
    /// The delivery id of the first transfer.
    pub(crate) delivery_id: u32,
    /// Whether the device settled the delivery (on any of its transfers).
    pub(crate) settled: bool,
    bytes: Bytes,
    joined: Option<BytesMut>,
}

impl Assembly {
    /// Starts with the first transfer's payload.
    pub(crate) fn start(
        delivery_id: u32,
        settled: bool,
        payload: Bytes,
        max: u64,
    ) -> Result<Self, TooLarge> {
        check(payload.len(), max)?;
        Ok(Self {
            delivery_id,
            settled,
            bytes: payload,
            joined: None,
        })
    }

    /// Adds a continuation transfer's payload.
    pub(crate) fn append(
        &mut self,
        settled: bool,
        payload: &[u8],
        max: u64,
    ) -> Result<(), TooLarge> {
        self.settled |= settled;
        let joined = self.joined.get_or_insert_with(|| {
            let mut joined = BytesMut::with_capacity(self.bytes.len() + payload.len());
            joined.extend_from_slice(&self.bytes);
            joined
        });
        self.bytes = Bytes::new();
        check(joined.len() + payload.len(), max)?;
        joined.extend_from_slice(payload);
        Ok(())
    }

    /// The complete message.
    pub(crate) fn finish(self) -> Bytes {
        match self.joined {
            Some(joined) => joined.freeze(),
            None => self.bytes,
        }
    }
}

fn check(size: usize, max: u64) -> Result<(), TooLarge> {
    let size = size as u64;
    if size > max {
        return Err(TooLarge { size, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_join_into_one_message() -> Result<(), TooLarge> {
        let single = Assembly::start(7, false, Bytes::from_static(b"whole"), 10)?;
        assert_eq!(single.finish(), Bytes::from_static(b"whole"));

        let mut parts = Assembly::start(8, false, Bytes::from_static(b"abc"), 10)?;
        parts.append(false, b"def", 10)?;
        parts.append(true, b"gh", 10)?;
        assert_eq!(parts.delivery_id, 8);
        assert!(parts.settled, "settled on a later frame");
        assert_eq!(parts.finish(), Bytes::from_static(b"abcdefgh"));
        Ok(())
    }

    #[test]
    fn the_size_limit_holds_across_frames() -> Result<(), TooLarge> {
        assert_eq!(
            Assembly::start(1, false, Bytes::from_static(b"eleven byte"), 10).err(),
            Some(TooLarge { size: 11, max: 10 })
        );
        let mut parts = Assembly::start(1, false, Bytes::from_static(b"12345"), 10)?;
        parts.append(false, b"12345", 10)?;
        assert_eq!(
            parts.append(false, b"1", 10),
            Err(TooLarge { size: 11, max: 10 })
        );
        Ok(())
    }
}
