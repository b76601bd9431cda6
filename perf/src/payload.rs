//! The payload every generated message carries: a send timestamp, a sequence number and the run
//! id, followed by filler up to the requested size.
//!
//! The consumer reads the header back to measure end-to-end latency (both ends run on the same
//! machine and read the same wall clock), to spot duplicates, and to ignore messages of earlier
//! runs that a durable queue still holds.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes taken by the header; the smallest payload the harness can send.
pub const HEADER_LEN: usize = 24;

/// Sequence number of warm-up messages (sent before the clock starts, never counted).
pub const WARMUP_SEQ: u64 = u64::MAX;

/// What a payload says about its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Wall-clock send time, microseconds since the Unix epoch.
    pub sent_us: u64,
    /// Sequence number, unique within the run ([`WARMUP_SEQ`] for warm-up messages).
    pub seq: u64,
    /// The run that sent it.
    pub run: u64,
}

/// Builds payloads of one size with little work per message.
#[derive(Clone, Debug)]
pub struct PayloadBuilder {
    size: usize,
}

impl PayloadBuilder {
    /// A builder for payloads of `size` bytes (at least [`HEADER_LEN`]).
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(HEADER_LEN),
        }
    }

    /// The payload size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The payload for `stamp`: header, then `x` up to the size.
    pub fn build(&self, stamp: Stamp) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.size);
        buf.put_u64(stamp.sent_us);
        buf.put_u64(stamp.seq);
        buf.put_u64(stamp.run);
        buf.resize(self.size, b'x');
        buf.freeze()
    }
}

/// Reads the header of a payload; `None` if it is too short to be ours.
pub fn decode(payload: &[u8]) -> Option<Stamp> {
    let word = |i: usize| -> Option<u64> {
        let bytes: [u8; 8] = payload.get(i * 8..i * 8 + 8)?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    };
    Some(Stamp {
        sent_us: word(0)?,
        seq: word(1)?,
        run: word(2)?,
    })
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_size_is_kept() {
        let stamp = Stamp {
            sent_us: 1_700_000_000_123_456,
            seq: 42,
            run: 7,
        };
        let payload = PayloadBuilder::new(256).build(stamp);
        assert_eq!(payload.len(), 256);
        assert_eq!(decode(&payload), Some(stamp));
    }

    #[test]
    fn small_sizes_still_hold_the_header_and_short_payloads_are_not_ours() {
        let builder = PayloadBuilder::new(3);
        assert_eq!(builder.size(), HEADER_LEN);
        assert_eq!(decode(b"hello"), None);
    }
}
