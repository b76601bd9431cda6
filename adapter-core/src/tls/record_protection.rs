//! TLS 1.3 record protection (RFC 8446 §5) with traffic keys taken over from rustls after the
//! handshake: sealing application data and alerts, opening records from the peer. No I/O here.
//!
//! An idle connection then holds two AEAD keys and their sequence numbers instead of a whole
//! rustls connection. What rustls would otherwise handle after the handshake is decided here:
//! `close_notify` ends the stream in an orderly way, other alerts and anything malformed are
//! errors, and a KeyUpdate from the peer is refused (the traffic secret it would derive the next
//! keys from is not kept), which closes the connection.

use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce,
    UnboundKey,
};
use rustls::ConnectionTrafficSecrets;

/// Length of a record header.
pub const HEADER_LEN: usize = 5;
/// Largest plaintext of one record.
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest ciphertext of one TLS 1.3 record (plaintext, content type, padding and tag).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Length of the AEAD tag of every supported suite.
const TAG_LEN: usize = 16;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
/// Alert level "warning"; a close_notify is sent with it.
const WARNING: u8 = 1;
/// `legacy_record_version` of TLS 1.3 records.
const LEGACY_VERSION: [u8; 2] = [3, 3];

/// Why a record could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record does not decrypt with the traffic key (tampered, or out of sequence).
    #[error("TLS record failed authentication (bad_record_mac)")]
    BadRecordMac,
    /// The record is longer than TLS 1.3 allows.
    #[error("TLS record of {0} bytes exceeds the maximum")]
    Overflow(usize),
    /// The outer content type is not application_data.
    #[error("unexpected TLS record type {0} after the handshake")]
    UnexpectedType(u8),
    /// The inner content type is missing or not one TLS 1.3 allows here.
    #[error("unexpected TLS content type {0} after the handshake")]
    UnexpectedContent(u8),
    /// The peer sent a fatal alert.
    #[error("the peer sent TLS alert {0}")]
    Alert(u8),
    /// The peer asked for new traffic keys, which this record layer cannot derive.
    #[error("the peer sent a TLS 1.3 KeyUpdate, which this server does not support: closing")]
    KeyUpdate,
    /// A handshake message other than KeyUpdate after the handshake, or a malformed one.
    #[error("unexpected TLS handshake message {0} after the handshake")]
    UnexpectedHandshake(u8),
    /// The stream ended inside a record.
    #[error("the peer closed the connection inside a TLS record")]
    Truncated,
    /// The sequence number would exceed the suite's limit; the connection must be closed.
    #[error("TLS key usage limit reached")]
    KeyExhausted,
    /// rustls handed over keys of a suite this record layer does not implement.
    #[error("unsupported TLS traffic keys")]
    UnsupportedSuite,
}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> Self {
        let kind = match e {
            RecordError::Truncated => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// One direction's traffic key, its IV and the next record's sequence number.
pub struct DirectionKey {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
    /// Records this key may protect at most.
    limit: u64,
}

impl std::fmt::Debug for DirectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectionKey")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// What one opened record carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data: the plaintext is `record[HEADER_LEN..HEADER_LEN + len]`.
    Data(usize),
    /// The peer's close_notify: no more data follows.
    CloseNotify,
    /// A record without application data for the caller (an empty one, or user_canceled).
    Nothing,
}

impl DirectionKey {
    /// A key from rustls's extracted secrets, starting at sequence number `seq`, good for at most
    /// `limit` records.
    pub fn new(
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
        limit: u64,
    ) -> Result<Self, RecordError> {
        let (algorithm, key, iv): (&'static Algorithm, &[u8], &[u8]) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (&AES_128_GCM, key.as_ref(), iv.as_ref())
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (&AES_256_GCM, key.as_ref(), iv.as_ref())
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&CHACHA20_POLY1305, key.as_ref(), iv.as_ref())
            }
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let key = UnboundKey::new(algorithm, key).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv.try_into().map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
            limit,
        })
    }

    /// The nonce of the next record, and the sequence number advanced past it.
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        if self.seq >= self.limit {
            return Err(RecordError::KeyExhausted);
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Appends one record carrying `plaintext` (at most [`MAX_PLAINTEXT`] bytes) of the inner
    /// content type `content` to `out`.
    fn seal(
        &mut self,
        content: u8,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
        let nonce = self.next_nonce()?;
        let len = plaintext.len() + 1 + TAG_LEN;
        let header = record_header(len);
        let start = out.len();
        out.reserve(HEADER_LEN + len);
        out.extend_from_slice(&header);
        out.extend_from_slice(plaintext);
        out.push(content);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER_LEN..])
            .map_err(|_| RecordError::KeyExhausted)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Appends records carrying `data` to `out`; returns how many bytes of `data` were taken
    /// (at most one record's worth).
    pub fn seal_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, RecordError> {
        let n = data.len().min(MAX_PLAINTEXT);
        self.seal(APPLICATION_DATA, &data[..n], out)?;
        Ok(n)
    }

    /// Appends a close_notify alert to `out`.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal(ALERT, &[WARNING, CLOSE_NOTIFY], out)
    }

    /// Opens the complete record `record` (header included, as [`record_len`] measured it) in
    /// place.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, RecordError> {
        let (header, body) = record.split_at_mut(HEADER_LEN);
        if header[0] != APPLICATION_DATA {
            return Err(RecordError::UnexpectedType(header[0]));
        }
        let nonce = self.next_nonce()?;
        let header: [u8; HEADER_LEN] = [header[0], header[1], header[2], header[3], header[4]];
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| RecordError::BadRecordMac)?;
        // The inner content type is the last non-zero byte; zeros after it are padding.
        let Some(end) = plaintext.iter().rposition(|b| *b != 0) else {
            return Err(RecordError::UnexpectedContent(0));
        };
        if end > MAX_PLAINTEXT {
            return Err(RecordError::Overflow(end));
        }
        let content = &plaintext[..end];
        match plaintext[end] {
            APPLICATION_DATA if content.is_empty() => Ok(Opened::Nothing),
            APPLICATION_DATA => Ok(Opened::Data(end)),
            ALERT => match content {
                [_, CLOSE_NOTIFY] => Ok(Opened::CloseNotify),
                [_, USER_CANCELED] => Ok(Opened::Nothing),
                [_, description] => Err(RecordError::Alert(*description)),
                _ => Err(RecordError::UnexpectedContent(ALERT)),
            },
            HANDSHAKE => match content.first() {
                Some(&KEY_UPDATE) => Err(RecordError::KeyUpdate),
                other => Err(RecordError::UnexpectedHandshake(
                    other.copied().unwrap_or(0),
                )),
            },
            other => Err(RecordError::UnexpectedContent(other)),
        }
    }
}

fn record_header(len: usize) -> [u8; HEADER_LEN] {
    let [hi, lo] = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    [
        APPLICATION_DATA,
        LEGACY_VERSION[0],
        LEGACY_VERSION[1],
        hi,
        lo,
    ]
}

/// The length of the record at the start of `bytes` (header included) once its header is there;
/// an error if the header announces more than `max_body` bytes.
pub fn record_len(bytes: &[u8], max_body: usize) -> Result<Option<usize>, RecordError> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if body > max_body {
        return Err(RecordError::Overflow(body));
    }
    Ok(Some(HEADER_LEN + body))
}

#[cfg(test)]
mod tests {
    use rustls::crypto::cipher::{AeadKey, Iv};

    use super::*;

    fn keys() -> Result<(DirectionKey, DirectionKey), RecordError> {
        let secrets = || ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([7u8; 32]),
            iv: Iv::new([9u8; NONCE_LEN]),
        };
        Ok((
            DirectionKey::new(3, &secrets(), u64::MAX)?,
            DirectionKey::new(3, &secrets(), u64::MAX)?,
        ))
    }

    #[test]
    fn sealed_records_open_in_sequence() -> Result<(), RecordError> {
        let (mut tx, mut rx) = keys()?;
        let mut wire = Vec::new();
        assert_eq!(tx.seal_data(b"hello", &mut wire)?, 5);
        tx.seal_close_notify(&mut wire)?;
        let first = record_len(&wire, MAX_CIPHERTEXT)?.ok_or(RecordError::Truncated)?;
        let (one, two) = wire.split_at_mut(first);
        assert_eq!(rx.open(one)?, Opened::Data(5));
        assert_eq!(&one[HEADER_LEN..HEADER_LEN + 5], b"hello");
        assert_eq!(rx.open(two)?, Opened::CloseNotify);
        Ok(())
    }

    #[test]
    fn a_flipped_bit_or_a_replay_is_bad_record_mac() -> Result<(), RecordError> {
        let (mut tx, mut rx) = keys()?;
        let mut wire = Vec::new();
        tx.seal_data(b"hello", &mut wire)?;
        let mut tampered = wire.clone();
        tampered[HEADER_LEN + 1] ^= 1;
        assert!(matches!(
            rx.open(&mut tampered),
            Err(RecordError::BadRecordMac)
        ));
        // The failed record used up its sequence number: the genuine one no longer opens.
        assert!(matches!(rx.open(&mut wire), Err(RecordError::BadRecordMac)));
        Ok(())
    }

    #[test]
    fn oversized_headers_are_refused_before_buffering() {
        assert!(matches!(record_len(&[23, 3, 3], MAX_CIPHERTEXT), Ok(None)));
        assert!(matches!(
            record_len(&[23, 3, 3, 0x41, 0x01], MAX_CIPHERTEXT),
            Err(RecordError::Overflow(0x4101))
        ));
    }

    #[test]
    fn plaintext_records_and_key_updates_are_refused() -> Result<(), RecordError> {
        let (mut tx, mut rx) = keys()?;
        let mut plain_alert = vec![21, 3, 3, 0, 2, 2, 40];
        assert!(matches!(
            rx.open(&mut plain_alert),
            Err(RecordError::UnexpectedType(21))
        ));
        let (mut tx2, mut rx2) = keys()?;
        let mut wire = Vec::new();
        tx2.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], &mut wire)?;
        assert!(matches!(rx2.open(&mut wire), Err(RecordError::KeyUpdate)));
        let mut wire = Vec::new();
        tx.seal(ALERT, &[2, 40], &mut wire)?;
        // The plaintext record above did not consume a sequence number.
        assert!(matches!(rx.open(&mut wire), Err(RecordError::Alert(40))));
        Ok(())
    }
}
