//! End to end: the MQTT adapter through a whole Ferry (real registry, real northbound), with
//! rumqttc (3.1.1 and 5, plain and TLS) and raw TCP sockets as devices and fe2o3-amqp as the
//! application.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{AmqpConsumer, Error, TestGateway, TestResult};
use ferry_registry_client::test_pki::{TestCa, TestCert};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);
/// How long the tests wait to be sure something does *not* happen.
const QUIET: Duration = Duration::from_millis(700);

/// An MQTT 3.1.1 device driven by rumqttc; its event loop runs in a task and reports here.
struct Device {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
}

fn options(id: &str, addr: SocketAddr, credentials: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = credentials {
        o.set_credentials(user, password);
    }
    o
}

impl Device {
    fn start(options: MqttOptions) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, 32);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    break;
                }
            }
        });
        Self { client, events }
    }

    /// Connects; `Ok` once the CONNACK accepted, the refusal otherwise.
    async fn connect(options: MqttOptions) -> Result<Self, Error> {
        let mut device = Self::start(options);
        device
            .wait_for(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))))
            .await?;
        Ok(device)
    }

    /// The CONNACK refusal code, or an error if the connection was accepted.
    async fn refused(options: MqttOptions) -> Result<rumqttc::ConnectReturnCode, Error> {
        let mut device = Self::start(options);
        loop {
            match tokio::time::timeout(WAIT, device.events.recv()).await? {
                Some(Err(ConnectionError::ConnectionRefused(code))) => return Ok(code),
                Some(Err(e)) => return Err(format!("failed without CONNACK: {e}").into()),
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    return Err("connection was accepted".into());
                }
                Some(Ok(_)) => {}
                None => return Err("event loop ended".into()),
            }
        }
    }

    /// Waits for an event matching `want`; fails on a connection error or timeout.
    async fn wait_for(&mut self, want: impl Fn(&Event) -> bool) -> Result<Event, Error> {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await? {
                Some(Ok(event)) if want(&event) => return Ok(event),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection failed: {e}").into()),
                None => return Err("event loop ended".into()),
            }
        }
    }

    async fn puback(&mut self) -> Result<(), Error> {
        self.wait_for(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
            .await
            .map(drop)
    }

    /// No PUBACK (and no failure) within [`QUIET`].
    async fn no_puback(&mut self) -> Result<(), Error> {
        let quiet = tokio::time::sleep(QUIET);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                () = &mut quiet => return Ok(()),
                event = self.events.recv() => match event {
                    Some(Ok(Event::Incoming(Packet::PubAck(_)))) => return Err("unexpected PUBACK".into()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("connection failed: {e}").into()),
                    None => return Err("event loop ended".into()),
                },
            }
        }
    }

    /// The next PUBLISH from the adapter (an error message): topic and JSON payload.
    async fn error_message(&mut self) -> Result<(String, serde_json::Value), Error> {
        match self
            .wait_for(|e| matches!(e, Event::Incoming(Packet::Publish(_))))
            .await?
        {
            Event::Incoming(Packet::Publish(p)) => {
                Ok((p.topic.clone(), serde_json::from_slice(&p.payload)?))
            }
            _ => Err("not a publish".into()),
        }
    }

    /// Waits until the adapter closed the connection.
    async fn closed(&mut self) -> TestResult {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await? {
                Some(Err(_)) | None => return Ok(()),
                Some(Ok(Event::Incoming(Packet::Disconnect))) => return Ok(()),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The connection stays open for [`QUIET`].
    async fn still_open(&mut self) -> TestResult {
        let quiet = tokio::time::sleep(QUIET);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                () = &mut quiet => return Ok(()),
                event = self.events.recv() => match event {
                    Some(Ok(Event::Incoming(Packet::Disconnect))) => return Err("DISCONNECT".into()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("connection failed: {e}").into()),
                    None => return Err("event loop ended".into()),
                },
            }
        }
    }

    async fn subscribe(
        &mut self,
        filter: &str,
    ) -> Result<Vec<rumqttc::SubscribeReasonCode>, Error> {
        self.client.subscribe(filter, QoS::AtMostOnce).await?;
        match self
            .wait_for(|e| matches!(e, Event::Incoming(Packet::SubAck(_))))
            .await?
        {
            Event::Incoming(Packet::SubAck(s)) => Ok(s.return_codes),
            _ => Err("not a SUBACK".into()),
        }
    }

    async fn publish(&self, topic: &str, qos: QoS, payload: &[u8]) -> TestResult {
        self.client
            .publish(topic, qos, false, payload.to_vec())
            .await?;
        Ok(())
    }
}

fn mqtt_addr(ferry: &TestGateway) -> Result<SocketAddr, Error> {
    ferry
        .addrs
        .mqtt
        .ok_or_else(|| "no plain MQTT listener".into())
}

async fn start() -> Result<(tempfile::TempDir, TestGateway), Error> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ferry_adapter_mqtt=debug")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    Ok((dir, ferry))
}

#[tokio::test]
async fn telemetry_and_events_in_every_topic_form_reach_the_consumer() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/t1").await?;
    let addr = mqtt_addr(&ferry)?;
    let mut device = Device::connect(options("c1", addr, Some(("dev1@t1", "pw")))).await?;

    for (topic, qos) in [
        ("telemetry", QoS::AtMostOnce),
        ("t", QoS::AtLeastOnce),
        ("t/t1/dev1", QoS::AtLeastOnce),
        ("telemetry//dev1", QoS::AtMostOnce),
    ] {
        device.publish(topic, qos, topic.as_bytes()).await?;
        let (acked, msg) = tokio::join!(
            async {
                match qos {
                    QoS::AtLeastOnce => device.puback().await,
                    _ => Ok(()),
                }
            },
            telemetry.next(WAIT)
        );
        acked?;
        let msg = msg?.ok_or(format!("{topic}: nothing arrived"))?;
        assert_eq!(msg.payload, topic.as_bytes());
        assert_eq!(msg.prop("device_id").as_deref(), Some("dev1"));
        assert_eq!(msg.prop("orig_adapter").as_deref(), Some("hono-mqtt"));
        assert_eq!(msg.prop("orig_address").as_deref(), Some(topic));
        let want_qos = if qos == QoS::AtLeastOnce { "1" } else { "0" };
        assert_eq!(msg.prop("qos").as_deref(), Some(want_qos), "{topic}");
    }
    for topic in ["event", "e", "e/t1/dev1"] {
        device.publish(topic, QoS::AtLeastOnce, b"ev").await?;
        device.puback().await?;
        let msg = events
            .next(WAIT)
            .await?
            .ok_or(format!("{topic}: no event"))?;
        assert_eq!(msg.payload, b"ev");
        assert!(msg.durable, "{topic}");
    }
    // The property bag: content type and TTL.
    device
        .publish(
            "e/?content-type=application%2Fjson&hono-ttl=30",
            QoS::AtLeastOnce,
            b"{}",
        )
        .await?;
    let (acked, msg) = tokio::join!(device.puback(), events.next(WAIT));
    acked?;
    let msg = msg?.ok_or("no event with bag")?;
    assert_eq!(msg.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        msg.prop("orig_address").as_deref(),
        Some("e/?content-type=application%2Fjson&hono-ttl=30")
    );
    // Retain becomes the x-opt-retain annotation.
    device
        .client
        .publish("t", QoS::AtLeastOnce, true, b"retained".to_vec())
        .await?;
    let (acked, got) = tokio::join!(device.puback(), async {
        let (payload, delivery) = telemetry
            .next_unaccepted(WAIT)
            .await?
            .ok_or("no retained telemetry")?;
        let annotations = format!("{:?}", delivery.message().message_annotations);
        telemetry.accept(&delivery).await?;
        Ok::<_, Error>((payload, annotations))
    });
    acked?;
    let (payload, annotations) = got?;
    assert_eq!(payload, b"retained");
    assert!(
        annotations.contains("x-opt-retain") && annotations.contains("true"),
        "{annotations}"
    );
    telemetry.close().await;
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn puback_waits_for_the_consumer_to_accept() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let mut device =
        Device::connect(options("c1", mqtt_addr(&ferry)?, Some(("dev1@t1", "pw")))).await?;
    device.publish("t", QoS::AtLeastOnce, b"held").await?;
    let (payload, delivery) = consumer
        .next_unaccepted(WAIT)
        .await?
        .ok_or("nothing arrived")?;
    assert_eq!(payload, b"held");
    device.no_puback().await?;
    consumer.accept(&delivery).await?;
    device.puback().await?;

    // Several QoS 1 messages in flight at once on one connection: all acknowledged once the
    // consumer accepted them, none before.
    for i in 0..4u8 {
        device.publish("t", QoS::AtLeastOnce, &[i]).await?;
    }
    let mut pending = Vec::new();
    for _ in 0..4 {
        let (payload, delivery) = consumer
            .next_unaccepted(WAIT)
            .await?
            .ok_or("pipelined message missing")?;
        pending.push((payload, delivery));
    }
    let order: Vec<u8> = pending.iter().flat_map(|(p, _)| p.clone()).collect();
    assert_eq!(order, vec![0, 1, 2, 3]);
    device.no_puback().await?;
    for (_, delivery) in &pending {
        consumer.accept(delivery).await?;
    }
    for _ in 0..4 {
        device.puback().await?;
    }
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn connack_codes_come_from_their_causes() -> TestResult {
    use rumqttc::ConnectReturnCode as C;
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.mqtt.max_connections = 2;
    let ferry = TestGateway::start_with(config).await?;
    ferry.provision("t1", "dev1", "pw").await?;
    ferry
        .tenant(
            "off",
            json!({"adapters": [{"type": "hono-mqtt", "enabled": false}]}),
        )
        .await?;
    ferry.device("off", "d", json!({})).await?;
    ferry.password("off", "d", "pw").await?;
    let addr = mqtt_addr(&ferry)?;

    for (user, pw) in [
        ("dev1@t1", "wrong"),
        ("nobody@t1", "pw"),
        ("dev1@nope", "pw"),
        ("no-tenant", "pw"),
    ] {
        let code = Device::refused(options("c", addr, Some((user, pw)))).await?;
        assert_eq!(code, C::BadUserNamePassword, "{user}");
    }
    let code = Device::refused(options("c", addr, None)).await?;
    assert_eq!(code, C::BadUserNamePassword, "no credentials");
    let code = Device::refused(options("c", addr, Some(("d@off", "pw")))).await?;
    assert_eq!(code, C::NotAuthorized, "adapter disabled");
    ferry.tenant("disabled", json!({"enabled": false})).await?;
    ferry.device("disabled", "d", json!({})).await?;
    ferry.password("disabled", "d", "pw").await?;
    let code = Device::refused(options("c", addr, Some(("d@disabled", "pw")))).await?;
    assert_eq!(code, C::NotAuthorized, "tenant disabled");

    // The adapter's connection limit (2): the third connection is refused with 0x03.
    let _a = Device::connect(options("a", addr, Some(("dev1@t1", "pw")))).await?;
    let _b = Device::connect(options("b", addr, Some(("dev1@t1", "pw")))).await?;
    let code = Device::refused(options("c", addr, Some(("dev1@t1", "pw")))).await?;
    assert_eq!(code, C::ServiceUnavailable);
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn tenant_connection_limit_refuses_with_not_authorized() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry
        .tenant("lim", json!({"resource-limits": {"max-connections": 1}}))
        .await?;
    ferry.device("lim", "d", json!({})).await?;
    ferry.password("lim", "d", "pw").await?;
    let addr = mqtt_addr(&ferry)?;
    let first = Device::connect(options("a", addr, Some(("d@lim", "pw")))).await?;
    let code = Device::refused(options("b", addr, Some(("d@lim", "pw")))).await?;
    assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized);
    // The place is given back when the first connection ends.
    first.client.disconnect().await?;
    drop(first);
    let mut again = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(d) = Device::connect(options("c", addr, Some(("d@lim", "pw")))).await {
            again = Some(d);
            break;
        }
    }
    assert!(again.is_some(), "the tenant's place was not given back");
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn errors_follow_the_error_subscription_and_on_error() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let addr = mqtt_addr(&ferry)?;
    let creds = Some(("dev1@t1", "pw"));
    // No consumer for telemetry/t1: QoS 1 telemetry fails with 503.

    // default without an error subscription: disconnect.
    let mut d = Device::connect(options("a", addr, creds)).await?;
    d.publish("t", QoS::AtLeastOnce, b"x").await?;
    d.closed().await?;

    // default with an error subscription: the error is published, then the PUBACK.
    let mut d = Device::connect(options("b", addr, creds)).await?;
    let granted = d.subscribe("e///#").await?;
    assert_eq!(
        granted,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    d.publish("t/?correlation-id=c1", QoS::AtLeastOnce, b"x")
        .await?;
    let (topic, payload) = d.error_message().await?;
    assert_eq!(topic, "e///t/c1/503");
    assert_eq!(payload["code"], 503);
    assert_eq!(payload["correlation-id"], "c1");
    assert!(payload["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(payload["timestamp"].as_str().is_some());
    d.puback().await?;
    // Event with QoS 0: refused with 400, correlation id -1.
    d.publish("event", QoS::AtMostOnce, b"x").await?;
    let (topic, payload) = d.error_message().await?;
    assert_eq!(topic, "e///event/-1/400");
    assert_eq!(payload["code"], 400);
    // An unknown topic: 400.
    d.publish("bogus/?correlation-id=z", QoS::AtMostOnce, b"x")
        .await?;
    let (topic, _) = d.error_message().await?;
    assert!(topic.ends_with("/z/400"), "{topic}");

    // skip-ack with a subscription: error published, no PUBACK, connection kept.
    d.publish(
        "t/?on-error=skip-ack&correlation-id=s",
        QoS::AtLeastOnce,
        b"x",
    )
    .await?;
    let (topic, _) = d.error_message().await?;
    assert_eq!(topic, "e///t/s/503");
    d.no_puback().await?;
    // disconnect: closes even with a subscription.
    d.publish("telemetry/?on-error=disconnect", QoS::AtLeastOnce, b"x")
        .await?;
    d.closed().await?;

    // ignore without a subscription: PUBACK, connection kept.
    let mut d = Device::connect(options("c", addr, creds)).await?;
    d.publish("t/?on-error=ignore", QoS::AtLeastOnce, b"x")
        .await?;
    d.puback().await?;
    // Other subscriptions are refused (commands come later).
    let refused = d.subscribe("command///req/#").await?;
    assert_eq!(refused, vec![rumqttc::SubscribeReasonCode::Failure]);
    // QoS 2 is refused: with on-error=ignore the connection stays, nothing is forwarded.
    d.publish("t/?on-error=ignore", QoS::ExactlyOnce, b"x")
        .await?;
    d.no_puback().await?;
    d.publish("t/?on-error=ignore", QoS::AtLeastOnce, b"x")
        .await?;
    d.puback().await?;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn gateways_publish_for_their_devices_and_terminal_errors_disconnect() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry.provision("t1", "gw", "pw").await?;
    ferry.device("t1", "behind", json!({"via": ["gw"]})).await?;
    ferry.device("t1", "other", json!({})).await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let addr = mqtt_addr(&ferry)?;
    let mut gw = Device::connect(options("gw", addr, Some(("gw@t1", "pw")))).await?;
    assert_eq!(
        gw.subscribe("error//+/#").await?,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    for topic in ["t//behind", "telemetry/t1/behind"] {
        gw.publish(topic, QoS::AtLeastOnce, b"via gw").await?;
        let (acked, msg) = tokio::join!(gw.puback(), consumer.next(WAIT));
        acked?;
        let msg = msg?.ok_or("nothing from the gateway")?;
        assert_eq!(msg.prop("device_id").as_deref(), Some("behind"));
        assert_eq!(msg.prop("gateway_id").as_deref(), Some("gw"));
    }
    // Another tenant's error subscription is refused.
    assert_eq!(
        gw.subscribe("e/t2/+/#").await?,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    // Not in `via`: a terminal error, the connection closes even with on-error=ignore.
    gw.publish("t//other/?on-error=ignore", QoS::AtLeastOnce, b"x")
        .await?;
    gw.closed().await?;
    assert!(consumer.next(QUIET).await?.is_none());
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn unauthenticated_devices_when_authentication_is_off() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.mqtt.authentication_required = false;
    let ferry = TestGateway::start_with(config).await?;
    ferry
        .tenant(
            "open",
            json!({"adapters": [{"type": "hono-mqtt", "enabled": true, "device-authentication-required": false}]}),
        )
        .await?;
    ferry.device("open", "d1", json!({})).await?;
    ferry.provision("closed", "d2", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "event/open").await?;
    let addr = mqtt_addr(&ferry)?;
    let mut d = Device::connect(options("anon", addr, None)).await?;
    assert_eq!(
        d.subscribe("error/open/d1/#").await?,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    d.publish("event/open/d1", QoS::AtLeastOnce, b"anon")
        .await?;
    let (acked, msg) = tokio::join!(d.puback(), consumer.next(WAIT));
    acked?;
    let msg = msg?.ok_or("no anonymous event")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("d1"));
    // Without tenant and device the topic is refused.
    d.publish("event/?correlation-id=q", QoS::AtLeastOnce, b"x")
        .await?;
    d.closed().await?;
    // A tenant that requires authentication: terminal, the connection closes.
    let mut d = Device::connect(options("anon2", addr, None)).await?;
    d.publish("e/closed/d2/?on-error=ignore", QoS::AtLeastOnce, b"x")
        .await?;
    d.closed().await?;
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn oversized_payloads_are_dropped_and_the_connection_closed() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let addr = mqtt_addr(&ferry)?;
    let mut d = Device::connect(options("a", addr, Some(("dev1@t1", "pw")))).await?;
    d.publish("t", QoS::AtLeastOnce, &[b'a'; 2048]).await?;
    let (acked, msg) = tokio::join!(d.puback(), consumer.next(WAIT));
    acked?;
    assert_eq!(msg?.ok_or("2048 bytes missing")?.payload.len(), 2048);
    d.subscribe("e///#").await?;
    d.publish("t/?on-error=ignore", QoS::AtLeastOnce, &[b'a'; 2049])
        .await?;
    d.closed().await?;
    assert!(consumer.next(QUIET).await?.is_none());
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// An MQTT 3.1.1 CONNECT with the given keep-alive, client id `raw` and no credentials, or
/// `user`/`password` when given.
fn raw_connect(keep_alive: u16, credentials: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    body.push(if credentials.is_some() { 0xC2 } else { 0x02 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    let mut field = |s: &str| {
        body.extend_from_slice(&u16::try_from(s.len()).unwrap_or(0).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    };
    field("raw");
    if let Some((user, password)) = credentials {
        field(user);
        field(password);
    }
    let mut packet = vec![0x10, u8::try_from(body.len()).unwrap_or(0)];
    packet.extend_from_slice(&body);
    packet
}

/// Reads until the peer closes; returns what arrived, or fails after `wait`.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Result<Vec<u8>, Error> {
    let mut all = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await? {
            Ok(0) | Err(_) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn garbage_timeouts_and_keep_alive_close_raw_connections() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.mqtt.connect_timeout = Duration::from_millis(300);
    let ferry = TestGateway::start_with(config).await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let addr = mqtt_addr(&ferry)?;

    // Garbage before CONNECT: closed without an answer.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(read_until_closed(&mut s, WAIT).await?.is_empty());
    // A malformed remaining length.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]).await?;
    assert!(read_until_closed(&mut s, WAIT).await?.is_empty());
    // No CONNECT within the connect timeout.
    let mut s = TcpStream::connect(addr).await?;
    assert!(read_until_closed(&mut s, WAIT).await?.is_empty());
    // A PUBLISH before CONNECT.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&[0x30, 0x03, 0x00, 0x01, b't']).await?;
    assert!(read_until_closed(&mut s, WAIT).await?.is_empty());

    // Keep-alive 1 s and then silence: CONNACK, then closed after 1.5 s.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&raw_connect(1, Some(("dev1@t1", "pw"))))
        .await?;
    let started = tokio::time::Instant::now();
    let got = read_until_closed(&mut s, WAIT).await?;
    assert_eq!(
        got,
        vec![0x20, 0x02, 0x00, 0x00],
        "CONNACK accepted, then nothing"
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // With PINGREQs the connection stays open past the keep-alive.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&raw_connect(1, Some(("dev1@t1", "pw"))))
        .await?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await?;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(&[0xC0, 0x00]).await?;
        let mut pong = [0u8; 2];
        tokio::time::timeout(WAIT, s.read_exact(&mut pong)).await??;
        assert_eq!(pong, [0xD0, 0x00]);
    }
    ferry.stop().await;
    Ok(())
}

fn tls_client_config(data_dir: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, Error> {
    tls_client_config_with(data_dir, None)
}

/// A ring-only client configuration trusting the gateway's server certificate, presenting
/// `identity` as client certificate if given.
fn tls_client_config_with(
    data_dir: &std::path::Path,
    identity: Option<&TestCert>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data_dir.join("tls/server-cert.pem"))? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match identity {
        Some(cert) => builder.with_client_auth_cert(
            cert.chain.clone(),
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[tokio::test]
async fn tls_port_serves_mqtt_3_and_5() -> TestResult {
    let (dir, ferry) = start().await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let port = ferry.addrs.mqtts.ok_or("no TLS listener")?.port();
    let tls = tls_client_config(dir.path())?;

    let mut o = MqttOptions::new("tls3", "localhost", port);
    o.set_credentials("dev1@t1", "pw");
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::clone(&tls)),
    ));
    let mut d = Device::connect(o).await?;
    d.publish("t", QoS::AtLeastOnce, b"over tls").await?;
    let (acked, msg) = tokio::join!(d.puback(), consumer.next(WAIT));
    acked?;
    assert_eq!(msg?.ok_or("no TLS telemetry")?.payload, b"over tls");

    let mut o = rumqttc::v5::MqttOptions::new("tls5", "localhost", port);
    o.set_credentials("dev1@t1", "pw");
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let mut d5 = Device5::connect(o).await?;
    d5.publish_typed("t", b"v5 over tls", None).await?;
    let (acked, msg) = tokio::join!(d5.puback(), consumer.next(WAIT));
    acked?;
    assert_eq!(msg?.ok_or("no v5 TLS telemetry")?.payload, b"v5 over tls");
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// An MQTT 5 device driven by rumqttc's v5 client.
struct Device5 {
    client: rumqttc::v5::AsyncClient,
    events: mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>>,
}

impl Device5 {
    fn start(options: rumqttc::v5::MqttOptions) -> Self {
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 32);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    break;
                }
            }
        });
        Self { client, events }
    }

    async fn connect(options: rumqttc::v5::MqttOptions) -> Result<Self, Error> {
        use rumqttc::v5::{Event as E, mqttbytes::v5::Packet as P};
        let mut d = Self::start(options);
        loop {
            match tokio::time::timeout(WAIT, d.events.recv()).await? {
                Some(Ok(E::Incoming(P::ConnAck(_)))) => return Ok(d),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("v5 connect failed: {e}").into()),
                None => return Err("event loop ended".into()),
            }
        }
    }

    async fn refused(
        options: rumqttc::v5::MqttOptions,
    ) -> Result<rumqttc::v5::mqttbytes::v5::ConnectReturnCode, Error> {
        use rumqttc::v5::{ConnectionError as CE, Event as E, mqttbytes::v5::Packet as P};
        let mut d = Self::start(options);
        loop {
            match tokio::time::timeout(WAIT, d.events.recv()).await? {
                Some(Err(CE::ConnectionRefused(code))) => return Ok(code),
                Some(Err(e)) => return Err(format!("failed without CONNACK: {e}").into()),
                Some(Ok(E::Incoming(P::ConnAck(_)))) => return Err("accepted".into()),
                Some(Ok(_)) => {}
                None => return Err("event loop ended".into()),
            }
        }
    }

    async fn publish_typed(
        &self,
        topic: &str,
        payload: &[u8],
        content_type: Option<&str>,
    ) -> TestResult {
        let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
            content_type: content_type.map(str::to_owned),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.to_vec(),
                properties,
            )
            .await?;
        Ok(())
    }

    async fn puback(&mut self) -> TestResult {
        use rumqttc::v5::{Event as E, mqttbytes::v5::Packet as P};
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await? {
                Some(Ok(E::Incoming(P::PubAck(_)))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection failed: {e}").into()),
                None => return Err("event loop ended".into()),
            }
        }
    }
}

fn options5(id: &str, addr: SocketAddr, user: &str, password: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_credentials(user, password);
    o
}

#[tokio::test]
async fn mqtt5_content_type_and_reason_codes() -> TestResult {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.mqtt.max_connections = 1;
    let ferry = TestGateway::start_with(config).await?;
    ferry.provision("t1", "dev1", "pw").await?;
    ferry
        .tenant(
            "off",
            json!({"adapters": [{"type": "hono-mqtt", "enabled": false}]}),
        )
        .await?;
    ferry.device("off", "d", json!({})).await?;
    ferry.password("off", "d", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let addr = mqtt_addr(&ferry)?;

    assert_eq!(
        Device5::refused(options5("a", addr, "dev1@t1", "no")).await?,
        C::BadUserNamePassword
    );
    assert_eq!(
        Device5::refused(options5("a", addr, "d@off", "pw")).await?,
        C::NotAuthorized
    );

    let mut d = Device5::connect(options5("ok", addr, "dev1@t1", "pw")).await?;
    // The content-type property beats the bag.
    d.publish_typed(
        "t/?content-type=text%2Fplain",
        b"{}",
        Some("application/json"),
    )
    .await?;
    let (acked, msg) = tokio::join!(d.puback(), consumer.next(WAIT));
    acked?;
    let msg = msg?.ok_or("no v5 telemetry")?;
    assert_eq!(msg.content_type.as_deref(), Some("application/json"));
    // Adapter connection limit (1) reached: 0x9C.
    assert_eq!(
        Device5::refused(options5("b", addr, "dev1@t1", "pw")).await?,
        C::UseAnotherServer
    );
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn mqtt5_tenant_connection_limit_is_quota_exceeded() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry
        .tenant("lim", json!({"resource-limits": {"max-connections": 0}}))
        .await?;
    ferry.device("lim", "d", json!({})).await?;
    ferry.password("lim", "d", "pw").await?;
    let code = Device5::refused(options5("a", mqtt_addr(&ferry)?, "d@lim", "pw")).await?;
    assert_eq!(
        code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::QuotaExceeded
    );
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn connection_events_announce_connect_and_disconnect() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.mqtt.connection_events = true;
    let ferry = TestGateway::start_with(config).await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/t1").await?;
    let d = Device::connect(options(
        "client-7",
        mqtt_addr(&ferry)?,
        Some(("dev1@t1", "pw")),
    ))
    .await?;
    let connected = events.next(WAIT).await?.ok_or("no connected event")?;
    assert_eq!(
        connected.content_type.as_deref(),
        Some("application/vnd.eclipse-hono-dc-notification+json")
    );
    assert_eq!(connected.prop("device_id").as_deref(), Some("dev1"));
    let payload: serde_json::Value = serde_json::from_slice(&connected.payload)?;
    assert_eq!(payload["cause"], "connected");
    assert_eq!(payload["remote-id"], "client-7");
    assert_eq!(payload["source"], "hono-mqtt");
    d.client.disconnect().await?;
    let disconnected = events.next(WAIT).await?.ok_or("no disconnected event")?;
    let payload: serde_json::Value = serde_json::from_slice(&disconnected.payload)?;
    assert_eq!(payload["cause"], "disconnected");
    events.close().await;
    ferry.stop().await;
    Ok(())
}

/// MQTT 3.1.1 options for the TLS port (`localhost`), presenting `identity` if given.
fn tls_options(
    id: &str,
    ferry: &TestGateway,
    data_dir: &std::path::Path,
    identity: Option<&TestCert>,
    credentials: Option<(&str, &str)>,
) -> Result<MqttOptions, Error> {
    let port = ferry.addrs.mqtts.ok_or("no TLS listener")?.port();
    let mut o = MqttOptions::new(id, "localhost", port);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = credentials {
        o.set_credentials(user, password);
    }
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls_client_config_with(data_dir, identity)?),
    ));
    Ok(o)
}

const PROVISIONING_NOTIFICATION: &str =
    "application/vnd.eclipse-hono-device-provisioning-notification";

#[tokio::test]
async fn a_registered_device_authenticates_with_its_client_certificate() -> TestResult {
    let (dir, ferry) = start().await?;
    let ca = TestCa::root("mqtt-registered")?;
    ferry
        .tenant("t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    ferry.device("t1", "dev1", json!({})).await?;
    let cert = ca.device("dev1-cert")?;
    ferry
        .x509_credential("t1", "dev1", &cert.subject_dn())
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;

    // Credentials in the CONNECT are ignored when a certificate is presented (as in Hono).
    let o = tls_options(
        "cert1",
        &ferry,
        dir.path(),
        Some(&cert),
        Some(("nobody@nowhere", "wrong")),
    )?;
    let mut d = Device::connect(o).await?;
    d.publish("t", QoS::AtLeastOnce, b"by certificate").await?;
    let (acked, msg) = tokio::join!(d.puback(), consumer.next(WAIT));
    acked?;
    let msg = msg?.ok_or("no telemetry from the certificate device")?;
    assert_eq!(msg.payload, b"by certificate");
    assert_eq!(msg.prop("device_id").as_deref(), Some("dev1"));
    assert_eq!(msg.prop("tenant_id").as_deref(), Some("t1"));
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_x509_device_is_provisioned_by_its_first_mqtt_connection() -> TestResult {
    let (dir, ferry) = start().await?;
    let ca = TestCa::root("mqtt-provisioning")?;
    let mut entry = ca.trusted_ca();
    entry["auto-provisioning-enabled"] = json!(true);
    entry["auto-provisioning-device-id-template"] = json!("auto-{{subject-cn}}");
    ferry.tenant("t1", json!({"trusted-ca": [entry]})).await?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/t1").await?;
    let cert = ca.device("sensor-9")?;
    assert_eq!(ferry.read_device("t1", "auto-sensor-9").await?, None);

    let mut d =
        Device::connect(tls_options("prov", &ferry, dir.path(), Some(&cert), None)?).await?;
    d.publish("t", QoS::AtLeastOnce, b"first words").await?;
    let (acked, msg) = tokio::join!(d.puback(), telemetry.next(WAIT));
    acked?;
    let msg = msg?.ok_or("no telemetry from the provisioned device")?;
    assert_eq!(msg.payload, b"first words");
    assert_eq!(msg.prop("device_id").as_deref(), Some("auto-sensor-9"));

    // The registry's notification on event/t1 (connection events may come too).
    let note = loop {
        let event = events
            .next(WAIT)
            .await?
            .ok_or("no provisioning notification")?;
        if event.content_type.as_deref() == Some(PROVISIONING_NOTIFICATION) {
            break event;
        }
    };
    assert_eq!(note.prop("device_id").as_deref(), Some("auto-sensor-9"));
    assert_eq!(
        note.prop("hono_registration_status").as_deref(),
        Some("NEW")
    );
    let doc = ferry
        .read_device("t1", "auto-sensor-9")
        .await?
        .ok_or("device not created")?;
    assert_eq!(doc["status"]["auto-provisioned"], json!(true));
    telemetry.close().await;
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_certificate_of_an_untrusted_ca_is_refused_without_password_fallback() -> TestResult {
    use rumqttc::ConnectReturnCode as C;
    let (dir, ferry) = start().await?;
    ferry.provision("t1", "dev1", "pw").await?;
    let trusted = TestCa::root("mqtt-trusted")?;
    ferry
        .update_tenant("t1", json!({"trusted-ca": [trusted.trusted_ca()]}))
        .await?;
    let stranger = TestCa::root("mqtt-untrusted")?.device("intruder")?;

    // The CONNECT's password is right, but the certificate is checked first and fails.
    let o = tls_options(
        "bad3",
        &ferry,
        dir.path(),
        Some(&stranger),
        Some(("dev1@t1", "pw")),
    )?;
    assert_eq!(Device::refused(o).await?, C::BadUserNamePassword);

    let port = ferry.addrs.mqtts.ok_or("no TLS listener")?.port();
    let mut o = rumqttc::v5::MqttOptions::new("bad5", "localhost", port);
    o.set_credentials("dev1@t1", "pw");
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls_client_config_with(dir.path(), Some(&stranger))?),
    ));
    assert_eq!(
        Device5::refused(o).await?,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::BadUserNamePassword
    );
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn password_and_certificate_clients_share_the_tls_port() -> TestResult {
    let (dir, ferry) = start().await?;
    let ca = TestCa::root("mqtt-shared-port")?;
    ferry.provision("t1", "pwdev", "pw").await?;
    ferry
        .update_tenant("t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    ferry.device("t1", "certdev", json!({})).await?;
    let cert = ca.device("certdev")?;
    ferry
        .x509_credential("t1", "certdev", &cert.subject_dn())
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;

    let mut by_cert = Device::connect(tls_options(
        "c-cert",
        &ferry,
        dir.path(),
        Some(&cert),
        None,
    )?)
    .await?;
    let mut by_password = Device::connect(tls_options(
        "c-pw",
        &ferry,
        dir.path(),
        None,
        Some(("pwdev@t1", "pw")),
    )?)
    .await?;
    for (device, payload, expected) in [
        (&mut by_password, b"by password".as_slice(), "pwdev"),
        (&mut by_cert, b"by certificate".as_slice(), "certdev"),
    ] {
        device.publish("t", QoS::AtLeastOnce, payload).await?;
        let (acked, msg) = tokio::join!(device.puback(), consumer.next(WAIT));
        acked?;
        let msg = msg?.ok_or("no telemetry")?;
        assert_eq!(msg.payload, payload);
        assert_eq!(msg.prop("device_id").as_deref(), Some(expected));
    }
    // A TLS client without certificate and with a wrong password is still refused.
    let o = tls_options(
        "c-bad",
        &ferry,
        dir.path(),
        None,
        Some(("pwdev@t1", "nope")),
    )?;
    assert_eq!(
        Device::refused(o).await?,
        rumqttc::ConnectReturnCode::BadUserNamePassword
    );
    consumer.close().await;
    ferry.stop().await;
    Ok(())
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
async fn disabling_a_device_or_its_tenant_closes_open_connections() -> TestResult {
    let (_dir, ferry) = start().await?;
    ferry.provision("m1", "dev1", "pw").await?;
    for device in ["dev2", "dev5", "gw"] {
        ferry.device("m1", device, json!({})).await?;
        ferry.password("m1", device, "pw").await?;
    }
    ferry.device("m1", "behind", json!({"via": ["gw"]})).await?;
    let addr = mqtt_addr(&ferry)?;
    let mut dev1 = Device::connect(options("c1", addr, Some(("dev1@m1", "pw")))).await?;
    let mut dev2 = Device::connect(options("c2", addr, Some(("dev2@m1", "pw")))).await?;
    let mut gw = Device::connect(options("gw", addr, Some(("gw@m1", "pw")))).await?;
    let mut dev5 = Device5::connect(options5("c5", addr, "dev5@m1", "pw")).await?;

    put(&ferry, "/devices/m1/dev1", json!({"enabled": false})).await?;
    dev1.closed().await?;
    // The other device of the tenant stays connected.
    dev2.still_open().await?;

    // A device behind a gateway does not close the gateway's connection.
    put(
        &ferry,
        "/devices/m1/behind",
        json!({"via": ["gw"], "enabled": false}),
    )
    .await?;
    gw.still_open().await?;

    put(&ferry, "/tenants/m1", json!({"enabled": false})).await?;
    dev2.closed().await?;
    gw.closed().await?;
    // MQTT 5: told why before the close.
    loop {
        use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
        use rumqttc::v5::{ConnectionError as CE, StateError};
        match tokio::time::timeout(WAIT, dev5.events.recv()).await? {
            Some(Err(CE::MqttState(StateError::ServerDisconnect { reason_code, .. }))) => {
                assert_eq!(reason_code, DisconnectReasonCode::NotAuthorized);
                break;
            }
            Some(Ok(_)) => {}
            other => return Err(format!("v5: expected DISCONNECT 0x87, got {other:?}").into()),
        }
    }
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_unclaimed_device_gets_403_on_the_error_topic_until_it_is_claimed() -> TestResult {
    let (dir, ferry) = start().await?;
    let ca = TestCa::root("mqtt-claim")?;
    let mut entry = ca.trusted_ca();
    entry["claim-required"] = json!(true);
    entry["auto-provisioning-device-id-template"] = json!("{{subject-cn}}");
    ferry.tenant("t1", json!({"trusted-ca": [entry]})).await?;
    let cert = ca.device("boiler-3")?;
    let code = json!({"subject-dn": cert.subject_dn(), "ownership-code": "boiler-code-3"});
    let r = ferry
        .client
        .put(ferry.mgmt("/provisioning/t1/ownership-codes"))
        .json(&code)
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let mut d =
        Device::connect(tls_options("claim", &ferry, dir.path(), Some(&cert), None)?).await?;
    d.subscribe("e///#").await?;
    d.publish("t/?correlation-id=c1", QoS::AtLeastOnce, b"unclaimed")
        .await?;
    let (topic, payload) = d.error_message().await?;
    assert_eq!(topic, "e///t/c1/403");
    assert!(
        payload["message"]
            .as_str()
            .is_some_and(|m| m.contains("not claimed")),
        "{payload}"
    );
    d.puback().await?;
    let r = ferry
        .client
        .post(ferry.mgmt("/provisioning/t1/claims"))
        .json(&json!({"device-id": "boiler-3", "ownership-code": "boiler-code-3"}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    // The same connection is heard once the device is claimed.
    d.publish("t", QoS::AtLeastOnce, b"claimed").await?;
    let (acked, msg) = tokio::join!(d.puback(), telemetry.next(WAIT));
    acked?;
    let msg = msg?.ok_or("no telemetry after the claim")?;
    assert_eq!(msg.payload, b"claimed");
    assert_eq!(msg.prop("device_id").as_deref(), Some("boiler-3"));
    telemetry.close().await;
    ferry.stop().await;
    Ok(())
}
