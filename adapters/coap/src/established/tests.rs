//! An established session driven with records that webrtc-dtls's cipher suites protect, and
//! explicit instants.

use coap_lite::{CoapOption, MessageClass, MessageType, RequestType, ResponseType};
use ferry_registry_client::{DeviceId, TenantId};
use webrtc_dtls::cipher_suite::CipherSuite;
use webrtc_dtls::content::ContentType;

use super::*;
use crate::protection::tests::{client_record, pairs};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Client = Box<dyn CipherSuite + Send + Sync>;

const PEER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    40000,
);
const FINAL_FLIGHT: &[u8] = b"ccs and finished";

fn config() -> SessionConfig {
    SessionConfig {
        exchange: ExchangeConfig::default(),
        idle_timeout: Duration::from_secs(600),
        max_in_flight: 16,
    }
}

fn new_session(now: Instant) -> Result<(Client, Established), Box<dyn std::error::Error>> {
    let (_, client, records) = pairs().into_iter().next().ok_or("no suite")?;
    let device = AuthenticatedDevice {
        tenant_id: TenantId::parse("t")?,
        device_id: DeviceId::parse("d")?,
        auth_id: "a".to_owned(),
    };
    let session = Established::new(
        1,
        0,
        Arc::new(device),
        records,
        Some(FINAL_FLIGHT.into()),
        now,
    );
    Ok((client, session))
}

fn con(message_id: u16) -> Result<Vec<u8>, String> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = message_id;
    p.set_token(vec![7]);
    p.add_option(CoapOption::UriPath, b"t".to_vec());
    p.payload = b"22.5".to_vec();
    p.to_bytes().map_err(|e| format!("{e:?}"))
}

/// Feeds one datagram; returns the requests it carried.
fn receive(session: &mut Established, now: Instant, mut datagram: Vec<u8>) -> Vec<Incoming> {
    let mut requests = Vec::new();
    session.receive(&config(), now, PEER, &mut datagram, |r| requests.push(r));
    requests
}

fn sent(session: &mut Established) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| session.poll_transmit()).collect()
}

/// The CoAP messages the client reads from the server's records.
fn read(client: &Client, datagrams: &[Vec<u8>]) -> Result<Vec<Packet>, Box<dyn std::error::Error>> {
    datagrams
        .iter()
        .map(|d| {
            let plain = client.decrypt(d)?;
            Packet::from_bytes(plain.get(13..).unwrap_or_default())
                .map_err(|e| format!("{e:?}").into())
        })
        .collect()
}

fn changed() -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(ResponseType::Changed);
    p
}

#[test]
fn a_request_is_answered_and_the_idle_session_keeps_working_after_compaction() -> TestResult {
    let start = Instant::now();
    let (client, mut session) = new_session(start)?;
    let datagram = client_record(client.as_ref(), ContentType::ApplicationData, 1, &con(100)?)?;
    let requests = receive(&mut session, start, datagram);
    assert_eq!(requests.len(), 1);
    assert!(session.holds_exchanges());
    session.respond(start, requests[0].id, changed());
    let answers = read(&client, &sent(&mut session))?;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].header.get_type(), MessageType::Acknowledgement);
    assert_eq!(answers[0].header.message_id, 100);
    assert_eq!(
        answers[0].header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    // The message id is remembered for the exchange lifetime, then nothing is left.
    let due = session.poll_timeout(&config()).ok_or("no timeout")?;
    assert_eq!(due, start + ExchangeConfig::default().exchange_lifetime);
    session.handle_timeout(&config(), due);
    assert!(sent(&mut session).is_empty());
    assert!(
        !session.holds_exchanges(),
        "the idle session kept its message layer"
    );
    assert_eq!(session.ending(), None);
    assert_eq!(
        session.poll_timeout(&config()),
        Some(start + config().idle_timeout)
    );
    // Still serving: a new request after compaction.
    let datagram = client_record(client.as_ref(), ContentType::ApplicationData, 2, &con(101)?)?;
    let requests = receive(&mut session, due, datagram);
    assert_eq!(requests.len(), 1);
    session.respond(due, requests[0].id, changed());
    let answers = read(&client, &sent(&mut session))?;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].header.message_id, 101);
    Ok(())
}

#[test]
fn a_retransmitted_finished_gets_the_final_flight_until_application_data_arrives() -> TestResult {
    let now = Instant::now();
    let (client, mut session) = new_session(now)?;
    // The client's flight again: epoch-0 records (ignored) and its Finished in epoch 1.
    let mut flight = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 3, 0, 2, 16, 0];
    flight.extend_from_slice(&[20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 1]);
    let finished = client_record(client.as_ref(), ContentType::Handshake, 5, &[20, 0, 0, 12])?;
    flight.extend_from_slice(&finished);
    assert!(receive(&mut session, now, flight).is_empty());
    assert_eq!(sent(&mut session), vec![FINAL_FLIGHT.to_vec()]);
    // A forged Finished is not answered.
    let mut forged = client_record(client.as_ref(), ContentType::Handshake, 6, &[20, 0, 0, 12])?;
    let last = forged.len() - 1;
    forged[last] ^= 1;
    receive(&mut session, now, forged);
    assert!(sent(&mut session).is_empty());
    // The first request proves the client finished: no more resends.
    let request = client_record(client.as_ref(), ContentType::ApplicationData, 7, &con(1)?)?;
    assert_eq!(receive(&mut session, now, request).len(), 1);
    let again = client_record(client.as_ref(), ContentType::Handshake, 8, &[20, 0, 0, 12])?;
    receive(&mut session, now, again);
    assert!(sent(&mut session).is_empty());
    Ok(())
}

#[test]
fn alerts_end_the_session_or_are_ignored() -> TestResult {
    let now = Instant::now();
    for (alert, ending) in [
        ([1u8, 0u8], Some(Ending::PeerClosed)),
        ([2, 20], Some(Ending::Fatal(20))),
        ([1, 90], None),
    ] {
        let (client, mut session) = new_session(now)?;
        let record = client_record(client.as_ref(), ContentType::Alert, 1, &alert)?;
        receive(&mut session, now, record);
        assert_eq!(session.ending(), ending, "{alert:?}");
    }
    // An alert that does not authenticate changes nothing.
    let (client, mut session) = new_session(now)?;
    let mut forged = client_record(client.as_ref(), ContentType::Alert, 1, &[2, 40])?;
    forged[20] ^= 1;
    receive(&mut session, now, forged);
    assert_eq!(session.ending(), None);
    // Nothing is read after close_notify; the answer is a close_notify the client can read.
    let (client, mut session) = new_session(now)?;
    let mut datagram = client_record(client.as_ref(), ContentType::Alert, 1, &[1, 0])?;
    datagram.extend(client_record(
        client.as_ref(),
        ContentType::ApplicationData,
        2,
        &con(3)?,
    )?);
    assert!(receive(&mut session, now, datagram).is_empty());
    assert!(Ending::PeerClosed.notifies() && !Ending::Fatal(20).notifies());
    let notify = session.close_notify().ok_or("no close_notify")?;
    assert_eq!(client.decrypt(&notify)?.get(13..), Some(&[1u8, 0][..]));
    Ok(())
}

#[test]
fn a_silent_session_ends_after_the_idle_timeout() -> TestResult {
    let start = Instant::now();
    let (client, mut session) = new_session(start)?;
    let idle = config().idle_timeout;
    assert_eq!(session.poll_timeout(&config()), Some(start + idle));
    // Activity (even a record that carries no request) moves the deadline.
    let later = start + idle / 2;
    let ping = client_record(client.as_ref(), ContentType::Alert, 1, &[1, 90])?;
    receive(&mut session, later, ping);
    session.handle_timeout(&config(), start + idle);
    assert_eq!(session.ending(), None);
    assert_eq!(session.poll_timeout(&config()), Some(later + idle));
    session.handle_timeout(&config(), later + idle);
    assert_eq!(session.ending(), Some(Ending::Idle));
    assert!(Ending::Idle.notifies());
    Ok(())
}
