//! Just-in-time provisioning with claiming: a `claim-required` CA provisions devices unclaimed,
//! their assertions are refused until the owner claims them with the ownership code, wrong codes
//! are rate limited, and codes are stored only hashed.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{Server, TestResult, config, expect, start};
use ferry_registry::{
    ClaimLimits, NotifyError, ProvisioningNotice, ProvisioningNotifier, RegistryConfig,
};
use ferry_registry_client::test_pki::{TestCa, TestCert};
use ferry_registry_client::{
    CredentialType, CredentialsApi, DeviceId, RegistrationApi, RegistryChange, TenantId,
};
use reqwest::StatusCode;
use serde_json::{Map, json};

const CODE: &str = "owner-code-1234";

#[derive(Default)]
struct Notices(Mutex<Vec<ProvisioningNotice>>);

#[async_trait]
impl ProvisioningNotifier for Notices {
    async fn device_provisioned(&self, notice: &ProvisioningNotice) -> Result<(), NotifyError> {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(notice.clone());
        }
        Ok(())
    }
}

fn limited(per_device: u32) -> RegistryConfig {
    RegistryConfig {
        claim_limits: ClaimLimits {
            per_device,
            ..ClaimLimits::default()
        },
        ..config()
    }
}

/// A registry whose tenant `t1` trusts `ca` with `claim-required`.
async fn setup(ca: &TestCa, config: RegistryConfig) -> Result<Server, Box<dyn std::error::Error>> {
    let s = start(config).await?;
    let mut entry = ca.trusted_ca();
    entry["claim-required"] = json!(true);
    entry["auto-provisioning-device-id-template"] = json!("{{subject-cn}}");
    s.tenant("t1", json!({"trusted-ca": [entry]})).await?;
    Ok(s)
}

/// The first contact of `cert`: provisions its device; returns the device id.
async fn first_contact(
    s: &Server,
    cert: &TestCert,
) -> Result<DeviceId, Box<dyn std::error::Error>> {
    let mut context = Map::new();
    context.insert("client-certificate".into(), cert.base64().into());
    let r = s
        .registry
        .get_credentials(
            &TenantId::parse("t1")?,
            CredentialType::X509Cert,
            &cert.subject_dn(),
            &context,
        )
        .await?;
    assert!(r.created);
    Ok(r.payload.device_id.clone())
}

async fn set_code(s: &Server, cert: &TestCert, code: &str) -> TestResult {
    let r = s
        .put(
            "/provisioning/t1/ownership-codes",
            json!({"subject-dn": cert.subject_dn(), "ownership-code": code}),
        )
        .await?;
    expect(r.status, StatusCode::NO_CONTENT, &r.body)
}

async fn claim(
    s: &Server,
    device: &str,
    code: &str,
) -> Result<StatusCode, Box<dyn std::error::Error>> {
    let r = s
        .post(
            "/provisioning/t1/claims",
            json!({"device-id": device, "ownership-code": code}),
        )
        .await?;
    Ok(r.status)
}

#[tokio::test]
async fn a_claim_with_the_right_code_turns_an_unclaimed_device_into_a_normal_one() -> TestResult {
    let ca = TestCa::root("claim-ca")?;
    let s = setup(&ca, config()).await?;
    let notices = Arc::new(Notices::default());
    s.registry.set_provisioning_notifier(notices.clone());
    // claim-required implies auto-provisioning in the stored CA entry.
    let t = s.get("/tenants/t1").await?;
    assert_eq!(
        t.body["trusted-ca"][0]["auto-provisioning-enabled"],
        json!(true)
    );
    let cert = ca.device("sensor-1")?;
    set_code(&s, &cert, CODE).await?;
    let device = first_contact(&s, &cert).await?;
    assert_eq!(device.as_str(), "sensor-1");
    let seen = notices.0.lock().map(|n| n.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].unclaimed);

    let t1 = TenantId::parse("t1")?;
    let refused = s.registry.assert_registration(&t1, &device, None).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_not_claimed()),
        "{refused:?}"
    );
    let doc = s.get("/devices/t1/sensor-1").await?;
    assert_eq!(
        doc.body["status"]["claim"]["subject-dn"],
        json!(cert.subject_dn())
    );

    assert_eq!(
        claim(&s, "sensor-1", "not-the-code").await?,
        StatusCode::FORBIDDEN
    );
    assert_eq!(claim(&s, "nobody", CODE).await?, StatusCode::NOT_FOUND);
    let r = s
        .post("/provisioning/t1/claims", json!({"device-id": "sensor-1"}))
        .await?;
    expect(r.status, StatusCode::BAD_REQUEST, &r.body)?;
    s.changes.take();
    assert_eq!(claim(&s, "sensor-1", CODE).await?, StatusCode::NO_CONTENT);
    // The change is reported, so caches drop the refusal.
    assert!(s.changes.take().contains(&RegistryChange::Device {
        tenant_id: t1.clone(),
        device_id: device.clone(),
    }));
    assert!(
        s.registry
            .assert_registration(&t1, &device, None)
            .await
            .is_ok()
    );
    let doc = s.get("/devices/t1/sensor-1").await?;
    assert!(doc.body["status"]["claim"]["claimed"].is_string());
    assert_eq!(claim(&s, "sensor-1", CODE).await?, StatusCode::CONFLICT);

    // A device of a CA without claim-required needs no claim.
    s.device("t1", "plain", json!({})).await?;
    assert_eq!(claim(&s, "plain", CODE).await?, StatusCode::CONFLICT);
    Ok(())
}

#[tokio::test]
async fn wrong_codes_are_rate_limited_and_the_right_code_waits_too() -> TestResult {
    let ca = TestCa::root("claim-limits")?;
    let s = setup(&ca, limited(3)).await?;
    let cert = ca.device("sensor-2")?;
    set_code(&s, &cert, CODE).await?;
    first_contact(&s, &cert).await?;
    for _ in 0..3 {
        assert_eq!(
            claim(&s, "sensor-2", "wrong-code").await?,
            StatusCode::FORBIDDEN
        );
    }
    let r = s
        .post(
            "/provisioning/t1/claims",
            json!({"device-id": "sensor-2", "ownership-code": "wrong-code"}),
        )
        .await?;
    expect(r.status, StatusCode::TOO_MANY_REQUESTS, &r.body)?;
    let retry = s
        .call(
            reqwest::Method::POST,
            "/provisioning/t1/claims",
            Some(json!({"device-id": "sensor-2", "ownership-code": CODE})),
            &[],
        )
        .await?;
    // The right code is refused while the device is limited, with a Retry-After.
    expect(retry.status, StatusCode::TOO_MANY_REQUESTS, &retry.body)?;
    let still = s
        .registry
        .assert_registration(&TenantId::parse("t1")?, &DeviceId::parse("sensor-2")?, None)
        .await;
    assert!(still.is_err_and(|e| e.is_not_claimed()));
    Ok(())
}

#[tokio::test]
async fn ownership_codes_are_stored_only_as_salted_hashes() -> TestResult {
    let ca = TestCa::root("claim-hash")?;
    let s = setup(&ca, config()).await?;
    let (a, b) = (ca.device("a")?, ca.device("b")?);
    set_code(&s, &a, CODE).await?;
    set_code(&s, &b, CODE).await?;
    let r = s
        .put(
            "/provisioning/t1/ownership-codes",
            json!({"subject-dn": a.subject_dn(), "ownership-code": "short"}),
        )
        .await?;
    expect(r.status, StatusCode::BAD_REQUEST, &r.body)?;
    let conn = rusqlite::Connection::open(&s.db)?;
    let hashes: Vec<String> = conn
        .prepare("SELECT code_hash FROM ownership_codes ORDER BY subject_dn")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(hashes.len(), 2);
    // Salted: one code, two different hashes; and the code appears nowhere in the file.
    assert_ne!(hashes[0], hashes[1]);
    assert!(
        hashes
            .iter()
            .all(|h| h.starts_with("$2a$") && !h.contains(CODE))
    );
    drop(conn);
    let bytes = std::fs::read(&s.db)?;
    let wal = std::fs::read(s.db.with_extension("db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(!file.windows(CODE.len()).any(|w| w == CODE.as_bytes()));
    }
    Ok(())
}
