//! Shutdown with the registry and northbound doubles: deliveries in flight are still settled with
//! their real outcome, then the connection closes and the port stops accepting.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::{Message, Outcome, Properties, Target};
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::{Connection, Sender, Session};
use ferry_adapter_amqp::{ADAPTER_TYPE, AmqpAdapter, AmqpConfig};
use ferry_adapter_core::test_util::{FakeNorthbound, FakeRegistry, tenant};
use ferry_adapter_core::{AdapterContext, CoreConfig};
use ferry_registry_client::{DeviceId, TenantId};
use serde_json::json;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn shutdown_settles_the_deliveries_in_flight() -> TestResult {
    let registry = Arc::new(FakeRegistry::new());
    let tenant_id = TenantId::parse("t1")?;
    registry.add_tenant(tenant(json!({"tenant-id": "t1"}))?);
    registry.add_password_device(&tenant_id, &DeviceId::parse("dev-1")?, "sensor1", "pw1");
    let northbound = Arc::new(FakeNorthbound::new());
    northbound.set_delay(Some(Duration::from_millis(500)));
    let shutdown = CancellationToken::new();
    let ctx = AdapterContext::new(
        &CoreConfig::default(),
        ADAPTER_TYPE,
        registry,
        northbound.clone(),
        shutdown.clone(),
    );
    let any = "127.0.0.1:0".parse()?;
    let config = AmqpConfig {
        bind: any,
        tls_bind: any,
        ..AmqpConfig::default()
    };
    let adapter = AmqpAdapter::bind(&config, None, ctx).await?;
    let addr = adapter.local_addr().ok_or("no port")?;
    let task = tokio::spawn(adapter.run());

    let mut connection = Connection::builder()
        .container_id("device")
        .sasl_profile(SaslProfile::Plain {
            username: "sensor1@t1".to_owned(),
            password: "pw1".to_owned(),
        })
        .open(format!("amqp://{addr}").as_str())
        .await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut sender = Sender::builder()
        .name("upload")
        .target(Target::builder().build())
        .attach(&mut session)
        .await?;
    let mut pending = Vec::new();
    for payload in ["one", "two"] {
        let message = Message::builder()
            .properties(Properties {
                to: Some("t".to_owned()),
                content_type: Some("text/plain".into()),
                ..Properties::default()
            })
            .data(Binary::from(payload.as_bytes().to_vec()))
            .build();
        pending.push(sender.send_batchable(message).await?);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    for settlement in pending {
        let outcome = tokio::time::timeout(Duration::from_secs(5), settlement).await??;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }
    let mut payloads: Vec<_> = northbound.sent().into_iter().map(|m| m.payload).collect();
    payloads.sort();
    assert_eq!(payloads, ["one", "two"]);
    tokio::time::timeout(Duration::from_secs(10), task).await??;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    Ok(())
}
