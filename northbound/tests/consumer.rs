//! The consumer client: both endpoints at once, and a clear error when the server goes away.

mod common;

use std::time::Duration;

use common::{TestResult, config, credentials, message, start, within};
use ferry_adapter_core::{Endpoint, Northbound, Qos};
use ferry_northbound::{Consumer, ConsumerError};
use ferry_registry_client::TenantId;

#[tokio::test]
async fn subscription_receives_telemetry_and_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    // An event stored before anyone listens.
    server
        .northbound
        .send(message(
            Endpoint::Event,
            Qos::AtLeastOnce,
            "sub",
            "dev-e",
            b"event",
        )?)
        .await?;
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut subscription = consumer.subscribe(&TenantId::parse("sub")?).await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "sub", 1)
        .await?;
    let mut telemetry = message(
        Endpoint::Telemetry,
        Qos::AtMostOnce,
        "sub",
        "dev-t",
        b"telemetry",
    )?;
    telemetry.content_type = "application/json".into();
    server.northbound.send(telemetry).await?;

    let mut got = [
        within(subscription.recv()).await??,
        within(subscription.recv()).await??,
    ];
    got.sort_by_key(|m| m.endpoint == Endpoint::Event);
    assert_eq!(got[0].endpoint, Endpoint::Telemetry);
    assert_eq!(got[0].device_id.as_str(), "dev-t");
    assert_eq!(got[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(got[0].creation_time, Some(1_764_000_000_000));
    assert_eq!(
        got[0].properties.get("orig_adapter"),
        Some(&serde_json::json!("hono-http"))
    );
    assert_eq!(got[0].properties.get("qos"), Some(&serde_json::json!(0)));
    assert!(!got[0].durable);
    assert_eq!(got[1].endpoint, Endpoint::Event);
    assert_eq!(got[1].device_id.as_str(), "dev-e");
    assert_eq!(got[1].tenant_id.as_str(), "sub");
    assert_eq!(got[1].payload.as_ref(), b"event");
    assert!(got[1].durable);
    server.stop().await
}

#[tokio::test]
async fn server_going_away_is_a_clear_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut subscription = consumer.subscribe(&TenantId::parse("gone")?).await?;
    let addr = server.addr();
    server.stop().await?;
    let result = within(subscription.recv()).await?;
    assert!(
        matches!(result, Err(ConsumerError::Closed(_))),
        "{result:?}"
    );

    // Nobody listens any more.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        Consumer::connect(addr, credentials()),
    )
    .await?;
    assert!(
        matches!(refused, Err(ConsumerError::Connect(_))),
        "{refused:?}"
    );
    Ok(())
}
