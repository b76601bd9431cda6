//! Tests of X.509 authentication: chains made with rcgen against the in-memory registry.

use std::sync::Arc;

use ferry_registry_client::test_pki::{TestCa, TestCert, Validity};
use ferry_registry_client::{CredentialType, CredentialsObject, DeviceId, Secret, TenantId};
use rcgen::DnType;
use serde_json::{Map, Value, json};

use super::x509::MAX_CHAIN_LENGTH;
use super::*;
use crate::test_util::{FakeRegistry, tenant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    registry: Arc<FakeRegistry>,
    auth: Authenticator,
    t1: TenantId,
}

fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let registry = Arc::new(FakeRegistry::new());
    let auth = Authenticator::new(registry.clone(), &CoreConfig::default());
    Ok(Fixture {
        registry,
        auth,
        t1: TenantId::parse("t1")?,
    })
}

impl Fixture {
    fn tenant(&self, id: &str, cas: Vec<Value>) -> TestResult {
        self.registry
            .add_tenant(tenant(json!({"tenant-id": id, "trusted-ca": cas}))?);
        Ok(())
    }

    /// Registers `cert` (auth-id = `auth_id`) as credentials of `device` in t1.
    fn register(&self, auth_id: &str, device: &str, enabled: bool, secret: Secret) -> TestResult {
        self.registry.add_credentials(
            &self.t1,
            CredentialsObject {
                device_id: DeviceId::parse(device)?,
                credential_type: CredentialType::X509Cert,
                auth_id: auth_id.to_owned(),
                enabled,
                secrets: vec![secret],
                ext: Map::new(),
            },
        );
        Ok(())
    }

    async fn login(&self, cert: &TestCert) -> Result<AuthenticatedDevice, AuthError> {
        self.auth.authenticate_x509(&cert.chain, None).await
    }
}

fn valid_secret() -> Secret {
    Secret {
        enabled: true,
        ..Secret::default()
    }
}

#[tokio::test]
async fn a_registered_certificate_authenticates_by_its_subject_dn() -> TestResult {
    let f = fixture()?;
    let ca = TestCa::root("ca-1")?;
    f.tenant("t1", vec![ca.trusted_ca()])?;
    let cert = ca.device("dev-1")?;
    let dn = cert.subject_dn();
    assert_eq!(dn, "CN=dev-1,OU=Devices,O=Ferry Test");
    f.register(&dn, "d1", true, valid_secret())?;
    let device = f.login(&cert).await?;
    assert_eq!(device.tenant_id, f.t1);
    assert_eq!(device.device_id.as_str(), "d1");
    assert_eq!(device.auth_id, dn);
    let context = f.registry.credential_contexts().pop().ok_or("no lookup")?;
    assert_eq!(context.get("subject-dn"), Some(&Value::from(dn)));
    assert_eq!(context.get("tenant-id"), Some(&Value::from("t1")));
    // Without auto-provisioning the certificate itself is not sent along.
    assert!(!context.contains_key("client-certificate"));
    Ok(())
}

#[tokio::test]
async fn intermediates_sent_by_the_device_lead_to_the_trusted_root() -> TestResult {
    let f = fixture()?;
    let root = TestCa::root("root")?;
    let intermediate = root.intermediate("intermediate")?;
    f.tenant("t1", vec![root.trusted_ca()])?;
    let cert = intermediate.device("dev-2")?;
    assert_eq!(cert.chain.len(), 2);
    f.register(&cert.subject_dn(), "d2", true, valid_secret())?;
    assert_eq!(f.login(&cert).await?.device_id.as_str(), "d2");

    // Without the intermediate there is no path to the root.
    let leaf_only = f.auth.authenticate_x509(&cert.chain[..1], None).await;
    assert!(
        matches!(leaf_only, Err(AuthError::UnknownIssuer(_))),
        "{leaf_only:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_intermediate_can_itself_be_the_trusted_ca() -> TestResult {
    let f = fixture()?;
    let intermediate = TestCa::root("root")?.intermediate("issuing")?;
    f.tenant("t1", vec![intermediate.trusted_ca()])?;
    let cert = intermediate.device("dev-3")?;
    f.register(&cert.subject_dn(), "d3", true, valid_secret())?;
    assert_eq!(f.login(&cert).await?.device_id.as_str(), "d3");
    Ok(())
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() -> TestResult {
    let f = fixture()?;
    let ca = TestCa::root("ca")?;
    f.tenant("t1", vec![ca.trusted_ca()])?;
    let subject = [(DnType::CommonName, "dev")];
    let expired = ca.issue(&subject, Validity::Expired)?;
    let future = ca.issue(&subject, Validity::NotYetValid)?;
    f.register(&expired.subject_dn(), "d", true, valid_secret())?;
    assert_eq!(f.login(&expired).await, Err(AuthError::CertificateExpired));
    assert_eq!(
        f.login(&future).await,
        Err(AuthError::CertificateNotYetValid)
    );
    assert!(
        f.login(&ca.issue(&subject, Validity::Current)?)
            .await
            .is_ok()
    );
    Ok(())
}

#[tokio::test]
async fn foreign_and_impostor_cas_are_refused() -> TestResult {
    let f = fixture()?;
    let ca = TestCa::root("ca")?;
    f.tenant("t1", vec![ca.trusted_ca()])?;
    let foreign = TestCa::root("foreign")?.device("dev")?;
    assert!(matches!(
        f.login(&foreign).await,
        Err(AuthError::UnknownIssuer(_))
    ));
    // Same subject DN as the trusted CA, another key: the signature does not verify.
    let impostor = TestCa::root("ca")?.device("dev")?;
    f.register(&impostor.subject_dn(), "d", true, valid_secret())?;
    assert!(matches!(
        f.login(&impostor).await,
        Err(AuthError::UntrustedChain(_))
    ));
    Ok(())
}

#[tokio::test]
async fn a_ca_outside_its_window_is_refused_and_its_successor_accepted() -> TestResult {
    let f = fixture()?;
    let old = TestCa::root("rolling")?;
    let new = TestCa::root("rolling")?;
    let mut old_entry = old.trusted_ca();
    old_entry["not-after"] = json!("2021-01-01T00:00:00Z");
    f.tenant("t1", vec![old_entry.clone()])?;
    let from_old = old.device("dev")?;
    f.register(&from_old.subject_dn(), "d", true, valid_secret())?;
    assert_eq!(
        f.login(&from_old).await,
        Err(AuthError::CaOutsideValidity(old.subject_dn()))
    );
    // Roll over: the same subject with a new key and a current window.
    f.tenant("t1", vec![old_entry, new.trusted_ca()])?;
    assert!(f.login(&new.device("dev")?).await.is_ok());
    assert!(matches!(
        f.login(&from_old).await,
        Err(AuthError::UntrustedChain(_))
    ));
    Ok(())
}

#[tokio::test]
async fn two_cas_of_one_tenant_both_authenticate() -> TestResult {
    let f = fixture()?;
    let (a, b) = (TestCa::root("ca-a")?, TestCa::root("ca-b")?);
    f.tenant("t1", vec![a.trusted_ca(), b.trusted_ca()])?;
    for (ca, device) in [(&a, "da"), (&b, "db")] {
        let cert = ca.device(device)?;
        f.register(&cert.subject_dn(), device, true, valid_secret())?;
        assert_eq!(f.login(&cert).await?.device_id.as_str(), device);
    }
    Ok(())
}

#[tokio::test]
async fn sni_names_the_tenant_when_the_issuer_is_ambiguous() -> TestResult {
    let f = fixture()?;
    let ca = TestCa::root("shared")?;
    // Two tenants trust the same CA: the lookup by issuer is ambiguous (404).
    f.tenant("t1", vec![ca.trusted_ca()])?;
    f.tenant("t2", vec![ca.trusted_ca()])?;
    let cert = ca.device("dev")?;
    f.register(&cert.subject_dn(), "d1", true, valid_secret())?;
    assert!(matches!(
        f.login(&cert).await,
        Err(AuthError::UnknownIssuer(_))
    ));
    let device = f
        .auth
        .authenticate_x509(&cert.chain, Some("t1.ferry.example"))
        .await?;
    assert_eq!(device.tenant_id, f.t1);
    // The named tenant must trust the issuer too.
    f.tenant("t3", vec![TestCa::root("other")?.trusted_ca()])?;
    assert!(matches!(
        f.auth
            .authenticate_x509(&cert.chain, Some("t3.ferry.example"))
            .await,
        Err(AuthError::UnknownIssuer(_))
    ));
    Ok(())
}

#[tokio::test]
async fn auth_id_template_and_auto_provisioning_context() -> TestResult {
    let f = fixture()?;
    let ca = TestCa::root("ca")?;
    let mut entry = ca.trusted_ca();
    entry["auth-id-template"] = json!("{{subject-ou}}-{{subject-cn}}");
    entry["auto-provisioning-enabled"] = json!(true);
    f.tenant("t1", vec![entry])?;
    let cert = ca.device("dev-9")?;
    // Unknown to the (fake) registry, which does not auto-provision: unknown credentials.
    assert_eq!(f.login(&cert).await, Err(AuthError::UnknownCredentials));
    let context = f.registry.credential_contexts().pop().ok_or("no lookup")?;
    assert_eq!(
        context.get("client-certificate"),
        Some(&Value::from(cert.base64()))
    );
    assert_eq!(
        context.get("auth-id-template"),
        Some(&Value::from("{{subject-ou}}-{{subject-cn}}"))
    );
    f.register("Devices-dev-9", "d9", true, valid_secret())?;
    assert_eq!(f.login(&cert).await?.auth_id, "Devices-dev-9");
    Ok(())
}

#[tokio::test]
async fn unknown_disabled_and_outdated_credentials_are_refused() -> TestResult {
    let f = fixture()?;
    let ca = TestCa::root("ca")?;
    f.tenant("t1", vec![ca.trusted_ca()])?;
    let cert = ca.device("dev")?;
    assert_eq!(
        f.login(&cert).await,
        Err(AuthError::UnregisteredCertificate)
    );
    f.register(&cert.subject_dn(), "d", false, valid_secret())?;
    assert_eq!(f.login(&cert).await, Err(AuthError::CredentialsDisabled));
    let outdated = Secret {
        not_after: Some(chrono::Utc::now() - chrono::Duration::days(1)),
        ..valid_secret()
    };
    f.register(&cert.subject_dn(), "d", true, outdated)?;
    assert_eq!(f.login(&cert).await, Err(AuthError::NoValidSecret));
    Ok(())
}

#[tokio::test]
async fn no_certificate_garbage_and_outages_have_their_own_errors() -> TestResult {
    let f = fixture()?;
    assert_eq!(
        f.auth.authenticate_x509(&[], None).await,
        Err(AuthError::NoClientCertificate)
    );
    let garbage = [rustls::pki_types::CertificateDer::from(vec![
        0x30, 0x03, 1, 2, 3,
    ])];
    assert!(matches!(
        f.auth.authenticate_x509(&garbage, None).await,
        Err(AuthError::MalformedCertificate(_))
    ));
    let cert = TestCa::root("ca")?.device("dev")?;
    let long = vec![cert.cert.clone(); MAX_CHAIN_LENGTH + 1];
    assert!(matches!(
        f.auth.authenticate_x509(&long, None).await,
        Err(AuthError::MalformedCertificate(_))
    ));
    f.registry.set_unavailable(true);
    assert!(matches!(
        f.login(&cert).await,
        Err(AuthError::RegistryUnavailable(_))
    ));
    Ok(())
}
