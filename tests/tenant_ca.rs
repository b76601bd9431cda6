//! End to end, `/v1/provisioning`: a tenant CA issues a device certificate that auto-provisions
//! its device; `ferry pki` files uploaded in bulk with `ferry provision` make devices that
//! authenticate by certificate.

mod common;

use std::time::Duration;

use base64::Engine;
use common::x509::{CertDevice, issued_cert};
use common::{AmqpConsumer, TestGateway, TestResult, config};
use ferry_registry::EncryptionKey;
use ferry_registry_client::test_pki::TestCert;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_certificate_issued_by_a_tenant_ca_provisions_its_device() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(dir.path());
    config.registry.ca_encryption_key = Some(EncryptionKey(
        base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
    ));
    let ferry = TestGateway::start_with(config).await?;
    ferry.tenant("fleet", json!({})).await?;
    let r = ferry
        .client
        .post(ferry.mgmt("/provisioning/fleet/cas"))
        .json(&json!({
            "common-name": "Fleet CA",
            "auto-provisioning-enabled": true,
            "auto-provisioning-device-id-template": "{{subject-cn}}"
        }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let ca: Value = r.json().await?;
    let ca_id = ca["id"].as_str().ok_or("no CA id")?;
    let r = ferry
        .client
        .post(ferry.mgmt(&format!("/provisioning/fleet/cas/{ca_id}/certificates")))
        .json(&json!({"common-name": "truck-17", "validity-days": 90}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let cert = issued_cert(&r.json().await?)?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/fleet").await?;
    let device = CertDevice::new(&ferry, Some(&cert), None)?;
    assert_eq!(device.send("/telemetry", "on the road").await?, 202);
    let msg = telemetry.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("truck-17"));
    let doc = ferry
        .read_device("fleet", "truck-17")
        .await?
        .ok_or("device not provisioned")?;
    assert_eq!(doc["status"]["auto-provisioned"], json!(true));
    telemetry.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn pki_files_and_a_bulk_upload_make_devices_that_authenticate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(&dir.path().join("ferry")).await?;
    let pki_dir = dir.path().join("pki");
    let written = ferry::pki::run(&pki_dir, "E2E Demo CA", "demo", 3)?;
    let tenant: Value =
        serde_json::from_str(&std::fs::read_to_string(pki_dir.join("tenant.json"))?)?;
    ferry.tenant("t1", tenant).await?;
    let target = ferry::provision::Target {
        base: format!("http://{}", ferry.addrs.management),
        user: None,
    };
    let summary = ferry::provision::run(&target, "t1", &pki_dir.join("devices.csv"), false).await?;
    assert_eq!(summary.total, 3);
    assert_eq!(summary.created, 3, "{:?}", summary.failures);

    let (cert_path, key_path) = &written.devices[0];
    let cert = CertificateDer::from_pem_file(cert_path)?;
    let device = TestCert {
        chain: vec![cert.clone()],
        cert,
        key_pem: std::fs::read_to_string(key_path)?,
    };
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let client = CertDevice::new(&ferry, Some(&device), None)?;
    assert_eq!(client.send("/telemetry", "bulk").await?, 202);
    let msg = telemetry.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("demo-1"));
    // Provisioned in bulk, not on first contact.
    let doc = ferry
        .read_device("t1", "demo-1")
        .await?
        .ok_or("no device")?;
    assert_eq!(doc["status"].get("auto-provisioned"), None);
    telemetry.close().await;
    ferry.stop().await;
    Ok(())
}
