//! Events over real sockets: durable storage, delivery after restart, redelivery, rejection.

mod common;

use std::time::Duration;

use common::{TestResult, config, credentials, message, start, within};
use ferry_adapter_core::{Endpoint, Northbound, Qos};
use ferry_northbound::{Consumer, Settle};
use ferry_registry_client::TenantId;

#[tokio::test]
async fn event_without_consumer_is_delivered_after_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut first = message(Endpoint::Event, Qos::AtLeastOnce, "te", "dev-1", b"first")?;
    first.ttd = Some(-1);
    server.northbound.send(first).await?;
    server
        .northbound
        .send(message(
            Endpoint::Event,
            Qos::AtLeastOnce,
            "te",
            "dev-2",
            b"second",
        )?)
        .await?;
    server.stop().await?;

    // A new northbound on the same data directory.
    let server = start(config(dir.path())).await?;
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Event, &TenantId::parse("te")?)
        .await?;
    let one = within(receiver.recv()).await??;
    let two = within(receiver.recv()).await??;
    assert_eq!(one.payload.as_ref(), b"first", "oldest first");
    assert_eq!(one.device_id.as_str(), "dev-1");
    assert_eq!(one.endpoint, Endpoint::Event);
    assert!(one.durable, "events are durable");
    assert_eq!(one.properties.get("ttd"), Some(&serde_json::json!(-1)));
    assert_eq!(two.payload.as_ref(), b"second");

    // Both were accepted: nothing is delivered again, also not after another restart.
    let again = tokio::time::timeout(Duration::from_millis(300), receiver.recv()).await;
    assert!(again.is_err(), "unexpected redelivery: {again:?}");
    consumer.close().await?;
    server.stop().await?;
    let server = start(config(dir.path())).await?;
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Event, &TenantId::parse("te")?)
        .await?;
    let again = tokio::time::timeout(Duration::from_millis(500), receiver.recv()).await;
    assert!(
        again.is_err(),
        "accepted event was delivered again: {again:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn released_event_is_redelivered_and_rejected_event_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Event, &TenantId::parse("tr")?)
        .await?;
    server.wait_for_consumers(Endpoint::Event, "tr", 1).await?;

    server
        .northbound
        .send(message(
            Endpoint::Event,
            Qos::AtLeastOnce,
            "tr",
            "d",
            b"again",
        )?)
        .await?;
    let (first, unsettled) = within(receiver.recv_unsettled()).await??;
    assert_eq!(first.payload.as_ref(), b"again");
    receiver.settle(unsettled, Settle::Release).await?;
    let (second, unsettled) = within(receiver.recv_unsettled()).await??;
    assert_eq!(second.payload.as_ref(), b"again");
    assert_eq!(
        second.message_id, first.message_id,
        "same message-id on redelivery"
    );
    receiver.settle(unsettled, Settle::Modify).await?;
    let third = within(receiver.recv()).await??;
    assert_eq!(third.payload.as_ref(), b"again");

    server
        .northbound
        .send(message(
            Endpoint::Event,
            Qos::AtLeastOnce,
            "tr",
            "d",
            b"bad",
        )?)
        .await?;
    let (bad, unsettled) = within(receiver.recv_unsettled()).await??;
    assert_eq!(bad.payload.as_ref(), b"bad");
    receiver.settle(unsettled, Settle::Reject).await?;
    let again = tokio::time::timeout(Duration::from_millis(400), receiver.recv()).await;
    assert!(again.is_err(), "rejected event was redelivered: {again:?}");
    server.stop().await
}

#[tokio::test]
async fn unsettled_event_goes_to_the_next_consumer_when_the_link_is_lost() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let tenant = TenantId::parse("tl")?;
    let mut gone = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = gone.receiver(Endpoint::Event, &tenant).await?;
    server.wait_for_consumers(Endpoint::Event, "tl", 1).await?;
    server
        .northbound
        .send(message(
            Endpoint::Event,
            Qos::AtLeastOnce,
            "tl",
            "d",
            b"keep",
        )?)
        .await?;
    let (_, _unsettled) = within(receiver.recv_unsettled()).await??;
    // The application dies without settling.
    drop(receiver);
    drop(gone);
    server.wait_for_consumers(Endpoint::Event, "tl", 0).await?;

    let mut next = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = next.receiver(Endpoint::Event, &tenant).await?;
    let message = within(receiver.recv()).await??;
    assert_eq!(message.payload.as_ref(), b"keep");
    server.stop().await
}

#[tokio::test]
async fn events_are_shared_between_consumers_and_all_delivered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let tenant = TenantId::parse("many")?;
    let mut c1 = Consumer::connect(server.addr(), credentials()).await?;
    let mut c2 = Consumer::connect(server.addr(), credentials()).await?;
    let r1 = c1.receiver(Endpoint::Event, &tenant).await?;
    let r2 = c2.receiver(Endpoint::Event, &tenant).await?;
    server
        .wait_for_consumers(Endpoint::Event, "many", 2)
        .await?;
    for i in 0..250 {
        server
            .northbound
            .send(message(
                Endpoint::Event,
                Qos::AtLeastOnce,
                "many",
                "d",
                format!("{i}").as_bytes(),
            )?)
            .await?;
    }
    let collect = |mut receiver: ferry_northbound::MessageReceiver| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_millis(1500), receiver.recv()).await
            {
                seen.push(String::from_utf8_lossy(&m.payload).into_owned());
            }
            seen
        })
    };
    let (a, b) = (collect(r1), collect(r2));
    let (a, b) = (a.await?, b.await?);
    let mut all: Vec<u32> = a
        .iter()
        .chain(&b)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    all.sort_unstable();
    assert_eq!(
        all,
        (0..250).collect::<Vec<u32>>(),
        "every event exactly once"
    );
    assert!(!a.is_empty() && !b.is_empty(), "{} / {}", a.len(), b.len());
    server.stop().await
}

#[tokio::test]
async fn concurrent_events_are_all_stored_and_expired_ones_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut sends = Vec::new();
    for i in 0..200 {
        let msg = message(
            Endpoint::Event,
            Qos::AtLeastOnce,
            "conc",
            "d",
            format!("{i}").as_bytes(),
        )?;
        sends.push(common::spawn_send(&server, msg));
    }
    for send in sends {
        within(send).await???;
    }
    let mut expired = message(Endpoint::Event, Qos::AtLeastOnce, "conc", "d", b"expired")?;
    expired.creation_time = chrono::Utc::now().timestamp_millis() - 10_000;
    expired.ttl_ms = Some(1_000);
    server.northbound.send(expired).await?;

    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Event, &TenantId::parse("conc")?)
        .await?;
    let mut seen = std::collections::HashSet::new();
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(800), receiver.recv()).await {
        assert_ne!(
            m.payload.as_ref(),
            b"expired",
            "an expired event was delivered"
        );
        assert!(seen.insert(m.payload), "duplicate delivery");
    }
    assert_eq!(seen.len(), 200);
    server.stop().await
}
