//! Just enough of the DTLS 1.2 record layer (RFC 6347 §4.1, §4.2.2) to route datagrams before
//! the DTLS library sees them: is this a ClientHello (worth a new peer), and which PSK identity
//! does a ClientKeyExchange carry (RFC 4279 §2), so the key can be looked up asynchronously
//! before the library's synchronous PSK callback asks for it. Pure functions over bytes.

/// Record content type `handshake`.
const HANDSHAKE: u8 = 22;
/// Handshake message types.
const CLIENT_HELLO: u8 = 1;
const CLIENT_KEY_EXCHANGE: u8 = 16;
/// Record header: type, version (2), epoch (2), sequence number (6), length (2).
const RECORD_HEADER: usize = 13;
/// Handshake header: type, length (3), message_seq (2), fragment_offset (3), fragment_length (3).
const HANDSHAKE_HEADER: usize = 12;

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *bytes.get(at)?,
        *bytes.get(at + 1)?,
    ])))
}

fn u24_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 3)?;
    Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
}

/// The unencrypted (epoch 0) handshake messages of a datagram: `(type, whole message body)`;
/// fragments of a larger message are skipped.
fn handshakes(datagram: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        loop {
            let header = datagram.get(offset..offset + RECORD_HEADER)?;
            let length = u16_at(header, 11)?;
            let body = datagram.get(offset + RECORD_HEADER..offset + RECORD_HEADER + length)?;
            offset += RECORD_HEADER + length;
            let epoch = u16_at(header, 3)?;
            if header[0] != HANDSHAKE || epoch != 0 || body.len() < HANDSHAKE_HEADER {
                continue;
            }
            let (kind, message_length) = (body[0], u24_at(body, 1)?);
            let (fragment_offset, fragment_length) = (u24_at(body, 6)?, u24_at(body, 9)?);
            if fragment_offset != 0 || fragment_length != message_length {
                continue;
            }
            if let Some(message) = body.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + message_length) {
                return Some((kind, message));
            }
        }
    })
}

/// Whether the datagram starts a handshake: a ClientHello in epoch 0.
pub(crate) fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.first() == Some(&HANDSHAKE) && handshakes(datagram).any(|(k, _)| k == CLIENT_HELLO)
}

/// The cipher suites a ClientHello in the datagram offers (RFC 5246 §7.4.1.2, with DTLS's
/// cookie after the session id).
pub(crate) fn client_hello_suites(datagram: &[u8]) -> Option<Vec<u16>> {
    let (_, hello) = handshakes(datagram).find(|(k, _)| *k == CLIENT_HELLO)?;
    // version (2), random (32), then session id, cookie (each with a one-byte length).
    let session_id = 34;
    let cookie = session_id + 1 + usize::from(*hello.get(session_id)?);
    let suites = cookie + 1 + usize::from(*hello.get(cookie)?);
    let length = u16_at(hello, suites)?;
    let list = hello.get(suites + 2..suites + 2 + length)?;
    Some(
        list.chunks_exact(2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
            .collect(),
    )
}

/// The client random of a ClientHello in the datagram (the same in the ClientHello that answers
/// a HelloVerifyRequest and in retransmissions; new for a new handshake).
pub(crate) fn client_hello_random(datagram: &[u8]) -> Option<&[u8]> {
    let (_, hello) = handshakes(datagram).find(|(k, _)| *k == CLIENT_HELLO)?;
    hello.get(2..34)
}

/// The PSK identity of a ClientKeyExchange in the datagram, if it carries one.
pub(crate) fn psk_identity(datagram: &[u8]) -> Option<&[u8]> {
    let (_, message) = handshakes(datagram).find(|(k, _)| *k == CLIENT_KEY_EXCHANGE)?;
    let length = u16_at(message, 0)?;
    message.get(2..2 + length).filter(|id| !id.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One epoch-0 handshake record holding a whole message of `kind`.
    pub(crate) fn record(kind: u8, message: &[u8]) -> Vec<u8> {
        let len = message.len();
        let mut body = vec![kind, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&[(len >> 8) as u8, len as u8]);
        body.extend_from_slice(message);
        let mut r = vec![HANDSHAKE, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(&body);
        r
    }

    #[test]
    fn finds_the_identity_among_the_records_of_a_flight() {
        let identity = b"sensor@tenant";
        let mut cke = vec![0, identity.len() as u8];
        cke.extend_from_slice(identity);
        // ClientKeyExchange, then ChangeCipherSpec and an encrypted Finished (epoch 1).
        let mut flight = record(CLIENT_KEY_EXCHANGE, &cke);
        flight.extend_from_slice(&[20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 1]);
        flight.extend_from_slice(&[22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 9, 9, 9]);
        assert_eq!(psk_identity(&flight), Some(&identity[..]));
        assert!(!is_client_hello(&flight));
        assert!(is_client_hello(&record(CLIENT_HELLO, &[0xfe, 0xfd])));
    }

    /// A ClientHello body offering `suites`, with a session id and a cookie.
    pub(crate) fn client_hello(suites: &[u16]) -> Vec<u8> {
        let mut hello = vec![0xfe, 0xfd];
        hello.extend_from_slice(&[7; 32]);
        hello.extend_from_slice(&[2, 0xaa, 0xbb]); // session id
        hello.extend_from_slice(&[3, 1, 2, 3]); // cookie
        hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for s in suites {
            hello.extend_from_slice(&s.to_be_bytes());
        }
        hello.extend_from_slice(&[1, 0]); // compression methods
        record(CLIENT_HELLO, &hello)
    }

    #[test]
    fn reads_the_offered_cipher_suites() {
        let datagram = client_hello(&[0xc0a8, 0xc02b]);
        assert_eq!(client_hello_suites(&datagram), Some(vec![0xc0a8, 0xc02b]));
        assert_eq!(client_hello_random(&datagram), Some(&[7u8; 32][..]));
        assert!(is_client_hello(&datagram));
        let mut truncated = datagram.clone();
        truncated.truncate(60);
        assert_eq!(client_hello_suites(&truncated), None);
        assert_eq!(client_hello_suites(&record(CLIENT_HELLO, &[0xfe])), None);
    }

    #[test]
    fn junk_and_truncated_records_yield_nothing() {
        let mut cke = record(CLIENT_KEY_EXCHANGE, &[0, 5, b'a']);
        assert_eq!(psk_identity(&cke), None);
        cke.truncate(20);
        assert_eq!(psk_identity(&cke), None);
        for junk in [&[][..], &[22], &[22; 40], &[0x40, 1, 0, 0], &[0xff; 100]] {
            assert_eq!(psk_identity(junk), None);
            assert!(!is_client_hello(junk));
        }
        // An identity in an encrypted epoch is not read.
        let mut encrypted = record(CLIENT_KEY_EXCHANGE, &[0, 1, b'x']);
        encrypted[4] = 1;
        assert_eq!(psk_identity(&encrypted), None);
    }

    #[test]
    fn random_datagrams_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = record(CLIENT_KEY_EXCHANGE, &[0, 3, b'a', b'@', b't']);
        for i in 0..20_000 {
            let mut datagram: Vec<u8> = if i % 2 == 0 {
                valid.clone()
            } else {
                (0..next() % 80).map(|_| next() as u8).collect()
            };
            if !datagram.is_empty() {
                let at = (next() as usize) % datagram.len();
                datagram[at] = next() as u8;
            }
            let _ = is_client_hello(&datagram);
            let _ = client_hello_suites(&datagram);
            if let Some(identity) = psk_identity(&datagram) {
                assert!(identity.len() <= datagram.len());
            }
        }
    }
}
