//! Telemetry over real sockets: message format, QoS 0 and 1, no consumer, load sharing.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestResult, config, credentials, message, start, within};
use fe2o3_amqp::link::CreditMode;
use fe2o3_amqp::types::messaging::{Body, MessageId};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Connection, Delivery, Receiver, Session};
use ferry_adapter_core::{Endpoint, Northbound, NorthboundError, Qos};
use ferry_northbound::{Consumer, Settle};
use ferry_registry_client::TenantId;

#[tokio::test]
async fn telemetry_arrives_with_every_property() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;

    // A plain fe2o3-amqp client, to look at the raw AMQP message.
    let mut connection = Connection::builder()
        .container_id("raw-client")
        .sasl_profile((common::USER, common::PASSWORD))
        .open_with_stream(tokio::net::TcpStream::connect(server.addr()).await?)
        .await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut receiver = Receiver::attach(&mut session, "t-raw", "telemetry/tenant-a").await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "tenant-a", 1)
        .await?;

    let mut msg = message(
        Endpoint::Telemetry,
        Qos::AtLeastOnce,
        "tenant-a",
        "dev-1",
        b"21.5",
    )?;
    msg.ttl_ms = Some(30_000);
    msg.ttd = Some(60);
    msg.retain = true;
    msg.properties
        .insert("gateway_id".into(), serde_json::json!("gw-1"));
    msg.properties.insert("count".into(), serde_json::json!(7));
    msg.properties
        .insert("ratio".into(), serde_json::json!(0.5));
    msg.properties
        .insert("flag".into(), serde_json::json!(true));
    let northbound = server.northbound.clone();
    let send = tokio::spawn(async move { northbound.send(msg).await });

    let delivery: Delivery<Body<Value>> = within(receiver.recv()).await??;
    receiver.accept(&delivery).await?;
    within(send).await???;

    let message = delivery.message();
    let props = message.properties.as_ref().ok_or("no properties")?;
    assert_eq!(props.to.as_deref(), Some("telemetry/tenant-a/dev-1"));
    assert_eq!(
        props.content_type.as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    assert_eq!(
        props.creation_time.clone().map(|t| t.into_inner()),
        Some(1_764_000_000_000)
    );
    assert!(matches!(&props.message_id, Some(MessageId::String(id)) if !id.is_empty()));
    let header = message.header.as_ref().ok_or("no header")?;
    assert!(!header.durable, "telemetry is not durable");
    assert_eq!(header.ttl, Some(30_000));
    let app = &message
        .application_properties
        .as_ref()
        .ok_or("no app props")?
        .0;
    let string = |s: &str| SimpleValue::String(s.to_owned());
    assert_eq!(app.get("device_id"), Some(&string("dev-1")));
    assert_eq!(app.get("tenant_id"), Some(&string("tenant-a")));
    assert_eq!(app.get("orig_adapter"), Some(&string("hono-http")));
    assert_eq!(app.get("orig_address"), Some(&string("/telemetry")));
    assert_eq!(app.get("qos"), Some(&SimpleValue::Int(1)));
    assert_eq!(app.get("ttd"), Some(&SimpleValue::Int(60)));
    assert_eq!(app.get("gateway_id"), Some(&string("gw-1")));
    assert_eq!(app.get("count"), Some(&SimpleValue::Long(7)));
    assert_eq!(app.get("ratio"), Some(&SimpleValue::Double(0.5.into())));
    assert_eq!(app.get("flag"), Some(&SimpleValue::Bool(true)));
    let annotations = message
        .message_annotations
        .as_ref()
        .ok_or("no annotations")?;
    let retain = annotations
        .0
        .iter()
        .find(|(k, _)| format!("{k:?}").contains("x-opt-retain"))
        .map(|(_, v)| v.clone());
    assert_eq!(retain, Some(Value::Bool(true)));
    match &message.body {
        Body::Data(sections) => {
            let sections: Vec<_> = sections.iter().collect();
            assert_eq!(sections.len(), 1, "exactly one Data section");
            assert_eq!(sections[0].0.as_slice(), b"21.5");
        }
        other => return Err(format!("unexpected body {other:?}").into()),
    }

    receiver.close().await?;
    session.end().await?;
    connection.close().await?;
    server.stop().await
}

#[tokio::test]
async fn no_consumer_gives_no_consumer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let result = server
        .northbound
        .send(message(
            Endpoint::Telemetry,
            Qos::AtMostOnce,
            "lonely",
            "d",
            b"x",
        )?)
        .await;
    assert!(
        matches!(result, Err(NorthboundError::NoConsumer(_))),
        "{result:?}"
    );

    // A consumer of another tenant does not count.
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let _other = consumer
        .receiver(Endpoint::Telemetry, &TenantId::parse("other")?)
        .await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "other", 1)
        .await?;
    let result = server
        .northbound
        .send(message(
            Endpoint::Telemetry,
            Qos::AtLeastOnce,
            "lonely",
            "d",
            b"x",
        )?)
        .await;
    assert!(
        matches!(result, Err(NorthboundError::NoConsumer(_))),
        "{result:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn qos1_returns_only_after_acceptance_and_reports_rejection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Telemetry, &TenantId::parse("t1")?)
        .await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "t1", 1)
        .await?;

    // Accepted: send completes only after the consumer settled.
    let mut send = common::spawn_send(
        &server,
        message(Endpoint::Telemetry, Qos::AtLeastOnce, "t1", "d1", b"one")?,
    );
    let (received, unsettled) = within(receiver.recv_unsettled()).await??;
    assert_eq!(received.payload.as_ref(), b"one");
    assert_eq!(received.properties.get("qos"), Some(&serde_json::json!(1)));
    let early = tokio::time::timeout(Duration::from_millis(200), &mut send).await;
    assert!(
        early.is_err(),
        "QoS 1 send returned before the consumer settled"
    );
    receiver.settle(unsettled, Settle::Accept).await?;
    within(send).await???;

    // Rejected.
    let send = common::spawn_send(
        &server,
        message(Endpoint::Telemetry, Qos::AtLeastOnce, "t1", "d1", b"two")?,
    );
    let (_, unsettled) = within(receiver.recv_unsettled()).await??;
    receiver.settle(unsettled, Settle::Reject).await?;
    let result = within(send).await??;
    assert!(
        matches!(result, Err(NorthboundError::Rejected(_))),
        "{result:?}"
    );

    // Never settled: Unavailable after the send timeout (500 ms in tests).
    let started = std::time::Instant::now();
    let send = common::spawn_send(
        &server,
        message(Endpoint::Telemetry, Qos::AtLeastOnce, "t1", "d1", b"three")?,
    );
    let (_kept, _unsettled) = within(receiver.recv_unsettled()).await??;
    let result = within(send).await??;
    assert!(
        matches!(result, Err(NorthboundError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
    server.stop().await
}

#[tokio::test]
async fn qos1_released_maps_to_rejected_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Telemetry, &TenantId::parse("t2")?)
        .await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "t2", 1)
        .await?;
    let send = common::spawn_send(
        &server,
        message(Endpoint::Telemetry, Qos::AtLeastOnce, "t2", "d", b"x")?,
    );
    let (_, unsettled) = within(receiver.recv_unsettled()).await??;
    receiver.settle(unsettled, Settle::Release).await?;
    let result = within(send).await??;
    assert!(
        matches!(result, Err(NorthboundError::Rejected(_))),
        "{result:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn two_consumers_share_the_load() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let tenant = TenantId::parse("shared")?;
    let mut first = Consumer::connect(server.addr(), credentials()).await?;
    let mut second = Consumer::connect(server.addr(), credentials()).await?;
    let a = first.receiver(Endpoint::Telemetry, &tenant).await?;
    let b = second.receiver(Endpoint::Telemetry, &tenant).await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "shared", 2)
        .await?;

    let collect = |mut receiver: ferry_northbound::MessageReceiver| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_millis(1500), receiver.recv()).await
            {
                seen.push(String::from_utf8_lossy(&message.payload).into_owned());
            }
            seen
        })
    };
    let (ta, tb) = (collect(a), collect(b));
    for i in 0..100 {
        let qos = if i % 2 == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        };
        server
            .northbound
            .send(message(
                Endpoint::Telemetry,
                qos,
                "shared",
                "d",
                format!("{i}").as_bytes(),
            )?)
            .await?;
    }
    let (seen_a, seen_b) = (ta.await?, tb.await?);
    assert!(
        !seen_a.is_empty() && !seen_b.is_empty(),
        "{} / {}",
        seen_a.len(),
        seen_b.len()
    );
    assert_eq!(seen_a.len() + seen_b.len(), 100);
    let all: HashSet<String> = seen_a.into_iter().chain(seen_b).collect();
    assert_eq!(all.len(), 100);
    server.stop().await
}

#[tokio::test]
async fn a_consumer_without_credit_is_not_buffered_for_without_bound() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut connection = Connection::builder()
        .container_id("no-credit")
        .sasl_profile((common::USER, common::PASSWORD))
        .open_with_stream(tokio::net::TcpStream::connect(server.addr()).await?)
        .await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut receiver = Receiver::builder()
        .name("no-credit")
        .source("telemetry/stingy")
        .credit_mode(CreditMode::Manual)
        .attach(&mut session)
        .await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "stingy", 1)
        .await?;

    // QoS 1 without credit: Unavailable after the send timeout.
    let result = server
        .northbound
        .send(message(
            Endpoint::Telemetry,
            Qos::AtLeastOnce,
            "stingy",
            "d",
            b"x",
        )?)
        .await;
    assert!(
        matches!(result, Err(NorthboundError::Unavailable(_))),
        "{result:?}"
    );

    // QoS 0 fills the link's small queue, then is refused instead of piling up.
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..40 {
        match server
            .northbound
            .send(message(
                Endpoint::Telemetry,
                Qos::AtMostOnce,
                "stingy",
                "d",
                b"x",
            )?)
            .await
        {
            Ok(()) => accepted += 1,
            Err(NorthboundError::Unavailable(_)) => {
                refused += 1;
                if refused == 2 {
                    break;
                }
            }
            Err(other) => return Err(other.into()),
        }
    }
    assert_eq!(refused, 2);
    assert!(
        accepted <= 20,
        "{accepted} messages queued for a consumer without credit"
    );

    // Granting credit lets the queued messages through.
    receiver.set_credit(100).await?;
    let delivery: Delivery<Body<Value>> = within(receiver.recv()).await??;
    receiver.accept(&delivery).await?;
    // The QoS 1 message whose sender was told "unavailable" is not delivered after all.
    let qos = delivery
        .message()
        .application_properties
        .as_ref()
        .and_then(|p| p.0.get("qos").cloned());
    assert_eq!(qos, Some(SimpleValue::Int(0)));
    server.stop().await
}
