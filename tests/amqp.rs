//! End to end through the AMQP adapter: fe2o3-amqp as the device (PLAIN, ANONYMOUS, TLS, and
//! EXTERNAL with a client certificate), the real embedded registry and northbound, fe2o3-amqp as
//! the application.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{AmqpConsumer, Error, Received, TestGateway, TestResult};
use fe2o3_amqp::connection::{ConnectionHandle, OpenError};
use fe2o3_amqp::frames::sasl::{Frame as SaslFrame, FrameCodec};
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Data, Message, Outcome, Properties, Target};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit};
use fe2o3_amqp::{Connection, Sender, Session};
use ferry_registry_client::test_pki::{TestCa, TestCert};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::codec::{Decoder, Encoder};

const WAIT: Duration = Duration::from_secs(5);
/// Long enough for a message that is going to arrive to arrive; used only to show absence.
const QUIET: Duration = Duration::from_millis(300);

/// A device connected to the AMQP adapter, with one anonymous-relay sender link.
struct Device {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    sender: Sender,
}

fn plain(username: &str, password: &str) -> SaslProfile {
    SaslProfile::Plain {
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

async fn open(addr: SocketAddr, profile: SaslProfile) -> Result<ConnectionHandle<()>, OpenError> {
    Connection::builder()
        .container_id("test-device")
        .sasl_profile(profile)
        .open(format!("amqp://{addr}").as_str())
        .await
}

impl Device {
    async fn connect(addr: SocketAddr, username: &str, password: &str) -> Result<Self, Error> {
        let connection = open(addr, plain(username, password)).await?;
        Self::attach(connection, SenderSettleMode::Mixed).await
    }

    async fn attach(
        mut connection: ConnectionHandle<()>,
        mode: SenderSettleMode,
    ) -> Result<Self, Error> {
        let mut session = Session::begin(&mut connection).await?;
        let sender = Sender::builder()
            .name("upload")
            .target(Target::builder().build())
            .sender_settle_mode(mode)
            .attach(&mut session)
            .await?;
        Ok(Self {
            connection,
            session,
            sender,
        })
    }

    /// Sends one Data section (or no body when `payload` is empty) and waits for the outcome.
    async fn send(
        &mut self,
        to: &str,
        content_type: Option<&str>,
        payload: &[u8],
    ) -> Result<Outcome, SendError> {
        self.sender.send(message(to, content_type, payload)).await
    }

    async fn close(mut self) {
        let _ = self.sender.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

fn message(to: &str, content_type: Option<&str>, payload: &[u8]) -> Message<Body<Value>> {
    let properties = Properties {
        to: Some(to.to_owned()),
        content_type: content_type.map(Symbol::from),
        ..Properties::default()
    };
    let body = match payload {
        [] => Body::Empty,
        bytes => Body::Data(vec![Data(Binary::from(bytes.to_vec()))].into()),
    };
    Message::builder().properties(properties).body(body).build()
}

fn amqp_addr(ferry: &TestGateway) -> Result<SocketAddr, Error> {
    Ok(ferry.addrs.amqp.ok_or("no plain AMQP listener")?)
}

/// The error condition of a rejected outcome.
fn rejected_with(outcome: &Outcome) -> Option<ErrorCondition> {
    match outcome {
        Outcome::Rejected(r) => r.error.as_ref().map(|e| e.condition.clone()),
        _ => None,
    }
}

/// Sends unsettled telemetry while the application consumes it (the outcome waits for the
/// application's acceptance).
async fn send_consumed(
    device: &mut Device,
    consumer: &mut AmqpConsumer,
    to: &str,
    payload: &[u8],
) -> Result<(Outcome, common::Received), Error> {
    let (outcome, received) = tokio::join!(
        device.send(to, Some("text/plain"), payload),
        consumer.next(WAIT)
    );
    Ok((outcome?, received?.ok_or("no telemetry arrived")?))
}

#[tokio::test]
async fn plain_password_is_checked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("a1", "dev1", "pw-1").await?;
    let addr = amqp_addr(&ferry)?;
    for (user, pw) in [
        ("dev1@a1", "wrong"),
        ("nobody@a1", "pw-1"),
        ("dev1", "pw-1"),
    ] {
        match open(addr, plain(user, pw)).await {
            Err(OpenError::SaslError { code, .. }) => assert_eq!(code, SaslCode::Auth, "{user}"),
            other => {
                return Err(format!("{user}/{pw}: expected a SASL failure, got {other:?}").into());
            }
        }
    }
    // ANONYMOUS is not offered while authentication is required.
    assert!(open(addr, SaslProfile::Anonymous).await.is_err());
    let device = Device::connect(addr, "dev1@a1", "pw-1").await?;
    device.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn unsettled_telemetry_is_accepted_only_after_the_consumer_accepted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("a2", "dev1", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/a2").await?;
    let mut device = Device::connect(amqp_addr(&ferry)?, "dev1@a2", "pw").await?;

    // Three deliveries in flight on one link at once: the consumer holds all three unsettled.
    let mut pending = Vec::new();
    for i in 0..3u8 {
        let sent = device
            .sender
            .send_batchable(message("telemetry", Some("text/plain"), &[b'0' + i]))
            .await?;
        pending.push(Box::pin(sent));
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            consumer
                .next_unsettled(WAIT)
                .await?
                .ok_or("a message did not arrive")?,
        );
    }
    let first = held.first().ok_or("nothing held")?;
    let props = first
        .message()
        .application_properties
        .as_ref()
        .ok_or("no properties")?;
    assert!(format!("{:?}", props.0.get("orig_adapter")).contains("hono-amqp"));
    assert!(format!("{:?}", props.0.get("qos")).contains('1'));
    assert!(format!("{:?}", props.0.get("orig_address")).contains("telemetry"));
    // No outcome reaches the device while the application has not settled.
    let first_pending = pending.first_mut().ok_or("nothing pending")?;
    assert!(tokio::time::timeout(QUIET, first_pending).await.is_err());

    // Accepted, accepted, and a rejection by the consumer, which the device sees as released.
    let settlements = [true, true, false];
    for (delivery, accept) in held.iter().zip(settlements) {
        consumer.settle(delivery, accept).await?;
    }
    let mut outcomes = Vec::new();
    for sent in pending {
        outcomes.push(tokio::time::timeout(WAIT, sent).await??);
    }
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                Outcome::Accepted(_),
                Outcome::Accepted(_),
                Outcome::Released(_)
            ]
        ),
        "{outcomes:?}"
    );

    device.close().await;
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn presettled_telemetry_and_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("a3", "dev1", "pw").await?;
    let addr = amqp_addr(&ferry)?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/a3").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/a3").await?;

    let connection = open(addr, plain("dev1@a3", "pw")).await?;
    let mut presettled = Device::attach(connection, SenderSettleMode::Settled).await?;
    presettled
        .send("t", Some("text/plain"), b"at most once")
        .await?;
    let msg = telemetry.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.payload, b"at most once");
    assert_eq!(msg.prop("qos").as_deref(), Some("0"));
    // A pre-settled event is not forwarded (events are at least once).
    presettled.send("e", Some("text/plain"), b"lost").await?;
    assert!(events.next(QUIET).await?.is_none());
    presettled.close().await;

    let mut device = Device::connect(addr, "dev1@a3", "pw").await?;
    let outcome = device
        .send("event", Some("text/plain"), b"an event")
        .await?;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let msg = events.next(WAIT).await?.ok_or("no event")?;
    assert_eq!(msg.payload, b"an event");
    assert!(msg.durable);
    assert_eq!(msg.prop("orig_adapter").as_deref(), Some("hono-amqp"));
    assert_eq!(msg.prop("orig_address").as_deref(), Some("event"));

    device.close().await;
    telemetry.close().await;
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn each_outcome_comes_from_its_cause() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.tenant("a4", json!({})).await?;
    ferry.device("a4", "gw", json!({})).await?;
    ferry.password("a4", "gw", "pw").await?;
    ferry
        .device("a4", "off", json!({"via": ["gw"], "enabled": false}))
        .await?;
    ferry.device("a4", "stranger", json!({})).await?;
    let mut device = Device::connect(amqp_addr(&ferry)?, "gw@a4", "pw").await?;

    // released: nobody consumes the tenant's telemetry.
    let outcome = device.send("t", Some("text/plain"), b"x").await?;
    assert!(matches!(outcome, Outcome::Released(_)), "{outcome:?}");
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/a4").await?;

    // hono:bad-request: an empty body without a content type; an unknown address.
    let outcome = device.send("t", None, b"").await?;
    let bad = ErrorCondition::Custom(Symbol::from("hono:bad-request"));
    assert_eq!(rejected_with(&outcome), Some(bad.clone()));
    let outcome = device
        .send("telemetry/a4", Some("text/plain"), b"x")
        .await?;
    assert_eq!(rejected_with(&outcome), Some(bad));

    // amqp:not-found: a disabled device behind the gateway (not terminal for the gateway).
    let outcome = device.send("t//off", Some("text/plain"), b"x").await?;
    assert_eq!(rejected_with(&outcome), Some(AmqpError::NotFound.into()));

    // amqp:unauthorized-access: a device that does not list the gateway.
    let outcome = device.send("t//stranger", Some("text/plain"), b"x").await?;
    assert_eq!(
        rejected_with(&outcome),
        Some(AmqpError::UnauthorizedAccess.into())
    );

    // The connection survived all of that.
    let (outcome, msg) = send_consumed(&mut device, &mut consumer, "t", b"still here").await?;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    assert_eq!(msg.payload, b"still here");

    device.close().await;
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// The error condition the adapter closed a freshly opened connection with.
async fn refused_at_connect(
    addr: SocketAddr,
    user: &str,
    pw: &str,
) -> Result<ErrorCondition, Error> {
    match open(addr, plain(user, pw)).await {
        Err(OpenError::RemoteClosedWithError(e)) => Ok(e.condition),
        Err(e) => Err(e.into()),
        Ok(mut connection) => match tokio::time::timeout(WAIT, connection.on_close()).await? {
            Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => Ok(e.condition),
            other => Err(format!("expected a close with an error, got {other:?}").into()),
        },
    }
}

async fn put(ferry: &TestGateway, path: &str, body: serde_json::Value) -> TestResult {
    let r = ferry
        .client
        .put(ferry.mgmt(path))
        .json(&body)
        .send()
        .await?;
    assert_eq!(r.status(), 204, "PUT {path}");
    Ok(())
}

#[tokio::test]
async fn a_tenant_that_disallows_the_adapter_is_refused_at_connect() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let addr = amqp_addr(&ferry)?;

    // The tenant does not allow the AMQP adapter: refused when connecting.
    let amqp_off = json!({"adapters": [{"type": "hono-amqp", "enabled": false}]});
    ferry.tenant("a5", amqp_off).await?;
    ferry.device("a5", "dev1", json!({})).await?;
    ferry.password("a5", "dev1", "pw").await?;
    let condition = refused_at_connect(addr, "dev1@a5", "pw").await?;
    assert_eq!(condition, AmqpError::UnauthorizedAccess.into());

    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_tenant_connection_limit_refuses_further_devices() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let addr = amqp_addr(&ferry)?;
    ferry
        .tenant("a13", json!({"resource-limits": {"max-connections": 1}}))
        .await?;
    ferry.device("a13", "dev1", json!({})).await?;
    ferry.password("a13", "dev1", "pw").await?;
    let first = Device::connect(addr, "dev1@a13", "pw").await?;
    let condition = refused_at_connect(addr, "dev1@a13", "pw").await?;
    assert_eq!(condition, AmqpError::UnauthorizedAccess.into());
    first.close().await;
    // The place is free once the adapter has closed its side.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(device) = Device::connect(addr, "dev1@a13", "pw").await {
            again = Some(device);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    again
        .ok_or("no connection after the first one closed")?
        .close()
        .await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn gateway_forms_and_an_oversized_payload() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.tenant("a7", json!({})).await?;
    ferry.device("a7", "gw", json!({})).await?;
    ferry.password("a7", "gw", "pw").await?;
    ferry.device("a7", "behind", json!({"via": ["gw"]})).await?;
    ferry.tenant("other", json!({})).await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/a7").await?;
    let mut device = Device::connect(amqp_addr(&ferry)?, "gw@a7", "pw").await?;

    for to in ["t//behind", "telemetry/a7/behind"] {
        let (outcome, msg) = send_consumed(&mut device, &mut consumer, to, to.as_bytes()).await?;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{to}: {outcome:?}");
        assert_eq!(msg.payload, to.as_bytes());
        assert_eq!(msg.prop("device_id").as_deref(), Some("behind"));
        assert_eq!(msg.prop("gateway_id").as_deref(), Some("gw"));
        assert_eq!(msg.prop("orig_address").as_deref(), Some(to));
    }
    // Another tenant's device: refused, not terminal.
    let outcome = device
        .send("t/other/behind", Some("text/plain"), b"x")
        .await?;
    assert_eq!(
        rejected_with(&outcome),
        Some(AmqpError::UnauthorizedAccess.into())
    );

    // Exactly at the limit is fine; one byte more closes the link.
    let (outcome, msg) = send_consumed(&mut device, &mut consumer, "t", &[b'a'; 2048]).await?;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    assert_eq!(msg.payload.len(), 2048);
    let sent =
        tokio::time::timeout(WAIT, device.send("t", Some("text/plain"), &[b'a'; 2049])).await?;
    assert!(sent.is_err(), "{sent:?}");
    assert!(consumer.next(QUIET).await?.is_none());

    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn unauthenticated_devices_name_tenant_and_device() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.amqp.authentication_required = false;
    let ferry = TestGateway::start_with(config).await?;
    ferry
        .tenant(
            "a8",
            json!({"adapters": [{"type": "hono-amqp", "enabled": true, "device-authentication-required": false}]}),
        )
        .await?;
    ferry.device("a8", "dev1", json!({})).await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/a8").await?;
    let connection = open(amqp_addr(&ferry)?, SaslProfile::Anonymous).await?;
    let mut device = Device::attach(connection, SenderSettleMode::Mixed).await?;

    let (outcome, msg) = send_consumed(&mut device, &mut consumer, "t/a8/dev1", b"anon").await?;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    assert_eq!(msg.prop("device_id").as_deref(), Some("dev1"));
    let outcome = device.send("t", Some("text/plain"), b"who?").await?;
    assert_eq!(
        rejected_with(&outcome),
        Some(ErrorCondition::Custom(Symbol::from("hono:bad-request")))
    );

    device.close().await;
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn telemetry_over_tls() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("a9", "dev1", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/a9").await?;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.path().join("tls/server-cert.pem"))? {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(ferry::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let addr = ferry.addrs.amqps.ok_or("no AMQP TLS listener")?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let connection = Connection::builder()
        .container_id("tls-device")
        .sasl_profile(plain("dev1@a9", "pw"))
        .open_with_stream(stream)
        .await?;
    let mut device = Device::attach(connection, SenderSettleMode::Mixed).await?;
    let (outcome, msg) = send_consumed(&mut device, &mut consumer, "t", b"over tls").await?;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    assert_eq!(msg.payload, b"over tls");

    device.close().await;
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// A TCP relay in front of the adapter for one connection. While `mute` is set it swallows what
/// the device sends; the returned receiver fires when the adapter closed its side.
async fn relay(
    target: SocketAddr,
    mute: Arc<AtomicBool>,
) -> Result<(SocketAddr, oneshot::Receiver<()>), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (closed_tx, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((device, _)) = listener.accept().await else {
            return;
        };
        let Ok(adapter) = tokio::net::TcpStream::connect(target).await else {
            return;
        };
        let (mut device_rx, mut device_tx) = device.into_split();
        let (mut adapter_rx, mut adapter_tx) = adapter.into_split();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = device_rx.read(&mut buf).await {
                let bytes = buf.get(..n).unwrap_or_default();
                if !mute.load(Ordering::SeqCst) && adapter_tx.write_all(bytes).await.is_err() {
                    break;
                }
            }
        });
        let _ = tokio::io::copy(&mut adapter_rx, &mut device_tx).await;
        let _ = closed_tx.send(());
    });
    Ok((addr, closed_rx))
}

#[tokio::test]
async fn a_silent_device_is_disconnected_after_the_idle_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.amqp.idle_timeout = Duration::from_secs(2);
    let ferry = TestGateway::start_with(config).await?;
    ferry.provision("a10", "dev1", "pw").await?;
    let mute = Arc::new(AtomicBool::new(false));
    let (addr, mut closed) = relay(amqp_addr(&ferry)?, Arc::clone(&mute)).await?;
    let device = Device::connect(addr, "dev1@a10", "pw").await?;
    // fe2o3 sends empty frames at half the announced idle timeout: the connection stays up.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut closed)
            .await
            .is_err()
    );
    mute.store(true, Ordering::SeqCst);
    assert!(tokio::time::timeout(WAIT, closed).await.is_ok());
    drop(device);
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.amqp.max_connections = 1;
    let ferry = TestGateway::start_with(config).await?;
    ferry.provision("a11", "dev1", "pw").await?;
    let addr = amqp_addr(&ferry)?;
    let first = Device::connect(addr, "dev1@a11", "pw").await?;
    let second = tokio::spawn(async move { Device::connect(addr, "dev1@a11", "pw").await });
    tokio::time::sleep(QUIET).await;
    assert!(!second.is_finished(), "a second connection was served");
    first.close().await;
    let second = tokio::time::timeout(WAIT, second)
        .await?
        .map_err(|e| e.to_string())??;
    second.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn disabling_a_device_or_its_tenant_closes_open_connections() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let addr = amqp_addr(&ferry)?;
    ferry.provision("a14", "dev1", "pw").await?;
    ferry.device("a14", "dev2", json!({})).await?;
    ferry.password("a14", "dev2", "pw").await?;
    let mut dev1 = Device::connect(addr, "dev1@a14", "pw").await?;
    let mut dev2 = Device::connect(addr, "dev2@a14", "pw").await?;

    put(&ferry, "/devices/a14/dev1", json!({"enabled": false})).await?;
    match tokio::time::timeout(WAIT, dev1.connection.on_close()).await? {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => {
            assert_eq!(e.condition, AmqpError::NotFound.into());
        }
        other => return Err(format!("dev1: expected a close with an error, got {other:?}").into()),
    }
    // The other device of the tenant stays connected.
    assert!(
        tokio::time::timeout(QUIET, dev2.connection.on_close())
            .await
            .is_err()
    );

    put(&ferry, "/tenants/a14", json!({"enabled": false})).await?;
    match tokio::time::timeout(WAIT, dev2.connection.on_close()).await? {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => {
            assert_eq!(e.condition, AmqpError::UnauthorizedAccess.into());
        }
        other => return Err(format!("dev2: expected a close with an error, got {other:?}").into()),
    }
    ferry.stop().await;
    Ok(())
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the adapter's TLS port, presenting `cert` as the client certificate if
/// given.
async fn tls_stream(
    ferry: &TestGateway,
    dir: &std::path::Path,
    cert: Option<&TestCert>,
) -> Result<TlsStream, Error> {
    tls_stream_with(ferry, dir, cert, rustls::DEFAULT_VERSIONS).await
}

/// [`tls_stream`] offering only the TLS `versions` given.
async fn tls_stream_with(
    ferry: &TestGateway,
    dir: &std::path::Path,
    cert: Option<&TestCert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<TlsStream, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for server_cert in CertificateDer::pem_file_iter(dir.join("tls/server-cert.pem"))? {
        roots.add(server_cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(ferry::tls::provider())
        .with_protocol_versions(versions)?
        .with_root_certificates(roots);
    let tls = match cert {
        Some(cert) => builder.with_client_auth_cert(
            cert.chain.clone(),
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let addr = ferry.addrs.amqps.ok_or("no AMQP TLS listener")?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    Ok(connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

/// Opens a connection on the TLS port with a SASL profile fe2o3 runs (PLAIN).
async fn open_tls(
    ferry: &TestGateway,
    dir: &std::path::Path,
    cert: Option<&TestCert>,
    profile: SaslProfile,
) -> Result<Result<ConnectionHandle<()>, OpenError>, Error> {
    let stream = tls_stream(ferry, dir, cert).await?;
    Ok(Connection::builder()
        .container_id("cert-device")
        .sasl_profile(profile)
        .open_with_stream(stream)
        .await)
}

async fn write_sasl_frame(stream: &mut TlsStream, frame: SaslFrame) -> Result<(), Error> {
    let mut body = bytes::BytesMut::new();
    FrameCodec {}.encode(frame, &mut body)?;
    stream
        .write_all(&u32::try_from(body.len() + 4)?.to_be_bytes())
        .await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_sasl_frame(stream: &mut TlsStream) -> Result<SaslFrame, Error> {
    let size = usize::try_from(stream.read_u32().await?)?;
    let mut body = bytes::BytesMut::zeroed(size.checked_sub(4).ok_or("short SASL frame")?);
    stream.read_exact(&mut body).await?;
    Ok(FrameCodec {}
        .decode(&mut body)?
        .ok_or("incomplete SASL frame")?)
}

/// Runs SASL EXTERNAL by hand: fe2o3-amqp 0.18.4 refuses `SaslProfile::External` on a stream it
/// did not secure itself (`InvalidSchemeForSaslExternal`), and its own TLS needs a feature the
/// workspace does not enable. Returns the mechanisms the adapter offered and its outcome.
async fn sasl_external(stream: &mut TlsStream) -> Result<(Vec<String>, SaslCode), Error> {
    stream.write_all(b"AMQP\x03\x01\x00\x00").await?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
    let SaslFrame::Mechanisms(offered) = read_sasl_frame(stream).await? else {
        return Err("expected sasl-mechanisms".into());
    };
    let offered: Vec<String> = offered
        .sasl_server_mechanisms
        .0
        .iter()
        .map(|m| m.0.clone())
        .collect();
    let init = SaslInit {
        mechanism: Symbol::from("EXTERNAL"),
        initial_response: None,
        hostname: None,
    };
    write_sasl_frame(stream, SaslFrame::Init(init)).await?;
    let SaslFrame::Outcome(outcome) = read_sasl_frame(stream).await? else {
        return Err("expected sasl-outcome".into());
    };
    Ok((offered, outcome.code))
}

/// Connects with SASL EXTERNAL and opens the AMQP connection over the authenticated stream.
async fn open_external(
    ferry: &TestGateway,
    dir: &std::path::Path,
    cert: &TestCert,
) -> Result<ConnectionHandle<()>, Error> {
    let stream = tls_stream(ferry, dir, Some(cert)).await?;
    external_on(stream).await
}

/// Runs SASL EXTERNAL on `stream` and opens the AMQP connection over it.
async fn external_on(mut stream: TlsStream) -> Result<ConnectionHandle<()>, Error> {
    let (offered, code) = sasl_external(&mut stream).await?;
    assert_eq!(offered, ["EXTERNAL", "PLAIN"], "EXTERNAL comes first");
    if code != SaslCode::Ok {
        return Err(format!("SASL EXTERNAL failed: {code:?}").into());
    }
    // No SASL profile: fe2o3 starts with the plain AMQP header, as after a SASL layer.
    Ok(Connection::builder()
        .container_id("cert-device")
        .open_with_stream(stream)
        .await?)
}

/// Expects the SASL `auth` outcome.
fn assert_sasl_auth(
    what: &str,
    outcome: Result<ConnectionHandle<()>, OpenError>,
) -> Result<(), Error> {
    match outcome {
        Err(OpenError::SaslError { code, .. }) => {
            assert_eq!(code, SaslCode::Auth, "{what}");
            Ok(())
        }
        other => Err(format!("{what}: expected a SASL auth failure, got {other:?}").into()),
    }
}

/// Expects EXTERNAL with `cert` to be offered and to fail with the `auth` outcome.
async fn assert_external_refused(
    ferry: &TestGateway,
    dir: &std::path::Path,
    cert: &TestCert,
    what: &str,
) -> Result<(), Error> {
    let mut stream = tls_stream(ferry, dir, Some(cert)).await?;
    let (offered, code) = sasl_external(&mut stream).await?;
    assert_eq!(offered, ["EXTERNAL", "PLAIN"], "{what}");
    assert_eq!(code, SaslCode::Auth, "{what}");
    Ok(())
}

#[tokio::test]
async fn external_authenticates_a_registered_device_by_its_certificate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("amqp-external")?;
    ferry
        .tenant("x1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    let cert = ca.device("meter-1")?;
    ferry.device("x1", "d1", json!({})).await?;
    ferry
        .x509_credential("x1", "d1", &cert.subject_dn())
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/x1").await?;

    // TLS 1.3 (served on adapter-core's record layer after the handshake) and TLS 1.2 (served by
    // rustls): the chain read from either session authenticates the device.
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let stream = tls_stream_with(&ferry, dir.path(), Some(&cert), &[version]).await?;
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        let connection = external_on(stream).await?;
        let mut device = Device::attach(connection, SenderSettleMode::Mixed).await?;
        let (outcome, msg) =
            send_consumed(&mut device, &mut consumer, "t", b"by certificate").await?;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        assert_eq!(msg.payload, b"by certificate");
        assert_eq!(msg.prop("device_id").as_deref(), Some("d1"));
        assert_eq!(msg.prop("tenant_id").as_deref(), Some("x1"));
        device.close().await;
    }

    // Without a client certificate EXTERNAL is not offered, and choosing it anyway fails.
    let mut stream = tls_stream(&ferry, dir.path(), None).await?;
    let (offered, code) = sasl_external(&mut stream).await?;
    assert_eq!(offered, ["PLAIN"]);
    assert_eq!(code, SaslCode::Auth);
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// Reads `consumer` until an event with `payload` and a provisioning notification arrived.
async fn event_and_notification(
    consumer: &mut AmqpConsumer,
    payload: &[u8],
) -> Result<(Received, Received), Error> {
    const NOTIFICATION: &str = "application/vnd.eclipse-hono-device-provisioning-notification";
    let (mut event, mut notification) = (None, None);
    while event.is_none() || notification.is_none() {
        let msg = consumer
            .next(WAIT)
            .await?
            .ok_or("the event or the notification did not arrive")?;
        if msg.content_type.as_deref() == Some(NOTIFICATION) {
            notification = Some(msg);
        } else if msg.payload == payload {
            event = Some(msg);
        }
    }
    Ok((
        event.ok_or("no event")?,
        notification.ok_or("no notification")?,
    ))
}

#[tokio::test]
async fn external_auto_provisions_a_new_certificate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("amqp-provisioning")?;
    let mut trusted = ca.trusted_ca();
    trusted["auto-provisioning-enabled"] = json!(true);
    trusted["auto-provisioning-device-id-template"] = json!("auto-{{subject-cn}}");
    ferry.tenant("x2", json!({"trusted-ca": [trusted]})).await?;
    assert!(ferry.read_device("x2", "auto-sensor-9").await?.is_none());
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/x2").await?;
    let cert = ca.device("sensor-9")?;

    let connection = open_external(&ferry, dir.path(), &cert).await?;
    let mut device = Device::attach(connection, SenderSettleMode::Unsettled).await?;
    let (outcome, received) = tokio::join!(
        device.send("event", Some("text/plain"), b"first event"),
        event_and_notification(&mut events, b"first event")
    );
    let outcome = outcome?;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let (event, notification) = received?;
    assert_eq!(event.prop("device_id").as_deref(), Some("auto-sensor-9"));
    assert_eq!(
        notification.prop("device_id").as_deref(),
        Some("auto-sensor-9")
    );
    assert_eq!(
        notification.prop("hono_registration_status").as_deref(),
        Some("NEW")
    );
    assert_eq!(notification.prop("tenant_id").as_deref(), Some("x2"));
    device.close().await;

    let doc = ferry
        .read_device("x2", "auto-sensor-9")
        .await?
        .ok_or("device not created")?;
    assert_eq!(doc["status"]["auto-provisioned"], json!(true));
    let credentials = ferry.read_credentials("x2", "auto-sensor-9").await?;
    assert_eq!(credentials[0]["auth-id"], json!(cert.subject_dn()));
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn external_refuses_untrusted_and_unknown_certificates() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let trusted = TestCa::root("amqp-trusted")?;
    ferry
        .tenant("x3", json!({"trusted-ca": [trusted.trusted_ca()]}))
        .await?;
    let registered = trusted.device("known")?;
    ferry.device("x3", "d1", json!({})).await?;
    ferry
        .x509_credential("x3", "d1", &registered.subject_dn())
        .await?;

    // A CA no tenant trusts.
    let stranger = TestCa::root("amqp-untrusted")?.device("known")?;
    assert_external_refused(&ferry, dir.path(), &stranger, "untrusted CA").await?;
    // A trusted CA, but no device has the certificate and the CA does not auto-provision.
    let unknown = trusted.device("unknown")?;
    assert_external_refused(&ferry, dir.path(), &unknown, "unregistered certificate").await?;
    assert_eq!(ferry.devices("x3").await?.len(), 1);
    // The registered certificate of the same CA still gets in.
    let connection = open_external(&ferry, dir.path(), &registered).await?;
    let device = Device::attach(connection, SenderSettleMode::Mixed).await?;
    device.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn plain_still_works_on_the_tls_port_next_to_external() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("amqp-plain-too")?;
    ferry
        .tenant("x4", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    ferry.device("x4", "d1", json!({})).await?;
    ferry.password("x4", "d1", "pw-4").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/x4").await?;
    // The certificate belongs to no device: choosing PLAIN, the password decides.
    let cert = ca.device("unregistered")?;

    for presented in [None, Some(&cert)] {
        let wrong = open_tls(&ferry, dir.path(), presented, plain("d1@x4", "wrong")).await?;
        assert_sasl_auth("wrong password", wrong)?;
        let connection = open_tls(&ferry, dir.path(), presented, plain("d1@x4", "pw-4")).await??;
        let mut device = Device::attach(connection, SenderSettleMode::Mixed).await?;
        let (outcome, msg) = send_consumed(&mut device, &mut consumer, "t", b"by password").await?;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        assert_eq!(msg.prop("device_id").as_deref(), Some("d1"));
        device.close().await;
    }
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// Reads the next connection event on `events` and checks what every one carries.
async fn connection_event(
    events: &mut AmqpConsumer,
    device: &str,
    remote_id: &str,
) -> Result<String, Error> {
    let event = events.next(WAIT).await?.ok_or("no connection event")?;
    assert_eq!(
        event.content_type.as_deref(),
        Some("application/vnd.eclipse-hono-dc-notification+json")
    );
    assert_eq!(event.prop("device_id").as_deref(), Some(device));
    let payload: serde_json::Value = serde_json::from_slice(&event.payload)?;
    assert_eq!(payload["remote-id"], remote_id);
    assert_eq!(payload["source"], "hono-amqp");
    Ok(payload["cause"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn connection_events_announce_connect_and_every_kind_of_disconnect() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.amqp.connection_events = true;
    config.amqp.idle_timeout = Duration::from_secs(2);
    let ferry = TestGateway::start_with(config).await?;
    let addr = amqp_addr(&ferry)?;
    ferry.provision("a15", "dev1", "pw").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/a15").await?;

    // The device closes its connection.
    let device = Device::connect(addr, "dev1@a15", "pw").await?;
    assert_eq!(
        connection_event(&mut events, "dev1", "test-device").await?,
        "connected"
    );
    device.close().await;
    assert_eq!(
        connection_event(&mut events, "dev1", "test-device").await?,
        "disconnected"
    );

    // The device falls silent: the idle timeout ends the connection.
    let mute = Arc::new(AtomicBool::new(false));
    let (relayed, closed) = relay(addr, Arc::clone(&mute)).await?;
    let silent = Device::connect(relayed, "dev1@a15", "pw").await?;
    assert_eq!(
        connection_event(&mut events, "dev1", "test-device").await?,
        "connected"
    );
    mute.store(true, Ordering::SeqCst);
    tokio::time::timeout(WAIT, closed).await??;
    assert_eq!(
        connection_event(&mut events, "dev1", "test-device").await?,
        "disconnected"
    );
    drop(silent);

    // The device is disabled while connected: it is disconnected and the event still goes out.
    let mut device = Device::connect(addr, "dev1@a15", "pw").await?;
    assert_eq!(
        connection_event(&mut events, "dev1", "test-device").await?,
        "connected"
    );
    put(&ferry, "/devices/a15/dev1", json!({"enabled": false})).await?;
    assert!(
        tokio::time::timeout(WAIT, device.connection.on_close())
            .await?
            .is_err()
    );
    assert_eq!(
        connection_event(&mut events, "dev1", "test-device").await?,
        "disconnected"
    );

    // A refused connection sends nothing.
    assert!(open(addr, plain("dev1@a15", "wrong")).await.is_err());
    assert!(events.next(QUIET).await?.is_none());
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn no_connection_events_unless_configured() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("a16", "dev1", "pw").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/a16").await?;
    let device = Device::connect(amqp_addr(&ferry)?, "dev1@a16", "pw").await?;
    device.close().await;
    assert!(events.next(QUIET).await?.is_none());
    events.close().await;
    ferry.stop().await;
    Ok(())
}
