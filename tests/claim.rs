//! End to end, just-in-time provisioning with claiming: a tenant CA with `claim-required` issues
//! a certificate with an ownership code; the device is provisioned on its first TLS request but
//! refused with 403 until its owner claims it, wrong codes are rate limited, and the code is
//! stored only hashed.

mod common;

use std::time::Duration;

use base64::Engine;
use common::x509::{CertDevice, issued_cert};
use common::{AmqpConsumer, TestGateway, TestResult, config};
use ferry_registry::EncryptionKey;
use ferry_registry_client::test_pki::TestCert;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const CODE: &str = "kitchen-7731";
const NOTIFICATION: &str = "application/vnd.eclipse-hono-device-provisioning-notification";

/// A gateway whose tenant `home` has a CA with `claim-required`; returns it and the CA id.
async fn start(
    dir: &std::path::Path,
    per_device: u32,
) -> Result<(TestGateway, String), common::Error> {
    let mut config = config(dir);
    config.registry.ca_encryption_key = Some(EncryptionKey(
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    ));
    config.registry.claim_limits.per_device = per_device;
    let ferry = TestGateway::start_with(config).await?;
    ferry.tenant("home", json!({})).await?;
    let r = ferry
        .client
        .post(ferry.mgmt("/provisioning/home/cas"))
        .json(&json!({
            "common-name": "Home devices CA",
            "claim-required": true,
            "auto-provisioning-device-id-template": "{{subject-cn}}"
        }))
        .send()
        .await?;
    if r.status() != 201 {
        return Err(format!("create CA: {} {}", r.status(), r.text().await?).into());
    }
    let ca: Value = r.json().await?;
    let id = ca["id"].as_str().ok_or("no CA id")?.to_owned();
    Ok((ferry, id))
}

/// Issues a certificate for `name` with the ownership code.
async fn issue(ferry: &TestGateway, ca: &str, name: &str) -> Result<TestCert, common::Error> {
    let r = ferry
        .client
        .post(ferry.mgmt(&format!("/provisioning/home/cas/{ca}/certificates")))
        .json(&json!({"common-name": name, "ownership-code": CODE}))
        .send()
        .await?;
    if r.status() != 201 {
        return Err(format!("issue: {} {}", r.status(), r.text().await?).into());
    }
    issued_cert(&r.json().await?)
}

/// POSTs a claim; returns the response.
async fn claim(
    ferry: &TestGateway,
    device: &str,
    code: &str,
) -> Result<reqwest::Response, common::Error> {
    Ok(ferry
        .client
        .post(ferry.mgmt("/provisioning/home/claims"))
        .json(&json!({"device-id": device, "ownership-code": code}))
        .send()
        .await?)
}

#[tokio::test]
async fn an_unclaimed_device_is_refused_until_its_owner_claims_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ferry, ca) = start(dir.path(), 5).await?;
    let cert = issue(&ferry, &ca, "oven-1").await?;
    let mut events = AmqpConsumer::attach(&ferry.addrs, "event/home").await?;
    let mut telemetry = AmqpConsumer::attach(&ferry.addrs, "telemetry/home").await?;
    let device = CertDevice::new(&ferry, Some(&cert), None)?;

    // First contact: provisioned, authenticated, but the upload is refused as unclaimed.
    let r = device
        .client()
        .post(format!("{}/telemetry", device.base()))
        .header("content-type", "text/plain")
        .body("preheated")
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let text = r.text().await?;
    assert!(text.contains("not claimed"), "{text}");
    let notice = events
        .next(WAIT)
        .await?
        .ok_or("no provisioning notification")?;
    assert_eq!(notice.content_type.as_deref(), Some(NOTIFICATION));
    assert_eq!(notice.prop("device_id").as_deref(), Some("oven-1"));
    assert_eq!(notice.prop("ferry_unclaimed").as_deref(), Some("true"));
    let doc = ferry
        .read_device("home", "oven-1")
        .await?
        .ok_or("not provisioned")?;
    assert_eq!(doc["status"]["auto-provisioned"], json!(true));
    // Refused again (the refusal is cached, which the claim must undo).
    assert_eq!(device.send("/telemetry", "x").await?, 403);

    assert_eq!(claim(&ferry, "oven-1", "wrong-code").await?.status(), 403);
    assert_eq!(claim(&ferry, "fridge-9", CODE).await?.status(), 404);
    assert_eq!(claim(&ferry, "oven-1", CODE).await?.status(), 204);
    // Accepted right away: the claim invalidated the cached refusal.
    assert_eq!(device.send("/telemetry", "claimed").await?, 202);
    let msg = telemetry.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("oven-1"));
    assert_eq!(msg.payload, b"claimed");
    assert_eq!(claim(&ferry, "oven-1", CODE).await?.status(), 409);

    // The code is nowhere in the database files, only its hash is.
    ferry.stop().await;
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path.to_string_lossy().contains("registry") {
            let bytes = std::fs::read(&path)?;
            assert!(
                !bytes.windows(CODE.len()).any(|w| w == CODE.as_bytes()),
                "{path:?} holds the ownership code"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no registry database file found");
    events.close().await;
    telemetry.close().await;
    Ok(())
}

#[tokio::test]
async fn wrong_codes_are_rate_limited_and_then_even_the_right_code_waits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ferry, ca) = start(dir.path(), 3).await?;
    let cert = issue(&ferry, &ca, "lamp-2").await?;
    let device = CertDevice::new(&ferry, Some(&cert), None)?;
    assert_eq!(device.send("/telemetry", "x").await?, 403);
    for _ in 0..3 {
        assert_eq!(claim(&ferry, "lamp-2", "guess-0000").await?.status(), 403);
    }
    let r = claim(&ferry, "lamp-2", "guess-0001").await?;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .ok_or("no Retry-After")?
        .to_str()?
        .parse()?;
    assert!(retry_after > 0);
    // The right code is refused as well while the device is limited, and it stays unclaimed.
    assert_eq!(claim(&ferry, "lamp-2", CODE).await?.status(), 429);
    assert_eq!(device.send("/telemetry", "x").await?, 403);
    ferry.stop().await;
    Ok(())
}
