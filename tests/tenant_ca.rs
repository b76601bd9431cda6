//! End to end: a tenant CA created through `/v1/provisioning` issues a device certificate with a
//! generated key; the device connects with it over TLS and is auto-provisioned by its first
//! request.

mod common;

use std::time::Duration;

use base64::Engine;
use common::x509::CertDevice;
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
    let issued: Value = r.json().await?;
    let cert_pem = issued["cert"].as_str().ok_or("no cert")?;
    let cert = TestCert {
        cert: CertificateDer::from_pem_slice(cert_pem.as_bytes())?,
        chain: vec![CertificateDer::from_pem_slice(cert_pem.as_bytes())?],
        key_pem: issued["key"].as_str().ok_or("no key")?.to_owned(),
    };
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
