//! End to end: auto-provisioning over the HTTP adapter. A device with an unknown certificate of
//! a provisioning CA is created by its first request, which carries on (202); the registry's
//! provisioning notification reaches `event/TENANT`; gateways provision the devices they send for.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::x509::CertDevice;
use common::{AmqpConsumer, Received, TestGateway, TestResult};
use ferry_registry_client::test_pki::TestCa;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const NOTIFICATION: &str = "application/vnd.eclipse-hono-device-provisioning-notification";

fn provisioning(ca: &TestCa, device_id_template: Option<&str>) -> Value {
    let mut entry = ca.trusted_ca();
    entry["auto-provisioning-enabled"] = json!(true);
    if let Some(t) = device_id_template {
        entry["auto-provisioning-device-id-template"] = json!(t);
    }
    entry
}

/// Reads `event/TENANT` until `count` distinct devices were announced as provisioned; returns the
/// notifications by device id and the number of other events seen.
async fn notifications(
    consumer: &mut AmqpConsumer,
    count: usize,
) -> Result<(HashMap<String, Received>, usize), common::Error> {
    let mut seen = HashMap::new();
    let mut others = 0;
    while seen.len() < count {
        let msg = consumer
            .next(WAIT)
            .await?
            .ok_or_else(|| format!("only {} of {count} notifications arrived", seen.len()))?;
        if msg.content_type.as_deref() == Some(NOTIFICATION) {
            let device = msg
                .prop("device_id")
                .ok_or("notification without device_id")?;
            seen.insert(device, msg);
        } else {
            others += 1;
        }
    }
    Ok((seen, others))
}

#[tokio::test]
async fn an_unknown_certificate_is_provisioned_by_its_first_request() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("e2e-provisioning")?;
    ferry
        .tenant(
            "t1",
            json!({"trusted-ca": [provisioning(&ca, Some("auto-{{subject-cn}}"))]}),
        )
        .await?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/t1").await?;
    let cert = ca.device("sensor-7")?;
    let device = CertDevice::new(&ferry, Some(&cert), None)?;

    assert_eq!(device.send("/telemetry", "first words").await?, 202);
    let msg = telemetry.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.payload, b"first words");
    assert_eq!(msg.prop("device_id").as_deref(), Some("auto-sensor-7"));

    let (seen, _) = notifications(&mut events, 1).await?;
    let note = seen
        .get("auto-sensor-7")
        .ok_or("no notification for the device")?;
    assert_eq!(
        note.prop("hono_registration_status").as_deref(),
        Some("NEW")
    );
    assert_eq!(note.prop("tenant_id").as_deref(), Some("t1"));
    assert_eq!(
        note.prop("orig_adapter").as_deref(),
        Some("hono-device-registry")
    );
    assert_eq!(note.prop("gateway_id"), None);
    assert!(note.payload.is_empty());
    assert!(note.durable);

    let doc = ferry
        .read_device("t1", "auto-sensor-7")
        .await?
        .ok_or("device not created")?;
    assert_eq!(doc["status"]["auto-provisioned"], json!(true));
    assert_eq!(
        doc["status"]["auto-provisioning-notification-sent"],
        json!(true)
    );
    let credentials = ferry.read_credentials("t1", "auto-sensor-7").await?;
    assert_eq!(credentials[0]["auth-id"], json!(cert.subject_dn()));

    // The next request finds the device.
    assert_eq!(device.send("/telemetry", "again").await?, 202);
    assert!(telemetry.next(WAIT).await?.is_some());
    telemetry.close().await;
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_ca_without_auto_provisioning_refuses_unknown_certificates() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("e2e-no-provisioning")?;
    ferry
        .tenant("t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    let device = CertDevice::new(&ferry, Some(&ca.device("stranger")?), None)?;
    assert_eq!(device.send("/event", "x").await?, 401);
    assert!(ferry.devices("t1").await?.is_empty());
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_hundred_concurrent_first_connections_with_one_certificate_make_one_device() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("e2e-race")?;
    ferry
        .tenant("t1", json!({"trusted-ca": [provisioning(&ca, None)]}))
        .await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/t1").await?;
    let cert = ca.device("twin")?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        // One client each: 100 TLS connections presenting the same certificate.
        let device = CertDevice::new(&ferry, Some(&cert), None)?;
        tasks.spawn(async move { device.send("/event", "hello").await });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status??, 202);
    }
    let devices = ferry.devices("t1").await?;
    assert_eq!(devices.len(), 1, "{devices:?}");
    let id = devices[0]["id"].as_str().ok_or("no id")?.to_owned();
    let (seen, _) = notifications(&mut events, 1).await?;
    assert!(seen.contains_key(&id), "{:?}", seen.keys());
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn five_hundred_new_certificates_at_once_make_five_hundred_devices_and_notifications()
-> TestResult {
    const N: usize = 500;
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("e2e-crowd")?;
    ferry
        .tenant(
            "t1",
            json!({"trusted-ca": [provisioning(&ca, Some("{{subject-cn}}"))]}),
        )
        .await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/t1").await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let device = CertDevice::new(&ferry, Some(&ca.device(&format!("crowd-{i}"))?), None)?;
        tasks.spawn(async move { device.send("/event", "hello").await });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status??, 202);
    }
    let ids: HashSet<String> = ferry
        .devices("t1")
        .await?
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect();
    let expected: HashSet<String> = (0..N).map(|i| format!("crowd-{i}")).collect();
    assert_eq!(ids, expected);
    let (seen, _) = notifications(&mut events, N).await?;
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), expected);
    events.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_gateway_provisions_the_device_it_sends_for() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.tenant("t1", json!({})).await?;
    ferry
        .device(
            "t1",
            "gw-1",
            json!({"authorities": ["auto-provisioning-enabled"], "memberOf": ["line-1"]}),
        )
        .await?;
    ferry.password("t1", "gw-1", "gw-pw").await?;
    ferry.device("t1", "gw-2", json!({})).await?;
    ferry.password("t1", "gw-2", "gw-pw").await?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/t1").await?;
    let put = |gateway: &'static str, device: &'static str| {
        ferry
            .client
            .put(ferry.http(&format!("/telemetry/t1/{device}")))
            .basic_auth(format!("{gateway}@t1"), Some("gw-pw"))
            .header("content-type", "text/plain")
            .body("from the field")
            .send()
    };
    // A gateway without the authority cannot create devices.
    assert_eq!(put("gw-2", "field-1").await?.status(), 404);
    assert_eq!(ferry.read_device("t1", "field-1").await?, None);

    assert_eq!(put("gw-1", "field-1").await?.status(), 202);
    let msg = telemetry.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("field-1"));
    let (seen, _) = notifications(&mut events, 1).await?;
    let note = seen.get("field-1").ok_or("no notification")?;
    assert_eq!(note.prop("gateway_id").as_deref(), Some("gw-1"));
    assert_eq!(
        note.prop("hono_registration_status").as_deref(),
        Some("NEW")
    );
    let doc = ferry
        .read_device("t1", "field-1")
        .await?
        .ok_or("not created")?;
    assert_eq!(doc["via"], json!(["gw-1"]));
    assert_eq!(doc["viaGroups"], json!(["line-1"]));
    assert_eq!(doc["status"]["auto-provisioned"], json!(true));
    telemetry.close().await;
    events.close().await;
    ferry.stop().await;
    Ok(())
}
