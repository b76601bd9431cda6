//! Bulk provisioning: CSV and JSON lines, per-row failures, jobs, ten thousand rows.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Server, TestResult, config, start};
use ferry_registry_client::test_pki::TestCa;
use ferry_registry_client::{CredentialType, CredentialsApi, DeviceId, RegistryChange, TenantId};
use serde_json::{Map, Value, json};

async fn upload(
    s: &Server,
    path: &str,
    content_type: &str,
    body: String,
) -> Result<(u16, Option<String>, Value), Box<dyn std::error::Error>> {
    let r = s
        .client
        .post(format!("{}{path}", s.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, location, r.json().await.unwrap_or(Value::Null)))
}

fn quoted(pem: &str) -> String {
    format!("\"{}\"", pem.replace('"', "\"\""))
}

#[tokio::test]
async fn each_row_succeeds_or_fails_on_its_own() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t1", json!({})).await?;
    let ca = TestCa::root("bulk-ca")?;
    let cert = ca.device("bulk-dev")?;
    let pem = quoted(&cert.chain_pem());
    let csv = format!(
        "device-id,certificate,password,psk\n\
         d-cert,{pem},,\n\
         d-pw,,secret,\n\
         d-psk,,,c2VjcmV0\n\
         bad/id,,secret,\n\
         d-pw,,other,\n\
         d-bad-cert,not a certificate,,\n\
         d-empty,,,\n\
         d-cert-2,{pem},,\n"
    );
    let (status, _, body) = upload(&s, "/provisioning/t1/bulk?wait=true", "text/csv", csv).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("done"));
    assert_eq!(body["total"], json!(8));
    assert_eq!(body["created"], json!(3));
    let failed: Vec<u64> = body["failures"]
        .as_array()
        .ok_or("no failures")?
        .iter()
        .filter_map(|f| f["row"].as_u64())
        .collect();
    assert_eq!(failed, vec![4, 5, 6, 7, 8], "{body}");
    assert!(
        body["failures"][1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already exists"))
    );

    let t = TenantId::parse("t1")?;
    // Caches hear about each new device.
    let changes = s.changes.take();
    for id in ["d-cert", "d-pw", "d-psk"] {
        let change = RegistryChange::Device {
            tenant_id: t.clone(),
            device_id: DeviceId::parse(id)?,
        };
        assert!(changes.contains(&change), "{id}: {changes:?}");
    }
    let x509 = s
        .registry
        .get_credentials(
            &t,
            CredentialType::X509Cert,
            &cert.subject_dn(),
            &Map::new(),
        )
        .await?;
    assert_eq!(x509.payload.device_id.as_str(), "d-cert");
    // The password is stored as a salted SHA-512 hash of Hono's form.
    let pw = s
        .registry
        .get_credentials(&t, CredentialType::HashedPassword, "d-pw", &Map::new())
        .await?;
    let secret = &pw.payload.secrets[0];
    assert_eq!(secret.hash_function.as_deref(), Some("sha-512"));
    let salt = STANDARD.decode(secret.salt.as_deref().ok_or("no salt")?)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    ctx.update(&salt);
    ctx.update(b"secret");
    assert_eq!(
        secret.pwd_hash.as_deref(),
        Some(STANDARD.encode(ctx.finish()).as_str())
    );
    let psk = s
        .registry
        .get_credentials(&t, CredentialType::Psk, "d-psk", &Map::new())
        .await?;
    assert_eq!(psk.payload.secrets[0].key.as_deref(), Some("c2VjcmV0"));
    Ok(())
}

#[tokio::test]
async fn json_lines_run_as_a_job_with_a_status() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t1", json!({})).await?;
    let lines = "{\"device-id\":\"j1\",\"password\":\"a\"}\n{\"device-id\":\"j2\"}\nnot json\n";
    let (status, location, body) = upload(
        &s,
        "/provisioning/t1/bulk",
        "application/x-ndjson",
        lines.into(),
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    let location = location.ok_or("no location")?;
    let path = location.strip_prefix("/v1").ok_or("odd location")?;
    let mut done = Value::Null;
    for _ in 0..200 {
        let r = s.get(path).await?;
        assert_eq!(r.status, 200);
        if r.body["status"] == json!("done") {
            done = r.body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(done["created"], json!(1), "{done}");
    assert_eq!(done["failed"], json!(2));
    // Another tenant cannot read the job; unknown formats and tenants are refused.
    s.tenant("t2", json!({})).await?;
    let other = path.replace("/t1/", "/t2/");
    assert_eq!(s.get(&other).await?.status, 404);
    let (status, _, _) = upload(&s, "/provisioning/t1/bulk", "text/plain", "x".into()).await?;
    assert_eq!(status, 400);
    let (status, _, _) = upload(
        &s,
        "/provisioning/t9/bulk",
        "text/csv",
        "device-id\nx\n".into(),
    )
    .await?;
    assert_eq!(status, 404);
    let (status, _, _) =
        upload(&s, "/provisioning/t1/bulk", "text/csv", "name\nx\n".into()).await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test]
async fn ten_thousand_rows_in_one_file() -> TestResult {
    const N: usize = 10_000;
    let s = start(config()).await?;
    s.tenant("t1", json!({})).await?;
    let mut csv = String::from("device-id,password\n");
    for i in 0..N {
        csv.push_str(&format!("dev-{i},pw-{i}\n"));
    }
    assert!(csv.len() > 64 * 1024, "larger than the ordinary body limit");
    let started = std::time::Instant::now();
    let (status, _, body) = upload(&s, "/provisioning/t1/bulk?wait=true", "text/csv", csv).await?;
    eprintln!("{N} rows took {:?}", started.elapsed());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], json!(N));
    assert_eq!(body["failed"], json!(0));
    let listed = s.get("/devices/t1?pageSize=1").await?;
    assert_eq!(listed.body["total"], json!(N));
    // So many devices are announced as tenant changes, not ten thousand device changes.
    let changes = s.changes.take();
    assert!(changes.len() < 100, "{} changes", changes.len());
    assert!(changes.contains(&RegistryChange::Tenant {
        tenant_id: TenantId::parse("t1")?
    }));
    Ok(())
}
