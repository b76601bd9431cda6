//! Auto-provisioning by certificate and by gateway, and the provisioning notification.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{Server, TestResult, config, start};
use ferry_registry::{NotifyError, ProvisioningNotice, ProvisioningNotifier};
use ferry_registry_client::test_pki::{TestCa, TestCert};
use ferry_registry_client::{
    CredentialType, CredentialsApi, DeviceId, RegistrationApi, RegistryError, TenantId,
};
use serde_json::{Map, Value, json};

/// Records notifications; fails the first `fail` of them.
#[derive(Default)]
struct Notices {
    seen: Mutex<Vec<ProvisioningNotice>>,
    fail: AtomicUsize,
}

#[async_trait]
impl ProvisioningNotifier for Notices {
    async fn device_provisioned(&self, notice: &ProvisioningNotice) -> Result<(), NotifyError> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(NotifyError("told to fail".to_owned()));
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(notice.clone());
        }
        Ok(())
    }
}

impl Notices {
    fn seen(&self) -> Vec<ProvisioningNotice> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn setup(ca_entry: Value) -> Result<(Server, Arc<Notices>), Box<dyn std::error::Error>> {
    let s = start(config()).await?;
    let notices = Arc::new(Notices::default());
    s.registry.set_provisioning_notifier(notices.clone());
    s.tenant("t1", json!({"trusted-ca": [ca_entry]})).await?;
    Ok((s, notices))
}

fn context(cert: &TestCert) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("client-certificate".into(), cert.base64().into());
    context.insert("subject-dn".into(), cert.subject_dn().into());
    context
}

fn t1() -> Result<TenantId, Box<dyn std::error::Error>> {
    Ok(TenantId::parse("t1")?)
}

fn provisioning(ca: &TestCa) -> Value {
    let mut entry = ca.trusted_ca();
    entry["auto-provisioning-enabled"] = json!(true);
    entry
}

#[tokio::test]
async fn a_certificate_provisions_its_device_and_credential() -> TestResult {
    let ca = TestCa::root("prov-ca")?;
    let mut entry = provisioning(&ca);
    entry["auto-provisioning-device-id-template"] = json!("dev-{{subject-cn}}");
    entry["auto-provision-as-gateway"] = json!(true);
    let (s, notices) = setup(entry).await?;
    let cert = ca.device("c1")?;
    let dn = cert.subject_dn();
    let r = s
        .registry
        .get_credentials(&t1()?, CredentialType::X509Cert, &dn, &context(&cert))
        .await?;
    assert!(r.created);
    assert_eq!(r.payload.device_id.as_str(), "dev-c1");
    assert_eq!(r.payload.auth_id, dn);

    let device = s.get("/devices/t1/dev-c1").await?;
    assert_eq!(device.status, 200);
    assert_eq!(device.body["status"]["auto-provisioned"], json!(true));
    assert_eq!(
        device.body["status"]["auto-provisioning-notification-sent"],
        json!(true)
    );
    assert_eq!(
        device.body["authorities"],
        json!(["auto-provisioning-enabled"])
    );
    let credentials = s.get("/credentials/t1/dev-c1").await?;
    assert_eq!(credentials.body[0]["type"], json!("x509-cert"));
    assert_eq!(credentials.body[0]["auth-id"], json!(dn));

    let again = s
        .registry
        .get_credentials(&t1()?, CredentialType::X509Cert, &dn, &context(&cert))
        .await?;
    assert!(!again.created);
    assert_eq!(again.payload.device_id.as_str(), "dev-c1");
    let seen = notices.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].device_id.as_str(), "dev-c1");
    assert_eq!(seen[0].gateway_id, None);
    Ok(())
}

#[tokio::test]
async fn nothing_is_provisioned_without_a_trusted_provisioning_ca() -> TestResult {
    let ca = TestCa::root("prov-refusals")?;
    let (s, notices) = setup(provisioning(&ca)).await?;
    let t = t1()?;
    let cert = ca.device("c1")?;
    let dn = cert.subject_dn();
    let x509 = CredentialType::X509Cert;
    // No certificate in the context.
    let r = s.registry.get_credentials(&t, x509, &dn, &Map::new()).await;
    assert_eq!(r.err(), Some(RegistryError::NotFound));
    // The certificate's subject is not the auth-id.
    let r = s
        .registry
        .get_credentials(&t, x509, "CN=someone-else", &context(&cert))
        .await;
    assert!(matches!(r, Err(RegistryError::BadRequest(_))), "{r:?}");
    // Same issuer DN, another key: the registry checks the signature itself.
    let impostor = TestCa::root("prov-refusals")?.device("c2")?;
    let r = s
        .registry
        .get_credentials(&t, x509, &impostor.subject_dn(), &context(&impostor))
        .await;
    assert!(matches!(r, Err(RegistryError::BadRequest(_))), "{r:?}");
    // A CA that does not auto-provision.
    s.put("/tenants/t1", json!({"trusted-ca": [ca.trusted_ca()]}))
        .await?;
    let r = s
        .registry
        .get_credentials(&t, x509, &dn, &context(&cert))
        .await;
    assert_eq!(r.err(), Some(RegistryError::NotFound));
    assert_eq!(s.get("/devices/t1").await?.status, 404);
    assert!(notices.seen().is_empty());
    Ok(())
}

#[tokio::test]
async fn concurrent_first_contacts_with_one_certificate_create_one_device() -> TestResult {
    let ca = TestCa::root("prov-race")?;
    let (s, notices) = setup(provisioning(&ca)).await?;
    let cert = ca.device("racer")?;
    let (dn, ctx) = (cert.subject_dn(), context(&cert));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (registry, dn, ctx, t) = (s.registry.clone(), dn.clone(), ctx.clone(), t1()?);
        tasks.spawn(async move {
            registry
                .get_credentials(&t, CredentialType::X509Cert, &dn, &ctx)
                .await
        });
    }
    let mut devices = std::collections::HashSet::new();
    let mut created = 0;
    while let Some(outcome) = tasks.join_next().await {
        let r = outcome??;
        created += usize::from(r.created);
        devices.insert(r.payload.device_id.clone());
    }
    assert_eq!(created, 1);
    assert_eq!(devices.len(), 1);
    let listed = s.get("/devices/t1").await?;
    assert_eq!(listed.body["total"], json!(1));
    assert_eq!(notices.seen().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_failed_notification_is_sent_again_on_a_later_lookup() -> TestResult {
    let ca = TestCa::root("prov-retry")?;
    let (s, notices) = setup(provisioning(&ca)).await?;
    notices.fail.store(1, Ordering::SeqCst);
    let cert = ca.device("c1")?;
    let dn = cert.subject_dn();
    let r = s
        .registry
        .get_credentials(&t1()?, CredentialType::X509Cert, &dn, &context(&cert))
        .await?;
    assert!(r.created);
    let id = r.payload.device_id.clone();
    let path = format!("/devices/t1/{id}");
    let flag = |body: &Value| body["status"]["auto-provisioning-notification-sent"].clone();
    assert_eq!(flag(&s.get(&path).await?.body), json!(false));
    assert!(notices.seen().is_empty());

    // The next lookup (here the registration assertion) sends it again.
    s.registry.assert_registration(&t1()?, &id, None).await?;
    assert_eq!(flag(&s.get(&path).await?.body), json!(true));
    assert_eq!(notices.seen().len(), 1);
    s.registry.assert_registration(&t1()?, &id, None).await?;
    assert_eq!(notices.seen().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_provisioning_gateway_creates_unknown_devices() -> TestResult {
    let s = start(config()).await?;
    let notices = Arc::new(Notices::default());
    s.registry.set_provisioning_notifier(notices.clone());
    s.tenant("t1", json!({})).await?;
    s.device(
        "t1",
        "gw",
        json!({"authorities": ["auto-provisioning-enabled"], "memberOf": ["group-a"]}),
    )
    .await?;
    s.device("t1", "plain-gw", json!({})).await?;
    let t = t1()?;
    let (gw, plain, new) = (
        DeviceId::parse("gw")?,
        DeviceId::parse("plain-gw")?,
        DeviceId::parse("new-1")?,
    );
    // A gateway without the authority provisions nothing.
    let r = s.registry.assert_registration(&t, &new, Some(&plain)).await;
    assert_eq!(r.err(), Some(RegistryError::NotFound));
    assert_eq!(s.get("/devices/t1/new-1").await?.status, 404);

    let r = s.registry.assert_registration(&t, &new, Some(&gw)).await?;
    assert!(r.payload.via.contains(&gw));
    let device = s.get("/devices/t1/new-1").await?.body;
    assert_eq!(device["via"], json!(["gw"]));
    assert_eq!(device["viaGroups"], json!(["group-a"]));
    assert_eq!(device["status"]["auto-provisioned"], json!(true));
    assert_eq!(
        device["status"]["auto-provisioning-notification-sent"],
        json!(true)
    );
    let seen = notices.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].device_id, new);
    assert_eq!(seen[0].gateway_id, Some(gw.clone()));
    // Known now: asserted without provisioning again.
    s.registry.assert_registration(&t, &new, Some(&gw)).await?;
    assert_eq!(notices.seen().len(), 1);
    Ok(())
}
