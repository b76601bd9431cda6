//! End to end: the CoAP adapter with the real embedded registry and northbound, a CoAP client
//! built from coap-lite over a tokio `UdpSocket` (and over webrtc-dtls for DTLS with PSK and with
//! rcgen-made ECDSA client certificates) as the device, and fe2o3-amqp as the application.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::{AmqpConsumer, Error, TestGateway, TestResult};
use ferry_adapter_coap::DtlsCertificate;
use ferry_registry_client::test_pki::{TestCa, TestCert, Validity};
use rcgen::DnType;
use serde_json::json;
use tokio::net::UdpSocket;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config as DtlsConfig, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

/// A request as a device builds it.
struct Req {
    kind: MessageType,
    method: RequestType,
    path: &'static str,
    queries: Vec<&'static str>,
    format: Option<u8>,
    payload: Vec<u8>,
}

fn con(method: RequestType, path: &'static str, payload: &[u8]) -> Req {
    Req {
        kind: MessageType::Confirmable,
        method,
        path,
        queries: Vec::new(),
        format: Some(0),
        payload: payload.to_vec(),
    }
}

fn non(method: RequestType, path: &'static str, payload: &[u8]) -> Req {
    Req {
        kind: MessageType::NonConfirmable,
        ..con(method, path, payload)
    }
}

impl Req {
    fn packet(&self, message_id: u16) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(self.kind);
        p.header.code = MessageClass::Request(self.method);
        p.header.message_id = message_id;
        p.set_token(message_id.to_be_bytes().to_vec());
        for segment in self.path.trim_start_matches('/').split('/') {
            p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        for query in &self.queries {
            p.add_option(CoapOption::UriQuery, query.as_bytes().to_vec());
        }
        if let Some(format) = self.format {
            p.add_option(CoapOption::ContentFormat, vec![format]);
        }
        p.payload.clone_from(&self.payload);
        p
    }
}

/// A CoAP client over plain UDP.
struct Client {
    socket: UdpSocket,
    next_id: u16,
}

impl Client {
    async fn connect(server: SocketAddr) -> Result<Self, Error> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(server).await?;
        Ok(Self {
            socket,
            next_id: 0x4000,
        })
    }

    fn message_id(&mut self) -> u16 {
        self.next_id += 1;
        self.next_id
    }

    async fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        self.socket.send(bytes).await?;
        Ok(())
    }

    /// The next datagram within `wait`, raw.
    async fn recv_raw(&self, wait: Duration) -> Result<Option<Vec<u8>>, Error> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(wait, self.socket.recv(&mut buf)).await {
            Err(_) => Ok(None),
            Ok(n) => Ok(Some(buf.get(..n?).unwrap_or_default().to_vec())),
        }
    }

    async fn recv(&self, wait: Duration) -> Result<Option<Packet>, Error> {
        match self.recv_raw(wait).await? {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                Packet::from_bytes(&bytes).map_err(|e| format!("bad response: {e:?}"))?,
            )),
        }
    }

    /// Sends the request and returns the response code: piggybacked on the ACK, or (after an
    /// empty ACK) in a separate CON response that is acknowledged here, or in a NON.
    async fn request(&mut self, req: &Req) -> Result<ResponseType, Error> {
        let id = self.message_id();
        let bytes = req
            .packet(id)
            .to_bytes()
            .map_err(|e| format!("encode: {e:?}"))?;
        self.send(&bytes).await?;
        let mut response = self.recv(WAIT).await?.ok_or("no response")?;
        if req.kind == MessageType::Confirmable && response.header.code == MessageClass::Empty {
            assert_eq!(response.header.get_type(), MessageType::Acknowledgement);
            assert_eq!(response.header.message_id, id);
            response = self.recv(WAIT).await?.ok_or("no separate response")?;
            assert_eq!(response.header.get_type(), MessageType::Confirmable);
            self.send(&ack(response.header.message_id)?).await?;
        } else {
            match (req.kind, response.header.get_type()) {
                (MessageType::Confirmable, MessageType::Acknowledgement) => {
                    assert_eq!(response.header.message_id, id)
                }
                (MessageType::NonConfirmable, MessageType::NonConfirmable) => {}
                other => return Err(format!("unexpected message types {other:?}").into()),
            }
        }
        assert_eq!(response.get_token(), id.to_be_bytes(), "token echoed");
        code(&response)
    }
}

/// An empty ACK for `message_id`.
fn ack(message_id: u16) -> Result<Vec<u8>, Error> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Acknowledgement);
    p.header.code = MessageClass::Empty;
    p.header.message_id = message_id;
    Ok(p.to_bytes().map_err(|e| format!("{e:?}"))?)
}

fn code(p: &Packet) -> Result<ResponseType, Error> {
    match p.header.code {
        MessageClass::Response(r) => Ok(r),
        other => Err(format!("not a response: {other:?}").into()),
    }
}

/// A gateway whose CoAP adapter does not require authentication (plain UDP port open).
async fn open_gateway(
    dir: &std::path::Path,
    timeout_to_ack: Duration,
) -> Result<TestGateway, Error> {
    let mut config = common::config(dir);
    config.coap.authentication_required = false;
    config.coap.timeout_to_ack = timeout_to_ack;
    TestGateway::start_with(config).await
}

/// A tenant that lets devices use CoAP without authentication.
fn open_tenant() -> serde_json::Value {
    json!({"adapters": [
        {"type": "hono-coap", "enabled": true, "device-authentication-required": false}
    ]})
}

fn plain(ferry: &TestGateway) -> Result<SocketAddr, Error> {
    Ok(ferry.addrs.coap.ok_or("the plain CoAP port is closed")?)
}

#[tokio::test]
async fn every_unauthenticated_uri_form_with_con_and_non_arrives() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = open_gateway(dir.path(), Duration::from_millis(500)).await?;
    ferry.tenant("c1", open_tenant()).await?;
    ferry.device("c1", "dev1", json!({})).await?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/c1")
        .await?
        .accept_in_background();
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/c1")
        .await?
        .accept_in_background();
    let mut client = Client::connect(plain(&ferry)?).await?;

    for (req, qos) in [
        (con(RequestType::Put, "/t/c1/dev1", b"con t"), "1"),
        (non(RequestType::Put, "/t/c1/dev1", b"non t"), "0"),
        (
            con(RequestType::Put, "/telemetry/c1/dev1", b"con telemetry"),
            "1",
        ),
        (
            non(RequestType::Put, "/telemetry/c1/dev1", b"non telemetry"),
            "0",
        ),
    ] {
        assert_eq!(
            client.request(&req).await?,
            ResponseType::Changed,
            "{}",
            req.path
        );
        let msg = telemetry.next(WAIT).await.ok_or("no telemetry")?;
        assert_eq!(msg.payload, req.payload);
        assert_eq!(msg.prop("qos").as_deref(), Some(qos), "{}", req.path);
        assert_eq!(msg.prop("device_id").as_deref(), Some("dev1"));
        assert_eq!(msg.prop("orig_adapter").as_deref(), Some("hono-coap"));
        assert_eq!(msg.prop("orig_address").as_deref(), Some(req.path));
        assert_eq!(
            msg.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
    for path in ["/e/c1/dev1", "/event/c1/dev1"] {
        let mut req = con(RequestType::Put, path, b"{\"a\":1}");
        req.format = Some(50);
        assert_eq!(client.request(&req).await?, ResponseType::Changed);
        let msg = events.next(WAIT).await.ok_or("no event")?;
        assert_eq!(msg.payload, b"{\"a\":1}");
        assert_eq!(msg.content_type.as_deref(), Some("application/json"));
        assert_eq!(msg.prop("orig_address").as_deref(), Some(path));
        assert!(msg.durable);
    }
    // An empty notification with a ttd.
    let mut req = con(RequestType::Put, "/e/c1/dev1", b"");
    req.format = None;
    req.queries = vec!["empty", "hono-ttd=20"];
    assert_eq!(client.request(&req).await?, ResponseType::Changed);
    let msg = events.next(WAIT).await.ok_or("no empty notification")?;
    assert!(msg.payload.is_empty());
    assert_eq!(
        msg.content_type.as_deref(),
        Some("application/vnd.eclipse-hono-empty-notification")
    );
    assert_eq!(msg.prop("ttd").as_deref(), Some("20"));

    telemetry.close().await;
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn each_response_code_comes_from_its_cause() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = open_gateway(dir.path(), Duration::from_millis(500)).await?;
    ferry.tenant("c2", open_tenant()).await?;
    ferry.device("c2", "dev1", json!({})).await?;
    let mut client = Client::connect(plain(&ferry)?).await?;
    let t = |payload: &[u8]| con(RequestType::Put, "/t/c2/dev1", payload);

    // 5.03: telemetry nobody consumes.
    assert_eq!(
        client.request(&t(b"x")).await?,
        ResponseType::ServiceUnavailable
    );
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/c2")
        .await?
        .accept_in_background();

    // 4.01: the authenticated form needs DTLS; a tenant requiring authentication.
    assert_eq!(
        client.request(&con(RequestType::Post, "/t", b"x")).await?,
        ResponseType::Unauthorized
    );
    ferry.tenant("strict", json!({})).await?;
    ferry.device("strict", "dev1", json!({})).await?;
    assert_eq!(
        client
            .request(&con(RequestType::Put, "/t/strict/dev1", b"x"))
            .await?,
        ResponseType::Unauthorized
    );
    // 4.00: empty payload without content-format; NON event; bad hono-ttd; ?empty with a body;
    // gateway form without a gateway.
    let mut empty = t(b"");
    empty.format = None;
    assert_eq!(client.request(&empty).await?, ResponseType::BadRequest);
    assert_eq!(
        client
            .request(&non(RequestType::Put, "/e/c2/dev1", b"x"))
            .await?,
        ResponseType::BadRequest
    );
    let mut ttd = t(b"x");
    ttd.queries = vec!["hono-ttd=soon"];
    assert_eq!(client.request(&ttd).await?, ResponseType::BadRequest);
    let mut not_empty = t(b"x");
    not_empty.queries = vec!["empty"];
    assert_eq!(client.request(&not_empty).await?, ResponseType::BadRequest);
    assert_eq!(
        client
            .request(&con(RequestType::Put, "/t//dev1", b"x"))
            .await?,
        ResponseType::BadRequest
    );
    // 4.04: unknown device, unknown tenant, unknown resource.
    for path in ["/t/c2/nobody", "/t/nope/dev1", "/x/c2/dev1"] {
        assert_eq!(
            client.request(&con(RequestType::Put, path, b"x")).await?,
            ResponseType::NotFound,
            "{path}"
        );
    }
    // 4.05: wrong method for a known resource.
    assert_eq!(
        client
            .request(&con(RequestType::Post, "/t/c2/dev1", b"x"))
            .await?,
        ResponseType::MethodNotAllowed
    );
    // 4.13 over the 2048-byte limit, with Size1; exactly at the limit is fine.
    let id = client.message_id();
    let big = t(&[b'a'; 2049])
        .packet(id)
        .to_bytes()
        .map_err(|e| format!("{e:?}"))?;
    client.send(&big).await?;
    let response = client.recv(WAIT).await?.ok_or("no response")?;
    assert_eq!(code(&response)?, ResponseType::RequestEntityTooLarge);
    assert_eq!(
        response.get_first_option(CoapOption::Size1),
        Some(&2048u16.to_be_bytes().to_vec())
    );
    assert_eq!(
        client.request(&t(&[b'a'; 2048])).await?,
        ResponseType::Changed
    );
    assert_eq!(
        consumer.next(WAIT).await.ok_or("no message")?.payload.len(),
        2048
    );
    // 4.03: the tenant does not allow the CoAP adapter.
    ferry
        .tenant(
            "c3",
            json!({"adapters": [{"type": "hono-http", "enabled": true}]}),
        )
        .await?;
    ferry.device("c3", "dev1", json!({})).await?;
    assert_eq!(
        client
            .request(&con(RequestType::Put, "/t/c3/dev1", b"x"))
            .await?,
        ResponseType::Forbidden
    );
    // Nothing refused reached the application.
    assert!(consumer.next(QUIET).await.is_none());
    // Garbage is dropped without an answer, and the port keeps working.
    client.send(&[0xff, 0x00, 0x13]).await?;
    assert!(client.recv_raw(QUIET).await?.is_none());
    assert_eq!(
        client.request(&t(b"after junk")).await?,
        ResponseType::Changed
    );
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_duplicate_con_is_forwarded_once_and_answered_twice_identically() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Long enough that the answer is piggybacked on the ACK.
    let ferry = open_gateway(dir.path(), Duration::from_secs(5)).await?;
    ferry.tenant("c4", open_tenant()).await?;
    ferry.device("c4", "dev1", json!({})).await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/c4")
        .await?
        .accept_in_background();
    let client = Client::connect(plain(&ferry)?).await?;

    let bytes = con(RequestType::Put, "/t/c4/dev1", b"once")
        .packet(0x1234)
        .to_bytes()
        .map_err(|e| format!("{e:?}"))?;
    client.send(&bytes).await?;
    let first = client.recv_raw(WAIT).await?.ok_or("no first answer")?;
    client.send(&bytes).await?;
    let second = client.recv_raw(WAIT).await?.ok_or("no second answer")?;
    assert_eq!(first, second);
    let response = Packet::from_bytes(&first).map_err(|e| format!("{e:?}"))?;
    assert_eq!(code(&response)?, ResponseType::Changed);
    assert_eq!(response.header.message_id, 0x1234);

    assert_eq!(
        consumer.next(WAIT).await.ok_or("nothing arrived")?.payload,
        b"once"
    );
    assert!(
        consumer.next(QUIET).await.is_none(),
        "the duplicate was forwarded"
    );
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_slow_northbound_gets_an_empty_ack_then_a_separate_response() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = open_gateway(dir.path(), Duration::from_millis(200)).await?;
    ferry.tenant("c5", open_tenant()).await?;
    ferry.device("c5", "dev1", json!({})).await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/c5").await?;
    // The application accepts the QoS 1 message only after a second.
    let slow = tokio::spawn(async move {
        let got = consumer
            .next_accepted_after(WAIT, Duration::from_secs(1))
            .await;
        consumer.close().await;
        got.map(|m| m.map(|m| m.payload))
    });
    let client = Client::connect(plain(&ferry)?).await?;
    let bytes = con(RequestType::Put, "/t/c5/dev1", b"slow")
        .packet(0x2222)
        .to_bytes()
        .map_err(|e| format!("{e:?}"))?;
    client.send(&bytes).await?;

    let empty_ack = client.recv(WAIT).await?.ok_or("no empty ACK")?;
    assert_eq!(empty_ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(empty_ack.header.code, MessageClass::Empty);
    assert_eq!(empty_ack.header.message_id, 0x2222);

    let response = client.recv(WAIT).await?.ok_or("no separate response")?;
    assert_eq!(response.header.get_type(), MessageType::Confirmable);
    assert_eq!(code(&response)?, ResponseType::Changed);
    assert_eq!(response.get_token(), 0x2222u16.to_be_bytes());
    assert_ne!(response.header.message_id, 0x2222);
    client.send(&ack(response.header.message_id)?).await?;
    assert_eq!(
        slow.await?.map_err(|e| e.to_string())?.as_deref(),
        Some(&b"slow"[..])
    );
    // Acknowledged: no retransmission follows (ACK_TIMEOUT is 2 s).
    assert!(
        client
            .recv_raw(Duration::from_millis(2600))
            .await?
            .is_none()
    );
    ferry.stop().await;
    Ok(())
}

/// A DTLS-PSK client session over webrtc-dtls.
async fn dtls_client(server: SocketAddr, identity: &str, key: &[u8]) -> Result<DTLSConn, Error> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(server).await?;
    let key = key.to_vec();
    let config = DtlsConfig {
        psk: Some(Arc::new(move |_hint: &[u8]| Ok(key.clone()))),
        psk_identity_hint: Some(identity.as_bytes().to_vec()),
        cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..DtlsConfig::default()
    };
    let handshake = DTLSConn::new(Arc::new(socket), config, true, None);
    Ok(tokio::time::timeout(WAIT, handshake).await??)
}

async fn dtls_request(conn: &DTLSConn, req: &Req, id: u16) -> Result<ResponseType, Error> {
    let bytes = req.packet(id).to_bytes().map_err(|e| format!("{e:?}"))?;
    conn.write(&bytes, None).await?;
    let mut response = dtls_read(conn).await?;
    assert_eq!(response.header.message_id, id);
    if response.header.code == MessageClass::Empty {
        // Acknowledged now, answered later in a CON of its own.
        response = dtls_read(conn).await?;
        assert_eq!(response.header.get_type(), MessageType::Confirmable);
        conn.write(&ack(response.header.message_id)?, None).await?;
    }
    assert_eq!(response.get_token(), id.to_be_bytes());
    code(&response)
}

async fn dtls_read(conn: &DTLSConn) -> Result<Packet, Error> {
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(WAIT, conn.read(&mut buf, None)).await??;
    Ok(Packet::from_bytes(buf.get(..n).unwrap_or_default()).map_err(|e| format!("{e:?}"))?)
}

#[tokio::test]
async fn dtls_psk_authenticates_devices_and_gateways_and_refuses_wrong_keys() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    assert!(
        ferry.addrs.coap.is_none(),
        "plain CoAP must stay closed while authentication is required"
    );
    let coaps = ferry.addrs.coaps.ok_or("no DTLS port")?;
    ferry.tenant("c6", json!({})).await?;
    ferry.device("c6", "dev1", json!({})).await?;
    ferry.psk("c6", "dev1", "sensor1", b"secret-key-1").await?;
    ferry
        .device("c6", "behind", json!({"via": ["dev1"]}))
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/c6")
        .await?
        .accept_in_background();
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/c6")
        .await?
        .accept_in_background();

    let conn = dtls_client(coaps, "sensor1@c6", b"secret-key-1").await?;
    for (i, path) in ["/t", "/telemetry"].into_iter().enumerate() {
        let req = con(RequestType::Post, path, b"over dtls");
        assert_eq!(
            dtls_request(&conn, &req, 100 + i as u16).await?,
            ResponseType::Changed
        );
        let msg = consumer.next(WAIT).await.ok_or("no telemetry over DTLS")?;
        assert_eq!(msg.payload, b"over dtls");
        assert_eq!(msg.prop("device_id").as_deref(), Some("dev1"));
        assert_eq!(msg.prop("orig_address").as_deref(), Some(path));
    }
    for (i, path) in ["/e", "/event"].into_iter().enumerate() {
        let req = con(RequestType::Post, path, b"event");
        assert_eq!(
            dtls_request(&conn, &req, 110 + i as u16).await?,
            ResponseType::Changed
        );
        assert!(events.next(WAIT).await.is_some(), "{path}");
    }
    // Gateway forms, for a device that lists dev1 in `via`.
    for (i, path) in ["/t//behind", "/t/c6/behind"].into_iter().enumerate() {
        let req = con(RequestType::Put, path, b"via gw");
        assert_eq!(
            dtls_request(&conn, &req, 120 + i as u16).await?,
            ResponseType::Changed
        );
        let msg = consumer.next(WAIT).await.ok_or("no gateway telemetry")?;
        assert_eq!(msg.prop("device_id").as_deref(), Some("behind"));
        assert_eq!(msg.prop("gateway_id").as_deref(), Some("dev1"));
    }
    // 4.03 for another tenant, 4.05 for the wrong method.
    let req = con(RequestType::Put, "/t/other/behind", b"x");
    assert_eq!(
        dtls_request(&conn, &req, 130).await?,
        ResponseType::Forbidden
    );
    let req = con(RequestType::Put, "/t", b"x");
    assert_eq!(
        dtls_request(&conn, &req, 131).await?,
        ResponseType::MethodNotAllowed
    );
    let _ = conn.close().await;

    // A wrong key and an unknown identity fail the handshake.
    assert!(
        dtls_client(coaps, "sensor1@c6", b"wrong-key")
            .await
            .is_err()
    );
    assert!(
        dtls_client(coaps, "nobody@c6", b"secret-key-1")
            .await
            .is_err()
    );
    assert!(consumer.next(QUIET).await.is_none());
    consumer.close().await;
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn junk_and_half_open_handshakes_do_not_block_others_and_idle_sessions_end() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.coap.idle_timeout = Duration::from_millis(800);
    let ferry = TestGateway::start_with(config).await?;
    let coaps = ferry.addrs.coaps.ok_or("no DTLS port")?;
    ferry.tenant("c7", json!({})).await?;
    ferry.device("c7", "dev1", json!({})).await?;
    ferry.psk("c7", "dev1", "sensor1", b"secret-key-7").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/c7")
        .await?
        .accept_in_background();

    // Junk from one address, a handshake abandoned after its ClientHello from another.
    let junk = UdpSocket::bind("127.0.0.1:0").await?;
    for datagram in [
        &[0xffu8; 64][..],
        b"GET / HTTP/1.1\r\n\r\n",
        &[22, 0xfe, 0xfd, 0, 0],
    ] {
        junk.send_to(datagram, coaps).await?;
    }
    let abandoned = tokio::time::timeout(
        Duration::from_millis(1),
        dtls_client(coaps, "sensor1@c7", b"secret-key-7"),
    )
    .await;
    assert!(abandoned.is_err(), "the abandoned handshake completed");

    let conn = dtls_client(coaps, "sensor1@c7", b"secret-key-7").await?;
    let req = non(RequestType::Post, "/t", b"not blocked");
    let bytes = req.packet(7).to_bytes().map_err(|e| format!("{e:?}"))?;
    conn.write(&bytes, None).await?;
    let response = dtls_read(&conn).await?;
    assert_eq!(response.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(code(&response)?, ResponseType::Changed);
    let msg = consumer.next(WAIT).await.ok_or("no telemetry")?;
    assert_eq!(msg.payload, b"not blocked");
    assert_eq!(msg.prop("qos").as_deref(), Some("0"));

    // Silent for longer than idle_timeout: the server closes the session (close_notify).
    let mut buf = vec![0u8; 256];
    let read = tokio::time::timeout(WAIT, conn.read(&mut buf, None)).await?;
    assert!(read.is_err(), "the idle session was not closed: {read:?}");
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_device_restarting_on_the_same_address_can_handshake_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let coaps = ferry.addrs.coaps.ok_or("no DTLS port")?;
    ferry.tenant("c8", json!({})).await?;
    ferry.device("c8", "dev1", json!({})).await?;
    ferry.psk("c8", "dev1", "sensor1", b"secret-key-8").await?;
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    socket.connect(coaps).await?;
    let config = || DtlsConfig {
        psk: Some(Arc::new(|_hint: &[u8]| Ok(b"secret-key-8".to_vec()))),
        psk_identity_hint: Some(b"sensor1@c8".to_vec()),
        cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
        ..DtlsConfig::default()
    };
    let first =
        tokio::time::timeout(WAIT, DTLSConn::new(socket.clone(), config(), true, None)).await??;
    // The device "restarts": it forgets the session without a close_notify.
    drop(first);
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        DTLSConn::new(socket.clone(), config(), true, None),
    )
    .await??;
    let req = non(RequestType::Put, "/t//dev1", b"x");
    let bytes = req.packet(9).to_bytes().map_err(|e| format!("{e:?}"))?;
    second.write(&bytes, None).await?;
    let response = dtls_read(&second).await?;
    // Nobody consumes c8's telemetry: the request went through the new session into the
    // pipeline as far as the northbound.
    assert_eq!(code(&response)?, ResponseType::ServiceUnavailable);
    ferry.stop().await;
    Ok(())
}

/// A UDP relay between one client and the DTLS port that drops the server's first datagram
/// starting with a ChangeCipherSpec (its final flight). Returns the relay's address and the
/// count of such datagrams the server sent.
async fn lossy_relay(
    server: SocketAddr,
) -> Result<(SocketAddr, Arc<std::sync::atomic::AtomicUsize>), Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let front = UdpSocket::bind("127.0.0.1:0").await?;
    let back = UdpSocket::bind("127.0.0.1:0").await?;
    back.connect(server).await?;
    let addr = front.local_addr()?;
    let finals = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&finals);
    tokio::spawn(async move {
        let (mut up, mut down) = (vec![0u8; 4096], vec![0u8; 4096]);
        let mut client = None;
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut up) => {
                    client = Some(from);
                    let _ = back.send(&up[..n]).await;
                }
                Ok(n) = back.recv(&mut down) => {
                    if down[0] == 20 && counted.fetch_add(1, Ordering::SeqCst) == 0 {
                        continue; // the final flight is lost
                    }
                    if let Some(client) = client {
                        let _ = front.send_to(&down[..n], client).await;
                    }
                }
            }
        }
    });
    Ok((addr, finals))
}

#[tokio::test]
async fn a_lost_final_flight_is_resent_when_the_client_retransmits_its_finished() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let coaps = ferry.addrs.coaps.ok_or("no DTLS port")?;
    ferry.tenant("c9", json!({})).await?;
    ferry.device("c9", "dev1", json!({})).await?;
    ferry.psk("c9", "dev1", "sensor1", b"secret-key-9").await?;
    let (relay, finals) = lossy_relay(coaps).await?;
    // The client retransmits its last flight after webrtc-dtls's 1 s flight interval; by then
    // the server has handed the session over from webrtc-dtls to the port.
    let conn = dtls_client(relay, "sensor1@c9", b"secret-key-9").await?;
    assert!(
        finals.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the final flight was not sent again"
    );
    let req = non(RequestType::Put, "/t//dev1", b"after a lost flight");
    let bytes = req.packet(11).to_bytes().map_err(|e| format!("{e:?}"))?;
    conn.write(&bytes, None).await?;
    let response = dtls_read(&conn).await?;
    // Nobody consumes c9's telemetry: the request went through the session as far as the
    // northbound.
    assert_eq!(code(&response)?, ResponseType::ServiceUnavailable);
    ferry.stop().await;
    Ok(())
}

/// A DTLS client session over webrtc-dtls that authenticates with a client certificate (ECDSA
/// suites only, like a device without PSK).
async fn dtls_cert_client(server: SocketAddr, cert: &TestCert) -> Result<DTLSConn, Error> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(server).await?;
    let identity = DtlsCertificate::from_pem(&cert.chain_pem(), &cert.key_pem)?;
    let config = DtlsConfig {
        certificates: vec![identity.dtls_certificate().clone()],
        cipher_suites: vec![CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256],
        // The gateway's DTLS certificate is a self-signed one for localhost.
        insecure_skip_verify: true,
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..DtlsConfig::default()
    };
    let handshake = DTLSConn::new(Arc::new(socket), config, true, None);
    Ok(tokio::time::timeout(WAIT, handshake).await??)
}

/// Whether the server closed a certificate session after the handshake instead of serving it:
/// a request gets no CoAP answer, the read ends with the server's close_notify.
async fn closed_after_handshake(conn: &DTLSConn) -> Result<bool, Error> {
    let bytes = con(RequestType::Post, "/t", b"refused")
        .packet(1)
        .to_bytes()
        .map_err(|e| format!("{e:?}"))?;
    // The close may already have arrived, failing the write: closed as well.
    if conn.write(&bytes, None).await.is_err() {
        return Ok(true);
    }
    let mut buf = vec![0u8; 256];
    Ok(matches!(
        tokio::time::timeout(WAIT, conn.read(&mut buf, None)).await,
        Ok(Err(_))
    ))
}

const PROVISIONING_NOTIFICATION: &str =
    "application/vnd.eclipse-hono-device-provisioning-notification";

#[tokio::test]
async fn dtls_x509_registered_and_auto_provisioned_devices_foreign_cas_refused_psk_alongside()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let coaps = ferry.addrs.coaps.ok_or("no DTLS port")?;
    // Tenant cx1 trusts `fleet` without auto-provisioning and also has a PSK device; tenant cx2
    // trusts `factory`, which auto-provisions.
    let fleet = TestCa::root("coap-fleet")?;
    let factory = TestCa::root("coap-factory")?;
    ferry
        .tenant("cx1", json!({"trusted-ca": [fleet.trusted_ca()]}))
        .await?;
    let mut entry = factory.trusted_ca();
    entry["auto-provisioning-enabled"] = json!(true);
    entry["auto-provisioning-device-id-template"] = json!("auto-{{subject-cn}}");
    ferry.tenant("cx2", json!({"trusted-ca": [entry]})).await?;
    let known = fleet.device("known-1")?;
    ferry.device("cx1", "known-1", json!({})).await?;
    ferry
        .x509_credential("cx1", "known-1", &known.subject_dn())
        .await?;
    ferry.device("cx1", "psk-dev", json!({})).await?;
    ferry
        .psk("cx1", "psk-dev", "sensor1", b"secret-key-x")
        .await?;
    let mut cx1 = AmqpConsumer::attach(&ferry.addrs, "telemetry/cx1")
        .await?
        .accept_in_background();
    let mut cx2 = AmqpConsumer::attach(&ferry.addrs, "telemetry/cx2")
        .await?
        .accept_in_background();
    let mut cx2_events = AmqpConsumer::attach(&ferry.addrs, "event/cx2")
        .await?
        .accept_in_background();

    // A registered certificate.
    let conn = dtls_cert_client(coaps, &known).await?;
    let req = con(RequestType::Post, "/t", b"by certificate");
    assert_eq!(dtls_request(&conn, &req, 1).await?, ResponseType::Changed);
    let msg = cx1.next(WAIT).await.ok_or("no telemetry by certificate")?;
    assert_eq!(msg.payload, b"by certificate");
    assert_eq!(msg.prop("device_id").as_deref(), Some("known-1"));
    let _ = conn.close().await;

    // PSK on the same port.
    let conn = dtls_client(coaps, "sensor1@cx1", b"secret-key-x").await?;
    let req = con(RequestType::Post, "/t", b"by psk");
    assert_eq!(dtls_request(&conn, &req, 2).await?, ResponseType::Changed);
    let msg = cx1.next(WAIT).await.ok_or("no telemetry by PSK")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("psk-dev"));
    let _ = conn.close().await;

    // An unknown device of the auto-provisioning CA: created by its first session, whose first
    // telemetry is accepted.
    assert_eq!(ferry.read_device("cx2", "auto-fresh-1").await?, None);
    let conn = dtls_cert_client(coaps, &factory.device("fresh-1")?).await?;
    let req = con(RequestType::Post, "/telemetry", b"first words");
    assert_eq!(dtls_request(&conn, &req, 3).await?, ResponseType::Changed);
    let msg = cx2
        .next(WAIT)
        .await
        .ok_or("no telemetry of the new device")?;
    assert_eq!(msg.payload, b"first words");
    assert_eq!(msg.prop("device_id").as_deref(), Some("auto-fresh-1"));
    let note = cx2_events
        .next(WAIT)
        .await
        .ok_or("no provisioning notification")?;
    assert_eq!(
        note.content_type.as_deref(),
        Some(PROVISIONING_NOTIFICATION)
    );
    assert_eq!(note.prop("device_id").as_deref(), Some("auto-fresh-1"));
    let doc = ferry
        .read_device("cx2", "auto-fresh-1")
        .await?
        .ok_or("device not created")?;
    assert_eq!(doc["status"]["auto-provisioned"], json!(true));
    let _ = conn.close().await;

    // Refused after the handshake: a foreign CA (even with a registered subject DN), and an
    // unregistered device of a CA that does not auto-provision.
    let foreign = TestCa::root("coap-foreign")?;
    let impostor = foreign.issue(
        &[
            (DnType::OrganizationName, "Ferry Test"),
            (DnType::OrganizationalUnitName, "Devices"),
            (DnType::CommonName, "known-1"),
        ],
        Validity::Current,
    )?;
    assert_eq!(impostor.subject_dn(), known.subject_dn());
    for cert in [impostor, fleet.device("stranger")?] {
        let conn = dtls_cert_client(coaps, &cert).await?;
        assert!(
            closed_after_handshake(&conn).await?,
            "{} was served",
            cert.subject_dn()
        );
    }
    assert!(
        cx1.next(QUIET).await.is_none(),
        "a refused device got through"
    );
    cx1.close().await;
    cx2.close().await;
    cx2_events.close().await;
    ferry.stop().await;
    Ok(())
}
