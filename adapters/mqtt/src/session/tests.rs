//! The session's phases driven over an in-memory stream, with the fake registry and northbound
//! of `ferry_adapter_core::test_util`; timeouts run on tokio's paused clock.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_adapter_core::test_util::{Failure, FakeNorthbound, FakeRegistry, tenant};
use ferry_adapter_core::{AdapterContext, CoreConfig};
use ferry_registry_client::{DeviceId, TenantId};
use rmqtt_codec::v3;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::*;

type R = Result<(), Box<dyn std::error::Error>>;

struct Harness {
    client: DuplexStream,
    buf: BytesMut,
    codec: v3::Codec,
    registry: Arc<FakeRegistry>,
    northbound: Arc<FakeNorthbound>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn shared(
    registry: Arc<FakeRegistry>,
    northbound: Arc<FakeNorthbound>,
    shutdown: CancellationToken,
) -> Arc<Shared> {
    let ctx = AdapterContext::new(
        &CoreConfig::default(),
        crate::ADAPTER_TYPE,
        registry,
        northbound,
        shutdown,
    );
    let watch = Arc::new(crate::watch::ConnectionWatch::new(ctx.forwarder.clone()));
    Arc::new(Shared {
        ctx,
        max_payload_size: 16,
        max_packet_size: 1024,
        connect_timeout: Duration::from_secs(2),
        tls_handshake_timeout: Duration::from_secs(2),
        authentication_required: true,
        connection_events: false,
        max_in_flight: 2,
        tenants: Arc::new(TenantConnections::default()),
        watch,
        serving: Arc::new(ServingConnections::new()),
    })
}

impl Harness {
    fn start(with_permit: bool) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_tls(with_permit, None)
    }

    /// Like [`Harness::start`], for a TLS connection whose handshake told `tls_peer`.
    fn start_tls(
        with_permit: bool,
        tls_peer: Option<TlsPeer>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let registry = Arc::new(FakeRegistry::new());
        let t = TenantId::parse("t")?;
        registry.add_tenant(tenant(json!({"tenant-id": "t"}))?);
        registry.add_password_device(&t, &DeviceId::parse("d")?, "d", "pw");
        let northbound = Arc::new(FakeNorthbound::new());
        let shutdown = CancellationToken::new();
        let (client, server) = tokio::io::duplex(4096);
        let permit = match with_permit {
            true => Some(Arc::new(Semaphore::new(1)).try_acquire_owned()?),
            false => None,
        };
        let shared = shared(
            Arc::clone(&registry),
            Arc::clone(&northbound),
            shutdown.clone(),
        );
        tokio::spawn(Arc::clone(&shared.serving).sweep(shutdown.clone()));
        let awaiting = AwaitingConnect {
            transport: Transport::new(server, 1024),
            shared,
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            permit: permit.map(Permit::Within),
            tls_peer,
        };
        Ok(Self {
            client,
            buf: BytesMut::new(),
            codec: v3::Codec::new(0),
            registry,
            northbound,
            shutdown,
            task: tokio::spawn(run(awaiting)),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> R {
        self.client.write_all(bytes).await?;
        Ok(())
    }

    /// The next packet from the adapter; `None` once it closed the stream.
    async fn next(&mut self) -> Result<Option<v3::Packet>, Box<dyn std::error::Error>> {
        loop {
            if let Some((packet, _)) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(packet));
            }
            if self.client.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn connack(&mut self) -> Result<u8, Box<dyn std::error::Error>> {
        match self.next().await? {
            Some(v3::Packet::ConnectAck(ack)) => {
                assert!(!ack.session_present);
                Ok(u8::from(ack.return_code))
            }
            other => Err(format!("expected CONNACK, got {other:?}").into()),
        }
    }
}

/// MQTT 3.1.1 CONNECT, client id `c`, keep-alive `keep_alive`, user and password.
fn connect(version: u8, keep_alive: u16, user: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, 0xC2];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if version == 5 {
        body.push(0); // no properties
    }
    for field in ["c", user, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// MQTT 3.1.1 PUBLISH.
fn publish(topic: &str, qos: u8, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let mut packet = vec![0x30 | (qos << 1), body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

fn puback(id: u16) -> Option<v3::Packet> {
    NonZeroU16::new(id).map(|packet_id| v3::Packet::PublishAck { packet_id })
}

#[tokio::test]
async fn connect_publish_and_puback_after_the_northbound() -> R {
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    h.send(&publish("t", 1, 7, b"hi")).await?;
    assert_eq!(h.next().await?, puback(7));
    let sent = h.northbound.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].payload.as_ref(), b"hi");
    assert_eq!(sent[0].orig_adapter, "hono-mqtt");
    h.send(&[0xC0, 0x00]).await?;
    assert_eq!(h.next().await?, Some(v3::Packet::PingResponse));
    h.send(&[0xE0, 0x00]).await?;
    assert_eq!(h.next().await?, None);
    h.task.await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn pubacks_keep_arrival_order_with_several_in_flight() -> R {
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 0, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    h.northbound.set_delay(Some(Duration::from_millis(100)));
    for id in 1..=4 {
        h.send(&publish("t", 1, id, b"x")).await?;
    }
    for id in 1..=4 {
        assert_eq!(h.next().await?, puback(id));
    }
    assert_eq!(h.northbound.sent().len(), 4);
    Ok(())
}

#[tokio::test]
async fn refusals_carry_their_connack_codes() -> R {
    // Wrong password: 0x04.
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 30, "d@t", "nope")).await?;
    assert_eq!(h.connack().await?, 0x04);
    assert_eq!(h.next().await?, None);
    // Registry unavailable: 0x03.
    let mut h = Harness::start(true)?;
    h.registry.set_unavailable(true);
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0x03);
    // Tenant disabled: 0x05.
    let mut h = Harness::start(true)?;
    h.registry
        .add_tenant(tenant(json!({"tenant-id": "t", "enabled": false}))?);
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0x05);
    // Adapter connection limit: 0x03 without even authenticating.
    let mut h = Harness::start(false)?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0x03);
    Ok(())
}

#[tokio::test]
async fn mqtt5_refusals_use_reason_codes() -> R {
    for (password, unavailable, permit, code) in [
        ("nope", false, true, 0x86u8),
        ("pw", true, true, 0x88),
        ("pw", false, false, 0x9C),
    ] {
        let mut h = Harness::start(permit)?;
        h.registry.set_unavailable(unavailable);
        h.send(&connect(5, 30, "d@t", password)).await?;
        // CONNACK v5: 0x20, remaining length, flags, reason code, properties.
        let mut head = [0u8; 4];
        h.client.read_exact(&mut head).await?;
        assert_eq!(
            (head[0], head[2], head[3]),
            (0x20, 0, code),
            "{password} {unavailable} {permit}"
        );
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn timeouts_close_the_connection() -> R {
    // No CONNECT within the connect timeout.
    let mut h = Harness::start(true)?;
    assert_eq!(h.next().await?, None);
    // Keep-alive 10 s: open at 14 s, closed by 15 s.
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 10, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    let started = tokio::time::Instant::now();
    assert_eq!(h.next().await?, None);
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_secs(15) && idle < Duration::from_secs(16),
        "{idle:?}"
    );
    // Keep-alive 10 s and a PINGREQ every 9 s: still open after a minute; then silent, closed
    // 15 s after the last PINGREQ.
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 10, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_secs(9)).await;
        h.send(&[0xC0, 0x00]).await?;
        assert_eq!(h.next().await?, Some(v3::Packet::PingResponse));
    }
    let last = tokio::time::Instant::now();
    assert_eq!(h.next().await?, None);
    // The sweeper wakes at the earliest deadline: closed at 15 s, not up to a sweep later.
    assert_eq!(last.elapsed(), Duration::from_secs(15));
    Ok(())
}

#[tokio::test]
async fn wrong_phase_garbage_and_oversized_payloads_close() -> R {
    // PUBLISH before CONNECT.
    let mut h = Harness::start(true)?;
    h.send(&publish("t", 0, 0, b"x")).await?;
    assert_eq!(h.next().await?, None);
    // Garbage.
    let mut h = Harness::start(true)?;
    h.send(b"\x00\x01garbage").await?;
    assert_eq!(h.next().await?, None);
    // A second CONNECT.
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.next().await?, None);
    // 17 bytes over a 16-byte limit, with on-error=ignore: dropped, closed.
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    h.send(&publish("t/?on-error=ignore", 1, 1, &[b'a'; 17]))
        .await?;
    assert_eq!(h.next().await?, None);
    assert!(h.northbound.sent().is_empty());
    Ok(())
}

#[tokio::test]
async fn error_subscription_receives_errors_and_the_puback_follows() -> R {
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    // SUBSCRIBE e///# and c///q/# (the second refused).
    let filters: [&[u8]; 2] = [b"e///#", b"c///q/#"];
    let mut body = vec![0, 9];
    for f in filters {
        body.extend_from_slice(&(f.len() as u16).to_be_bytes());
        body.extend_from_slice(f);
        body.push(0);
    }
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend_from_slice(&body);
    h.send(&packet).await?;
    match h.next().await? {
        Some(v3::Packet::SubscribeAck { status, .. }) => assert_eq!(
            status,
            vec![
                v3::SubscribeReturnCode::Success(rmqtt_codec::types::QoS::AtMostOnce),
                v3::SubscribeReturnCode::Failure
            ]
        ),
        other => return Err(format!("expected SUBACK, got {other:?}").into()),
    }
    h.northbound.set_failure(Some(Failure::NoConsumer));
    h.send(&publish("t", 1, 5, b"x")).await?;
    match h.next().await? {
        Some(v3::Packet::Publish(p)) => {
            assert_eq!(&*p.topic, "e///t/5/503");
            let body: serde_json::Value = serde_json::from_slice(&p.payload)?;
            assert_eq!(body["code"], 503);
        }
        other => return Err(format!("expected the error message, got {other:?}").into()),
    }
    assert_eq!(h.next().await?, puback(5));
    // Shutdown: the adapter closes the connection.
    h.shutdown.cancel();
    assert_eq!(h.next().await?, None);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_message_in_flight_finish_before_closing() -> R {
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 0, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    h.northbound.set_delay(Some(Duration::from_secs(1)));
    h.send(&publish("t", 1, 3, b"late")).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.shutdown.cancel();
    assert_eq!(h.next().await?, puback(3));
    assert_eq!(h.next().await?, None);
    assert_eq!(h.northbound.sent().len(), 1);
    h.task.await?;
    Ok(())
}

#[tokio::test]
async fn a_huge_packet_is_refused_from_its_header() -> R {
    let mut h = Harness::start(true)?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    // PUBLISH announcing 1 MiB: closed without waiting for (or buffering) the body.
    h.send(&[0x30, 0x80, 0x80, 0x40]).await?;
    assert_eq!(h.next().await?, None);
    assert!(h.northbound.sent().is_empty());
    Ok(())
}

/// A TLS peer presenting a device certificate of a CA that no tenant trusts.
fn untrusted_peer() -> Result<TlsPeer, Box<dyn std::error::Error>> {
    let device = ferry_registry_client::test_pki::TestCa::root("nobody trusts me")?.device("d")?;
    Ok(TlsPeer {
        chain: device.chain,
        sni: None,
    })
}

#[tokio::test]
async fn a_failing_client_certificate_is_refused_without_password_fallback() -> R {
    // The CONNECT carries the right password, but the certificate comes first and fails: 0x04.
    let mut h = Harness::start_tls(true, Some(untrusted_peer()?))?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0x04);
    assert_eq!(h.next().await?, None);
    // A malformed certificate: 0x04 as well.
    let garbage = TlsPeer {
        chain: vec![rustls::pki_types::CertificateDer::from(vec![
            0x30, 0x03, 1, 2, 3,
        ])],
        sni: None,
    };
    let mut h = Harness::start_tls(true, Some(garbage))?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0x04);
    // MQTT 5: 0x86.
    let mut h = Harness::start_tls(true, Some(untrusted_peer()?))?;
    h.send(&connect(5, 30, "d@t", "pw")).await?;
    let mut ack = [0u8; 4];
    h.client.read_exact(&mut ack).await?;
    assert_eq!(ack[0], 0x20, "{ack:?}");
    assert_eq!(ack[3], 0x86, "{ack:?}");
    Ok(())
}

#[tokio::test]
async fn a_client_certificate_with_the_registry_unavailable_is_server_unavailable() -> R {
    let mut h = Harness::start_tls(true, Some(untrusted_peer()?))?;
    h.registry.set_unavailable(true);
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0x03);
    Ok(())
}

#[tokio::test]
async fn a_tls_client_without_certificate_uses_its_password() -> R {
    let peer = TlsPeer {
        chain: Vec::new(),
        sni: Some("localhost".to_owned()),
    };
    let mut h = Harness::start_tls(true, Some(peer.clone()))?;
    h.send(&connect(4, 30, "d@t", "pw")).await?;
    assert_eq!(h.connack().await?, 0);
    let mut h = Harness::start_tls(true, Some(peer))?;
    h.send(&connect(4, 30, "d@t", "wrong")).await?;
    assert_eq!(h.connack().await?, 0x04);
    Ok(())
}
