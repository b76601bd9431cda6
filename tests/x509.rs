//! End to end: devices authenticating with X.509 client certificates on the HTTP adapter's TLS
//! port, with the real registry and northbound; certificates made by the test with rcgen.

mod common;

use std::time::Duration;

use common::x509::CertDevice;
use common::{AmqpConsumer, Error, TestGateway, TestResult};
use ferry_registry_client::test_pki::{TestCa, TestCert, Validity};
use rcgen::DnType;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

/// Tenant `t1` trusting a new CA named `ca_name`, and its device `d1` with an `x509-cert`
/// credential for the returned certificate (`CN=dev-1`).
async fn certificate_device(ferry: &TestGateway, ca_name: &str) -> Result<TestCert, Error> {
    let ca = TestCa::root(ca_name)?;
    ferry
        .tenant("t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    let cert = ca.device("dev-1")?;
    ferry.device("t1", "d1", json!({})).await?;
    ferry
        .x509_credential("t1", "d1", &cert.subject_dn())
        .await?;
    Ok(cert)
}

#[tokio::test]
async fn a_certificate_authenticates_on_the_port_basic_auth_uses() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let cert = certificate_device(&ferry, "x509-e2e").await?;
    ferry.device("t1", "d2", json!({})).await?;
    ferry.password("t1", "d2", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;

    let device = CertDevice::new(&ferry, Some(&cert), None)?;
    assert_eq!(device.send("/telemetry", "by certificate").await?, 202);
    let msg = consumer.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("d1"));
    assert_eq!(msg.payload, b"by certificate");

    // Basic auth on the same TLS port, from a client without a certificate.
    let plain = CertDevice::new(&ferry, None, None)?;
    let r = plain
        .client()
        .post(format!("{}/telemetry", plain.base()))
        .basic_auth("d2@t1", Some("pw"))
        .header("content-type", "text/plain")
        .body("by password")
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let msg = consumer.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("d2"));
    // Basic credentials win over a certificate.
    let r = device
        .client()
        .post(format!("{}/telemetry", device.base()))
        .basic_auth("d2@t1", Some("wrong"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    // Neither: 401.
    assert_eq!(plain.send("/telemetry", "x").await?, 401);
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// A keep-alive TLS connection reuses its certificate's authentication; removed credentials
/// must still be refused on the very next request of that connection.
#[tokio::test]
async fn removed_credentials_are_refused_on_the_next_request_of_a_connection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let cert = certificate_device(&ferry, "x509-memo").await?;
    let consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let device = CertDevice::new(&ferry, Some(&cert), None)?;
    for _ in 0..3 {
        assert_eq!(device.send("/telemetry", "x").await?, 202);
    }
    let r = ferry
        .client
        .put(ferry.mgmt("/credentials/t1/d1"))
        .json(&json!([]))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(device.send("/telemetry", "x").await?, 401);
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn intermediates_and_two_cas_per_tenant() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let root = TestCa::root("x509-root")?;
    let intermediate = root.intermediate("x509-intermediate")?;
    let second = TestCa::root("x509-second")?;
    ferry
        .tenant(
            "t1",
            json!({"trusted-ca": [root.trusted_ca(), second.trusted_ca()]}),
        )
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    for (ca, id) in [(&intermediate, "via-intermediate"), (&second, "second-ca")] {
        let cert = ca.device(id)?;
        ferry.device("t1", id, json!({})).await?;
        ferry.x509_credential("t1", id, &cert.subject_dn()).await?;
        let device = CertDevice::new(&ferry, Some(&cert), None)?;
        assert_eq!(device.send("/telemetry", "x").await?, 202, "{id}");
        let msg = consumer.next(WAIT).await?.ok_or("no telemetry")?;
        assert_eq!(msg.prop("device_id").as_deref(), Some(id));
    }
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_certificates_are_refused_with_401() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("x509-refusals")?;
    ferry
        .tenant("t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let subject = [(DnType::CommonName, "refused")];
    let cases = [
        ("expired", ca.issue(&subject, Validity::Expired)?),
        ("not yet valid", ca.issue(&subject, Validity::NotYetValid)?),
        (
            "foreign CA",
            TestCa::root("x509-foreign")?.issue(&subject, Validity::Current)?,
        ),
        (
            "impostor CA",
            TestCa::root("x509-refusals")?.issue(&subject, Validity::Current)?,
        ),
        ("unregistered", ca.device("unregistered")?),
    ];
    ferry.device("t1", "refused", json!({})).await?;
    ferry.x509_credential("t1", "refused", "CN=refused").await?;
    for (case, cert) in &cases {
        let device = CertDevice::new(&ferry, Some(cert), None)?;
        assert_eq!(device.send("/telemetry", "x").await?, 401, "{case}");
    }
    // The registered subject with a good certificate passes: the refusals were the certificates'.
    let good = CertDevice::new(&ferry, Some(&ca.issue(&subject, Validity::Current)?), None)?;
    assert_eq!(good.send("/telemetry", "x").await?, 202);
    assert!(consumer.next(WAIT).await?.is_some());
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_ca_outside_its_window_is_refused_until_the_window_is_current() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("x509-window")?;
    let mut entry = ca.trusted_ca();
    entry["not-before"] = json!("2080-01-01T00:00:00Z");
    ferry.tenant("t1", json!({"trusted-ca": [entry]})).await?;
    let cert = ca.device("dev")?;
    ferry.device("t1", "dev", json!({})).await?;
    ferry
        .x509_credential("t1", "dev", &cert.subject_dn())
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    let device = CertDevice::new(&ferry, Some(&cert), None)?;
    assert_eq!(device.send("/telemetry", "x").await?, 401);
    ferry
        .update_tenant("t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    assert_eq!(device.send("/telemetry", "x").await?, 202);
    assert!(consumer.next(WAIT).await?.is_some());
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn sni_does_not_override_the_issuer_and_names_no_untrusting_tenant() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("x509-sni")?;
    ferry
        .tenant("t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    ferry.tenant("t2", json!({})).await?;
    let cert = ca.device("dev")?;
    ferry.device("t1", "dev", json!({})).await?;
    ferry
        .x509_credential("t1", "dev", &cert.subject_dn())
        .await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;
    // The issuer finds t1 even though the SNI names t2.
    let device = CertDevice::new(&ferry, Some(&cert), Some("t2.ferry.test"))?;
    assert_eq!(device.send("/telemetry", "x").await?, 202);
    let msg = consumer.next(WAIT).await?.ok_or("no telemetry")?;
    assert_eq!(msg.prop("device_id").as_deref(), Some("dev"));
    // An unknown issuer falls back to the SNI tenant, which does not trust it either.
    let foreign = TestCa::root("x509-sni-foreign")?.device("dev")?;
    let device = CertDevice::new(&ferry, Some(&foreign), Some("t1.ferry.test"))?;
    assert_eq!(device.send("/telemetry", "x").await?, 401);
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_ca_shared_by_a_trust_anchor_group_needs_the_sni_to_name_the_tenant() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    let ca = TestCa::root("x509-shared")?;
    for tenant in ["alpha", "beta"] {
        ferry
            .tenant(
                tenant,
                json!({"trust-anchor-group": "fleet", "trusted-ca": [ca.trusted_ca()]}),
            )
            .await?;
    }
    // Outside the group the same CA is refused.
    let r = ferry
        .client
        .post(ferry.mgmt("/tenants/gamma"))
        .json(&json!({"trusted-ca": [ca.trusted_ca()]}))
        .send()
        .await?;
    assert_eq!(r.status(), 409);
    let cert = ca.device("shared-dev")?;
    for (tenant, device) in [("alpha", "in-alpha"), ("beta", "in-beta")] {
        ferry.device(tenant, device, json!({})).await?;
        ferry
            .x509_credential(tenant, device, &cert.subject_dn())
            .await?;
    }
    for (tenant, device) in [("beta", "in-beta"), ("alpha", "in-alpha")] {
        let mut consumer =
            AmqpConsumer::attach(&ferry.addrs, &format!("telemetry/{tenant}")).await?;
        let client = CertDevice::new(&ferry, Some(&cert), Some(&format!("{tenant}.ferry.test")))?;
        assert_eq!(client.send("/telemetry", "x").await?, 202, "{tenant}");
        let msg = consumer.next(WAIT).await?.ok_or("no telemetry")?;
        assert_eq!(msg.prop("device_id").as_deref(), Some(device));
        consumer.close().await;
    }
    // Without SNI the issuer names no single tenant: 401 (unknown issuer, logged as such).
    let no_sni = CertDevice::new(&ferry, Some(&cert), None)?;
    assert_eq!(no_sni.send("/telemetry", "x").await?, 401);
    // An SNI naming a tenant outside the group does not help either.
    ferry.tenant("gamma", json!({})).await?;
    let outside = CertDevice::new(&ferry, Some(&cert), Some("gamma.ferry.test"))?;
    assert_eq!(outside.send("/telemetry", "x").await?, 401);
    ferry.stop().await;
    Ok(())
}
