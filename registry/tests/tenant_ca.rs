//! `/v1/provisioning`: tenant-managed CAs and device certificates.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{TestResult, config, start};
use ferry_registry::{EncryptionKey, Registry, RegistryConfig};
use ferry_registry_client::trust::{self, RING_ALGORITHMS};
use ferry_registry_client::x509::subject_dn_rfc2253;
use ferry_registry_client::{CredentialType, CredentialsApi, TenantApi, TenantId};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value, json};

fn with_key(byte: u8) -> RegistryConfig {
    RegistryConfig {
        ca_encryption_key: Some(EncryptionKey(STANDARD.encode([byte; 32]))),
        ..config()
    }
}

fn der(pem: &Value) -> Result<CertificateDer<'static>, Box<dyn std::error::Error>> {
    let pem = pem.as_str().ok_or("no PEM")?;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?)
}

fn csr(cn: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    Ok(params.serialize_request(&KeyPair::generate()?)?.pem()?)
}

#[tokio::test]
async fn without_an_encryption_key_tenant_cas_are_unavailable() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t1", json!({})).await?;
    let r = s.post("/provisioning/t1/cas", json!({})).await?;
    assert_eq!(r.status, 503);
    Ok(())
}

#[tokio::test]
async fn a_created_ca_is_trusted_and_issues_device_certificates() -> TestResult {
    let s = start(with_key(1)).await?;
    s.tenant("t1", json!({})).await?;
    let r = s
        .post(
            "/provisioning/t1/cas",
            json!({"common-name": "Fleet CA", "auto-provisioning-enabled": true}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.body);
    let ca_id = r.body["id"].as_str().ok_or("no id")?.to_owned();
    assert_eq!(r.body["subject-dn"], json!("CN=Fleet CA"));
    assert!(r.body.get("key").is_none());
    let ca_cert = der(&r.body["cert"])?;

    // It is one of the tenant's trusted CAs, found by its subject DN.
    let tenant = s.registry.get_tenant_by_ca("CN=Fleet CA").await?.payload;
    assert_eq!(tenant.tenant_id.as_str(), "t1");
    let entry = tenant
        .trusted_ca
        .iter()
        .find(|ca| ca.id.as_deref() == Some(ca_id.as_str()))
        .ok_or("CA entry missing")?;
    assert!(entry.auto_provisioning_enabled);

    // From a CSR: the certificate verifies against the tenant's CA entry, for client auth.
    let path = format!("/provisioning/t1/cas/{ca_id}/certificates");
    let r = s
        .post(&path, json!({"csr": csr("dev-1")?, "validity-days": 30}))
        .await?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("key").is_none());
    let device = der(&r.body["cert"])?;
    assert_eq!(subject_dn_rfc2253(&device)?, "CN=dev-1");
    let chain = [device.clone()];
    let names = trust::chain_names(&chain)?;
    let anchors = trust::anchors(&names, &tenant.trusted_ca);
    trust::verify_client_chain(&chain, &anchors, chrono::Utc::now(), RING_ALGORITHMS)?;

    // With a generated key, returned once.
    let r = s.post(&path, json!({"common-name": "dev-2"})).await?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.body["key"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
    );

    // The CA's certificate can be read again, its key never.
    let r = s.get(&format!("/provisioning/t1/cas/{ca_id}")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(der(&r.body["cert"])?, ca_cert);
    assert!(r.body.get("key").is_none());

    // The issued certificate auto-provisions its device.
    let mut context = Map::new();
    context.insert("client-certificate".into(), STANDARD.encode(&device).into());
    let created = s
        .registry
        .get_credentials(
            &TenantId::parse("t1")?,
            CredentialType::X509Cert,
            "CN=dev-1",
            &context,
        )
        .await?;
    assert!(created.created);
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_refused() -> TestResult {
    let s = start(with_key(2)).await?;
    s.tenant("t1", json!({})).await?;
    let r = s.post("/provisioning/t1/cas", json!({})).await?;
    let path = format!(
        "/provisioning/t1/cas/{}/certificates",
        r.body["id"].as_str().ok_or("no id")?
    );
    for body in [
        json!({}),
        json!({"csr": csr("a")?, "common-name": "b"}),
        json!({"csr": "not a csr"}),
        json!({"common-name": "a", "validity-days": 5000}),
        json!({"common-name": "a", "validity-days": 0}),
    ] {
        assert_eq!(s.post(&path, body.clone()).await?.status, 400, "{body}");
    }
    let r = s
        .post(
            "/provisioning/t1/cas/nope/certificates",
            json!({"common-name": "a"}),
        )
        .await?;
    assert_eq!(r.status, 404);
    assert_eq!(s.post("/provisioning/t9/cas", json!({})).await?.status, 404);
    // Import: the key must belong to the certificate.
    let ca = ferry_registry_client::test_pki::TestCa::root("imported")?;
    let other = KeyPair::generate()?;
    let r = s
        .post(
            "/provisioning/t1/cas",
            json!({"cert": ca.pem(), "key": other.serialize_pem()}),
        )
        .await?;
    assert_eq!(r.status, 400, "{}", r.body);
    Ok(())
}

#[tokio::test]
async fn an_imported_ca_issues_and_keys_are_sealed_with_the_configured_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    let registry = Registry::open(&db, with_key(3))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, registry.management_api()).await });
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/tenants/t1"))
        .json(&json!({}))
        .send()
        .await?;

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Imported CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let r = client
        .post(format!("{base}/provisioning/t1/cas"))
        .json(&json!({"cert": cert.pem(), "key": key.serialize_pem()}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await?;
    let id = body["id"].as_str().ok_or("no id")?.to_owned();
    let issue = |base: String| {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .post(format!("{base}/provisioning/t1/cas/{id}/certificates"))
                .json(&json!({"common-name": "d"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(issue(base.clone()).await?, 201);
    // The stored key is not the PKCS#8 key in the clear.
    let file = std::fs::read(&db)?;
    let wal = std::fs::read(dir.path().join("registry.db-wal")).unwrap_or_default();
    let plain = key.serialize_der();
    for bytes in [&file, &wal] {
        assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_slice()));
    }
    // Opened with another key, the registry cannot use the CA.
    let other = Registry::open(&db, with_key(4))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let other_base = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, other.management_api()).await });
    assert_eq!(issue(other_base).await?, 500);
    Ok(())
}
