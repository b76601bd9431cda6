//! The message layer driven with bytes and explicit instants.

use super::*;
use coap_lite::RequestType;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PEER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    40000,
);
const OTHER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)),
    40000,
);

fn request(kind: MessageType, message_id: u16, token: &[u8]) -> Result<Vec<u8>, String> {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = message_id;
    p.set_token(token.to_vec());
    p.add_option(coap_lite::CoapOption::UriPath, b"t".to_vec());
    p.payload = b"22.5".to_vec();
    p.to_bytes().map_err(|e| format!("{e:?}"))
}

fn changed() -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(ResponseType::Changed);
    p
}

fn decode(t: &Transmit) -> Result<Packet, String> {
    Packet::from_bytes(&t.datagram).map_err(|e| format!("{e:?}"))
}

fn drain(ex: &mut Exchanges) -> Vec<Transmit> {
    std::iter::from_fn(|| ex.poll_transmit()).collect()
}

fn layer() -> Exchanges {
    Exchanges::new(ExchangeConfig::default(), 1000)
}

#[test]
fn a_quick_con_response_is_piggybacked_on_the_ack() -> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let incoming = ex
        .handle(t0, PEER, &request(MessageType::Confirmable, 7, b"tok")?)
        .ok_or("request not handed up")?;
    assert!(incoming.confirmable);
    assert_eq!(incoming.packet.payload, b"22.5");
    assert!(drain(&mut ex).is_empty());
    ex.respond(t0 + Duration::from_millis(100), incoming.id, changed());
    let sent = drain(&mut ex);
    assert_eq!(sent.len(), 1);
    let ack = decode(&sent[0])?;
    assert_eq!(sent[0].peer, PEER);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 7);
    assert_eq!(ack.get_token(), b"tok");
    assert_eq!(
        ack.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    assert!(ex.is_idle());
    Ok(())
}

#[test]
fn a_retransmitted_con_is_answered_from_the_stored_response_and_not_handed_up_again() -> TestResult
{
    let (mut ex, t0) = (layer(), Instant::now());
    let datagram = request(MessageType::Confirmable, 8, b"a")?;
    let incoming = ex.handle(t0, PEER, &datagram).ok_or("not handed up")?;
    ex.respond(t0, incoming.id, changed());
    let first = drain(&mut ex);
    assert!(
        ex.handle(t0 + Duration::from_secs(2), PEER, &datagram)
            .is_none()
    );
    let second = drain(&mut ex);
    assert_eq!(first, second);
    // The same message id from another peer is another exchange.
    assert!(ex.handle(t0, OTHER, &datagram).is_some());
    Ok(())
}

#[test]
fn message_ids_are_forgotten_after_the_exchange_lifetime() -> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let datagram = request(MessageType::Confirmable, 9, b"")?;
    let incoming = ex.handle(t0, PEER, &datagram).ok_or("not handed up")?;
    ex.respond(t0, incoming.id, changed());
    drain(&mut ex);
    assert_eq!(ex.poll_timeout(), Some(t0 + Duration::from_secs(247)));
    let later = t0 + Duration::from_secs(246);
    assert!(ex.handle(later, PEER, &datagram).is_none());
    let expired = t0 + Duration::from_secs(248);
    assert!(ex.handle(expired, PEER, &datagram).is_some());
    Ok(())
}

#[test]
fn a_slow_con_gets_an_empty_ack_then_a_separate_con_response_retransmitted_until_acked()
-> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let incoming = ex
        .handle(t0, PEER, &request(MessageType::Confirmable, 10, b"xy")?)
        .ok_or("not handed up")?;
    let ack_at = t0 + Duration::from_millis(500);
    assert_eq!(ex.poll_timeout(), Some(ack_at));
    ex.handle_timeout(ack_at - Duration::from_millis(1));
    assert!(drain(&mut ex).is_empty());
    ex.handle_timeout(ack_at);
    let sent = drain(&mut ex);
    assert_eq!(sent.len(), 1);
    let ack = decode(&sent[0])?;
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.code, MessageClass::Empty);
    assert_eq!(ack.header.message_id, 10);
    assert!(ack.get_token().is_empty());

    let t1 = t0 + Duration::from_secs(1);
    ex.respond(t1, incoming.id, changed());
    let sent = drain(&mut ex);
    assert_eq!(sent.len(), 1);
    let response = decode(&sent[0])?;
    assert_eq!(response.header.get_type(), MessageType::Confirmable);
    assert_eq!(response.header.message_id, 1000);
    assert_eq!(response.get_token(), b"xy");
    assert_eq!(ex.unacknowledged(), 1);

    // Retransmitted after 2, 4, 8, 16 s; given up 32 s after the last.
    let mut at = t1;
    for timeout in [2, 4, 8, 16] {
        at += Duration::from_secs(timeout);
        assert_eq!(ex.poll_timeout(), Some(at));
        ex.handle_timeout(at);
        assert_eq!(drain(&mut ex), sent, "retransmission after {timeout} s");
    }
    at += Duration::from_secs(32);
    ex.handle_timeout(at);
    assert!(drain(&mut ex).is_empty());
    assert_eq!(ex.unacknowledged(), 0);
    assert_eq!(ex.gave_up(), 1);
    Ok(())
}

#[test]
fn the_clients_ack_stops_the_retransmissions() -> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let incoming = ex
        .handle(t0, PEER, &request(MessageType::Confirmable, 11, b"")?)
        .ok_or("not handed up")?;
    ex.handle_timeout(t0 + Duration::from_secs(1));
    drain(&mut ex);
    ex.respond(t0 + Duration::from_secs(1), incoming.id, changed());
    let response = decode(&drain(&mut ex)[0])?;
    // An ACK from another peer with the same id settles nothing.
    let ack = empty(MessageType::Acknowledgement, response.header.message_id).ok_or("ack")?;
    assert!(ex.handle(t0, OTHER, &ack).is_none());
    assert_eq!(ex.unacknowledged(), 1);
    assert!(ex.handle(t0, PEER, &ack).is_none());
    assert_eq!(ex.unacknowledged(), 0);
    ex.handle_timeout(t0 + Duration::from_secs(10));
    assert!(drain(&mut ex).is_empty());
    Ok(())
}

#[test]
fn a_duplicate_while_processing_is_acknowledged_empty_and_handed_up_once() -> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let datagram = request(MessageType::Confirmable, 12, b"d")?;
    let incoming = ex.handle(t0, PEER, &datagram).ok_or("not handed up")?;
    assert!(
        ex.handle(t0 + Duration::from_millis(100), PEER, &datagram)
            .is_none()
    );
    let sent = drain(&mut ex);
    assert_eq!(sent.len(), 1);
    let ack = decode(&sent[0])?;
    assert_eq!(ack.header.code, MessageClass::Empty);
    assert_eq!(ack.header.message_id, 12);
    // No second empty ACK at timeout_to_ack; the response comes separately.
    ex.handle_timeout(t0 + Duration::from_secs(1));
    assert!(drain(&mut ex).is_empty());
    ex.respond(t0 + Duration::from_secs(1), incoming.id, changed());
    let response = decode(&drain(&mut ex)[0])?;
    assert_eq!(response.header.get_type(), MessageType::Confirmable);
    Ok(())
}

#[test]
fn non_requests_get_non_responses_and_duplicates_are_ignored() -> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let datagram = request(MessageType::NonConfirmable, 13, b"n")?;
    let incoming = ex.handle(t0, PEER, &datagram).ok_or("not handed up")?;
    assert!(!incoming.confirmable);
    // No empty ACK for a NON, however long it takes.
    assert_eq!(ex.poll_timeout(), Some(t0 + Duration::from_secs(247)));
    ex.respond(t0 + Duration::from_secs(3), incoming.id, changed());
    let response = decode(&drain(&mut ex)[0])?;
    assert_eq!(response.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(response.get_token(), b"n");
    assert!(ex.handle(t0, PEER, &datagram).is_none());
    assert!(drain(&mut ex).is_empty());
    assert!(ex.is_idle());
    Ok(())
}

#[test]
fn pings_are_reset_and_garbage_never_panics() -> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let ping = empty(MessageType::Confirmable, 77).ok_or("ping")?;
    assert!(ex.handle(t0, PEER, &ping).is_none());
    let rst = decode(&drain(&mut ex)[0])?;
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.message_id, 77);

    for junk in [
        &[][..],
        &[0x40],
        &[0xff; 3],
        &[0x4f, 0x01, 0, 1],
        &[0x22, 0x01, 0, 1, 0xff],
    ] {
        assert!(ex.handle(t0, PEER, junk).is_none());
        assert!(drain(&mut ex).is_empty(), "{junk:?}");
    }
    // A CON request with a readable header but broken options: 4.00 with its token.
    let broken = [0x41, 0x02, 0x12, 0x34, 0xaa, 0xdf];
    assert!(ex.handle(t0, PEER, &broken).is_none());
    let answer = decode(&drain(&mut ex)[0])?;
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::BadRequest)
    );
    assert_eq!(answer.header.message_id, 0x1234);
    assert_eq!(answer.get_token(), [0xaa]);
    Ok(())
}

#[test]
fn the_oldest_ids_are_forgotten_when_the_table_is_full() -> TestResult {
    let config = ExchangeConfig {
        max_exchanges: 2,
        ..ExchangeConfig::default()
    };
    let (mut ex, t0) = (Exchanges::new(config, 0), Instant::now());
    for id in [1, 2, 3] {
        let incoming = ex
            .handle(t0, PEER, &request(MessageType::NonConfirmable, id, b"")?)
            .ok_or("not handed up")?;
        ex.respond(t0, incoming.id, changed());
    }
    drain(&mut ex);
    // 1 was forgotten, so its copy counts as new; 3 is still remembered.
    assert!(
        ex.handle(t0, PEER, &request(MessageType::NonConfirmable, 3, b"")?)
            .is_none()
    );
    assert!(
        ex.handle(t0, PEER, &request(MessageType::NonConfirmable, 1, b"")?)
            .is_some()
    );
    Ok(())
}

/// A small deterministic generator (xorshift), so the smoke test below is reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_and_mutated_datagrams_never_panic_and_answers_always_parse() -> TestResult {
    let (mut ex, t0) = (layer(), Instant::now());
    let valid = request(MessageType::Confirmable, 500, b"tok")?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut handed_up = 0;
    for i in 0..20_000u32 {
        let mut datagram = if i % 2 == 0 {
            valid.clone()
        } else {
            let len = (xorshift(&mut state) % 64) as usize;
            (0..len).map(|_| xorshift(&mut state) as u8).collect()
        };
        // Flip a few bytes.
        for _ in 0..(xorshift(&mut state) % 4) {
            if !datagram.is_empty() {
                let at = (xorshift(&mut state) as usize) % datagram.len();
                datagram[at] = xorshift(&mut state) as u8;
            }
        }
        let now = t0 + Duration::from_millis(u64::from(i));
        if let Some(incoming) = ex.handle(now, PEER, &datagram) {
            handed_up += 1;
            ex.respond(now, incoming.id, changed());
        }
        ex.handle_timeout(now);
        for t in drain(&mut ex) {
            decode(&t)?;
        }
    }
    assert!(handed_up > 0);
    Ok(())
}
