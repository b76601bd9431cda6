//! The record layer against webrtc-dtls's own cipher suites as the client.

use webrtc_dtls::cipher_suite::{CipherSuite, CipherSuiteId, cipher_suite_for_id};
use webrtc_dtls::content::ContentType;
use webrtc_dtls::record_layer::record_layer_header::{ProtocolVersion, RecordLayerHeader};

use super::*;
use crate::handshake::{CERTIFICATE_SUITES, PSK_SUITES};
use crate::keys::expand;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MASTER: [u8; 48] = [0x42; 48];
const CLIENT_RANDOM: [u8; 32] = [0x11; 32];
const SERVER_RANDOM: [u8; 32] = [0x22; 32];

/// The suites the port offers, each with webrtc-dtls's client side and our server side.
pub(crate) fn pairs() -> Vec<(
    CipherSuiteId,
    Box<dyn CipherSuite + Send + Sync>,
    RecordLayer,
)> {
    PSK_SUITES
        .into_iter()
        .chain(CERTIFICATE_SUITES)
        .filter_map(|id| {
            let mut client = cipher_suite_for_id(id).ok()?;
            client
                .init(&MASTER, &CLIENT_RANDOM, &SERVER_RANDOM, true)
                .ok()?;
            let aead = crate::keys::Aead::of_suite(id as u16)?;
            let server = RecordLayer::new(expand(aead, &MASTER, &CLIENT_RANDOM, &SERVER_RANDOM), 1);
            Some((id, client, server))
        })
        .collect()
}

/// A record the client protects with webrtc-dtls.
pub(crate) fn client_record(
    client: &(dyn CipherSuite + Send + Sync),
    content_type: ContentType,
    sequence: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, webrtc_dtls::Error> {
    let header = RecordLayerHeader {
        content_type,
        protocol_version: ProtocolVersion {
            major: 0xfe,
            minor: 0xfd,
        },
        epoch: 1,
        sequence_number: sequence,
        content_len: plaintext.len() as u16,
    };
    let mut raw = Vec::new();
    header.marshal(&mut raw)?;
    raw.extend_from_slice(plaintext);
    client.encrypt(&header, &raw)
}

fn open_one(server: &mut RecordLayer, datagram: &[u8]) -> Result<Vec<u8>, Discard> {
    let mut copy = datagram.to_vec();
    let record = records(&mut copy).next().ok_or(Discard::TooShort)?;
    server.open(record).map(<[u8]>::to_vec)
}

#[test]
fn every_offered_suite_round_trips_with_webrtc_dtls() -> TestResult {
    let pairs = pairs();
    assert_eq!(
        pairs.len(),
        PSK_SUITES.len() + CERTIFICATE_SUITES.len(),
        "a suite the port offers has no implementation"
    );
    for (id, client, mut server) in pairs {
        let sent = client_record(client.as_ref(), ContentType::ApplicationData, 1, b"request")?;
        assert_eq!(
            open_one(&mut server, &sent),
            Ok(b"request".to_vec()),
            "{id}"
        );
        let sealed = server.seal(APPLICATION_DATA, b"response")?;
        let opened = client.decrypt(&sealed)?;
        assert_eq!(opened.get(HEADER..), Some(&b"response"[..]), "{id}");
        assert_eq!(sealed[..3], [APPLICATION_DATA, 0xfe, 0xfd]);
        // Epoch 1, sequence 1 (the Finished had 0), then 2.
        assert_eq!(sealed[3..11], [0, 1, 0, 0, 0, 0, 0, 1]);
        let next = server.seal(ALERT, &[1, 0])?;
        assert_eq!(next[3..11], [0, 1, 0, 0, 0, 0, 0, 2]);
        assert_eq!(client.decrypt(&next)?.get(HEADER..), Some(&[1u8, 0][..]));
    }
    Ok(())
}

#[test]
fn replays_and_records_behind_the_window_are_refused() -> TestResult {
    let (_, client, mut server) = pairs().remove(0);
    let record = |seq| client_record(client.as_ref(), ContentType::ApplicationData, seq, b"x");
    let first = record(10)?;
    assert!(open_one(&mut server, &first).is_ok());
    assert_eq!(open_one(&mut server, &first), Err(Discard::Replayed));
    // Out of order inside the window: accepted once.
    let late = record(4)?;
    assert!(open_one(&mut server, &late).is_ok());
    assert_eq!(open_one(&mut server, &late), Err(Discard::Replayed));
    // Far ahead moves the window; what is now behind it is refused even if never seen.
    assert!(open_one(&mut server, &record(200)?).is_ok());
    assert_eq!(open_one(&mut server, &record(100)?), Err(Discard::Replayed));
    assert!(open_one(&mut server, &record(137)?).is_ok());
    assert!(open_one(&mut server, &record(199)?).is_ok());
    Ok(())
}

#[test]
fn a_bad_tag_is_refused_and_does_not_move_the_window() -> TestResult {
    for (id, client, mut server) in pairs() {
        let good = client_record(client.as_ref(), ContentType::ApplicationData, 7, b"payload")?;
        for at in [
            HEADER + 2,
            HEADER + EXPLICIT_NONCE + 1,
            good.len() - 1,
            0,
            4,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(open_one(&mut server, &bad).is_err(), "{id}: byte {at}");
        }
        assert_eq!(
            open_one(&mut server, &good),
            Ok(b"payload".to_vec()),
            "{id}"
        );
    }
    Ok(())
}

#[test]
fn datagrams_split_into_records_and_truncation_ends_them() -> TestResult {
    let (_, client, mut server) = pairs().remove(0);
    let mut datagram = client_record(client.as_ref(), ContentType::ApplicationData, 1, b"one")?;
    datagram.extend(client_record(
        client.as_ref(),
        ContentType::Alert,
        2,
        &[1, 0],
    )?);
    let mut copy = datagram.clone();
    let opened: Vec<(u8, Result<Vec<u8>, Discard>)> = records(&mut copy)
        .map(|r| (r.content_type, server.open(r).map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(
        opened,
        vec![
            (APPLICATION_DATA, Ok(b"one".to_vec())),
            (ALERT, Ok(vec![1, 0]))
        ]
    );
    // A truncated second record is not yielded at all.
    let mut truncated = datagram[..datagram.len() - 3].to_vec();
    assert_eq!(records(&mut truncated).count(), 1);
    // Records of another epoch or version, and records too short for nonce and tag.
    let mut epoch0 = datagram.clone();
    epoch0[4] = 0;
    assert_eq!(open_one(&mut server, &epoch0), Err(Discard::Epoch));
    let mut short = vec![APPLICATION_DATA, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 4];
    short.extend_from_slice(&[0; 4]);
    assert_eq!(open_one(&mut server, &short), Err(Discard::TooShort));
    for junk in [&[][..], &[23], &[23, 0xfe, 0xfd, 0, 1], &[0xff; 40]] {
        let mut junk = junk.to_vec();
        for record in records(&mut junk) {
            assert!(server.open(record).is_err());
        }
    }
    Ok(())
}

#[test]
fn random_datagrams_never_panic_and_never_open() {
    let (_, _, mut server) = pairs().remove(0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut datagram: Vec<u8> = (0..next() % 120).map(|_| next() as u8).collect();
        if datagram.len() > 4 && next() % 2 == 0 {
            datagram[0] = APPLICATION_DATA;
            datagram[1..5].copy_from_slice(&[0xfe, 0xfd, 0, 1]);
        }
        for record in records(&mut datagram) {
            assert!(server.open(record).is_err());
        }
    }
}

#[test]
fn the_last_sequence_number_is_used_once() {
    let (_, _, server) = pairs().remove(0);
    let mut server = RecordLayer {
        next_sequence: MAX_SEQUENCE,
        ..server
    };
    assert!(server.seal(APPLICATION_DATA, b"last").is_ok());
    assert_eq!(
        server.seal(APPLICATION_DATA, b"one too many"),
        Err(SealError::Exhausted)
    );
}
