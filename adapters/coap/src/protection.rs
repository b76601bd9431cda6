//! DTLS 1.2 record protection of an established session (RFC 6347 §4.1; AEAD records as in
//! RFC 5246 §6.2.3.3, RFC 5288 and RFC 6655): splitting a datagram into records, opening the
//! client's epoch-1 records in place, sealing the server's, and the anti-replay window
//! (RFC 6347 §4.1.2.6). No I/O and no allocation on the receive path.
//!
//! A protected record is `header(13) | explicit nonce(8) | ciphertext | tag`; the nonce is the
//! sender's 4-byte implicit IV followed by the explicit nonce, and the additional data is
//! `epoch(2) seq(6) | type | version | plaintext length`. The server's explicit nonce is its
//! epoch and sequence number, unique per record.

use aes::Aes128;
use aes_gcm::Aes128Gcm;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use ccm::Ccm;
use ccm::consts::{U8, U12, U16};

use crate::keys::{Aead, SessionKeys};

/// Record content types.
pub(crate) const CHANGE_CIPHER_SPEC: u8 = 20;
pub(crate) const ALERT: u8 = 21;
pub(crate) const HANDSHAKE: u8 = 22;
pub(crate) const APPLICATION_DATA: u8 = 23;
/// DTLS 1.2 on the wire.
const VERSION: [u8; 2] = [0xfe, 0xfd];
/// Record header: type, version (2), epoch (2), sequence number (6), length (2).
const HEADER: usize = 13;
const EXPLICIT_NONCE: usize = 8;
/// The epoch of every protected record after the (only) handshake.
pub(crate) const EPOCH: u16 = 1;
/// Largest record sequence number (48 bits).
const MAX_SEQUENCE: u64 = (1 << 48) - 1;
/// Records remembered behind the newest one (RFC 6347's minimum window).
const WINDOW: u64 = 64;

type Aes128Ccm = Ccm<Aes128, U16, U12>;
type Aes128Ccm8 = Ccm<Aes128, U8, U12>;

/// One record of a datagram, its body still as received.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) content_type: u8,
    version: [u8; 2],
    pub(crate) epoch: u16,
    pub(crate) sequence: u64,
    body: &'a mut [u8],
}

/// The records of a datagram in order; a truncated record ends the datagram (RFC 6347
/// §4.1.2.7: invalid records are discarded silently).
pub(crate) fn records(datagram: &mut [u8]) -> impl Iterator<Item = Record<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let length = usize::from(u16::from_be_bytes([*rest.get(11)?, *rest.get(12)?]));
        if rest.len() < HEADER + length {
            return None;
        }
        let (record, tail) = std::mem::take(&mut rest).split_at_mut(HEADER + length);
        rest = tail;
        let (header, body) = record.split_at_mut(HEADER);
        let mut sequence = [0u8; 8];
        sequence[2..].copy_from_slice(header.get(5..11)?);
        Some(Record {
            content_type: header[0],
            version: [header[1], header[2]],
            epoch: u16::from_be_bytes([header[3], header[4]]),
            sequence: u64::from_be_bytes(sequence),
            body,
        })
    })
}

/// Why a record was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Discard {
    #[error("not a DTLS 1.2 record of epoch 1")]
    Epoch,
    #[error("shorter than nonce and tag")]
    TooShort,
    #[error("sequence number already received or too old")]
    Replayed,
    #[error("authentication failed")]
    BadTag,
}

/// Why no record could be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    /// The server's sequence numbers are used up; the session must end (RFC 6347 §4.1).
    #[error("record sequence numbers exhausted")]
    Exhausted,
    /// The plaintext does not fit one record.
    #[error("plaintext too long for one record")]
    TooLong,
}

/// Received sequence numbers: the newest, and a bit for each of the [`WINDOW`] before it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ReplayWindow {
    newest: Option<u64>,
    seen: u64,
}

impl ReplayWindow {
    fn is_fresh(&self, sequence: u64) -> bool {
        match self.newest {
            None => true,
            Some(newest) if sequence > newest => true,
            Some(newest) => {
                let behind = newest - sequence;
                behind < WINDOW && self.seen & (1 << behind) == 0
            }
        }
    }

    /// Records `sequence` (only after the record was authenticated).
    fn mark(&mut self, sequence: u64) {
        match self.newest {
            Some(newest) if sequence <= newest => {
                let behind = newest - sequence;
                if behind < WINDOW {
                    self.seen |= 1 << behind;
                }
            }
            Some(newest) => {
                let ahead = sequence - newest;
                self.seen = if ahead >= WINDOW {
                    1
                } else {
                    (self.seen << ahead) | 1
                };
                self.newest = Some(sequence);
            }
            None => {
                self.seen = 1;
                self.newest = Some(sequence);
            }
        }
    }
}

/// The server side of one session's epoch 1: keys, its next sequence number, the replay window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordLayer {
    keys: SessionKeys,
    next_sequence: u64,
    window: ReplayWindow,
}

fn nonce(iv: &[u8; 4], explicit: &[u8]) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(iv);
    nonce[4..].copy_from_slice(explicit.get(..EXPLICIT_NONCE).unwrap_or_default());
    nonce
}

fn additional_data(content_type: u8, version: [u8; 2], seq_num: &[u8], length: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(seq_num.get(..8).unwrap_or_default());
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&u16::try_from(length).unwrap_or(u16::MAX).to_be_bytes());
    aad
}

impl RecordLayer {
    /// The record layer of a session whose server sends `next_sequence` next.
    pub(crate) fn new(keys: SessionKeys, next_sequence: u64) -> Self {
        Self {
            keys,
            next_sequence,
            window: ReplayWindow::default(),
        }
    }

    /// Authenticates and decrypts an epoch-1 record from the client in place; returns its
    /// plaintext. A record is accepted once: replays and records older than the window are
    /// discarded.
    pub(crate) fn open<'a>(&mut self, record: Record<'a>) -> Result<&'a [u8], Discard> {
        if record.epoch != EPOCH || record.version != VERSION {
            return Err(Discard::Epoch);
        }
        let tag_len = self.keys.aead.tag_len();
        if record.body.len() < EXPLICIT_NONCE + tag_len {
            return Err(Discard::TooShort);
        }
        if !self.window.is_fresh(record.sequence) {
            return Err(Discard::Replayed);
        }
        let (explicit, rest) = record.body.split_at_mut(EXPLICIT_NONCE);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - tag_len);
        let seq_num = (u64::from(EPOCH) << 48 | record.sequence).to_be_bytes();
        let aad = additional_data(
            record.content_type,
            record.version,
            &seq_num,
            ciphertext.len(),
        );
        let nonce = nonce(&self.keys.client_iv, explicit);
        let key = &self.keys.client_key;
        let opened = match self.keys.aead {
            Aead::Aes128Gcm => Aes128Gcm::new(key.into()).decrypt_in_place_detached(
                &nonce.into(),
                &aad,
                ciphertext,
                GenericArray::from_slice(tag),
            ),
            Aead::Aes128Ccm => Aes128Ccm::new(key.into()).decrypt_in_place_detached(
                &nonce.into(),
                &aad,
                ciphertext,
                GenericArray::from_slice(tag),
            ),
            Aead::Aes128Ccm8 => Aes128Ccm8::new(key.into()).decrypt_in_place_detached(
                &nonce.into(),
                &aad,
                ciphertext,
                GenericArray::from_slice(tag),
            ),
        };
        opened.map_err(|_| Discard::BadTag)?;
        self.window.mark(record.sequence);
        Ok(ciphertext)
    }

    /// One protected record of `content_type` carrying `plaintext`, as a datagram of its own.
    pub(crate) fn seal(
        &mut self,
        content_type: u8,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        if self.next_sequence > MAX_SEQUENCE {
            return Err(SealError::Exhausted);
        }
        let tag_len = self.keys.aead.tag_len();
        let length = u16::try_from(EXPLICIT_NONCE + plaintext.len() + tag_len)
            .map_err(|_| SealError::TooLong)?;
        let seq_num = (u64::from(EPOCH) << 48 | self.next_sequence).to_be_bytes();
        self.next_sequence += 1;
        let mut record = Vec::with_capacity(HEADER + usize::from(length));
        record.push(content_type);
        record.extend_from_slice(&VERSION);
        record.extend_from_slice(&seq_num);
        record.extend_from_slice(&length.to_be_bytes());
        record.extend_from_slice(&seq_num);
        record.extend_from_slice(plaintext);
        let aad = additional_data(content_type, VERSION, &seq_num, plaintext.len());
        let nonce = nonce(&self.keys.server_iv, &seq_num);
        let key = &self.keys.server_key;
        let buffer = record
            .get_mut(HEADER + EXPLICIT_NONCE..)
            .unwrap_or_default();
        let mut tag = [0u8; 16];
        let sealed = match self.keys.aead {
            Aead::Aes128Gcm => Aes128Gcm::new(key.into())
                .encrypt_in_place_detached(&nonce.into(), &aad, buffer)
                .map(|t| tag.copy_from_slice(&t)),
            Aead::Aes128Ccm => Aes128Ccm::new(key.into())
                .encrypt_in_place_detached(&nonce.into(), &aad, buffer)
                .map(|t| tag.copy_from_slice(&t)),
            Aead::Aes128Ccm8 => Aes128Ccm8::new(key.into())
                .encrypt_in_place_detached(&nonce.into(), &aad, buffer)
                .map(|t| tag[..8].copy_from_slice(&t)),
        };
        sealed.map_err(|_| SealError::TooLong)?;
        record.extend_from_slice(tag.get(..tag_len).unwrap_or_default());
        Ok(record)
    }
}

#[cfg(test)]
pub(crate) mod tests;
