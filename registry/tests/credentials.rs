//! Credentials over real HTTP: hashing, stripping, patch semantics, conflicts, limits, x509.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Server, TestResult, b64, cert, config, expect, start};
use ferry_registry::password::verify;
use ferry_registry_client::{CredentialType, CredentialsApi, RegistryError, TenantId};
use rcgen::DnType;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256, Sha512};

async fn setup() -> Result<Server, Box<dyn std::error::Error>> {
    let s = start(config()).await?;
    s.tenant("t", json!({})).await?;
    s.device("t", "d1", json!({})).await?;
    s.device("t", "d2", json!({})).await?;
    Ok(s)
}

async fn lookup(
    s: &Server,
    kind: CredentialType,
    auth_id: &str,
) -> Result<ferry_registry_client::CredentialsObject, RegistryError> {
    let t = TenantId::parse("t").map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    let r = s
        .registry
        .get_credentials(&t, kind, auth_id, &Map::new())
        .await?;
    Ok((*r.payload).clone())
}

#[tokio::test]
async fn plain_password_is_bcrypt_2a_and_never_returned() -> TestResult {
    let s = setup().await?;
    s.credentials(
        "t",
        "d1",
        json!([{"type": "hashed-password", "auth-id": "sensor1",
        "secrets": [{"pwd-plain": "hunter2", "not-after": "2037-01-01T00:00:00+01:00"}]}]),
    )
    .await?;
    let got = s.get("/credentials/t/d1").await?;
    expect(got.status, StatusCode::OK, &got.body)?;
    assert!(got.etag.is_some());
    let secret = &got.body[0]["secrets"][0];
    assert!(secret["id"].is_string());
    assert_eq!(secret["not-after"], "2036-12-31T23:00:00Z");
    for hidden in ["pwd-plain", "pwd-hash", "salt", "hash-function"] {
        assert!(secret.get(hidden).is_none(), "{hidden} returned: {secret}");
    }
    let c = lookup(&s, CredentialType::HashedPassword, "sensor1").await?;
    assert_eq!(c.device_id.as_str(), "d1");
    let hash = c.secrets[0].pwd_hash.as_deref().ok_or("no hash")?;
    assert!(hash.starts_with("$2a$04$"), "{hash}");
    assert!(verify("hunter2", hash, Some("bcrypt"), None));
    assert!(!verify("hunter3", hash, Some("bcrypt"), None));
    Ok(())
}

#[tokio::test]
async fn given_sha_hashes_are_stored_as_sent() -> TestResult {
    let s = setup().await?;
    let salt = b64(b"NaCl");
    let h256 = b64(&Sha256::digest(b"NaClpw256"));
    let h512 = b64(&Sha512::digest(b"NaClpw512"));
    let bcrypt = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
    s.credentials("t", "d1", json!([
        {"type": "hashed-password", "auth-id": "a256", "secrets": [{"pwd-hash": h256, "salt": salt, "hash-function": "sha-256"}]},
        {"type": "hashed-password", "auth-id": "a512", "secrets": [{"pwd-hash": h512, "salt": salt, "hash-function": "sha-512"}]},
        {"type": "hashed-password", "auth-id": "abc", "secrets": [{"pwd-hash": bcrypt, "hash-function": "bcrypt"}]},
    ])).await?;
    let c = lookup(&s, CredentialType::HashedPassword, "a256").await?;
    let sec = &c.secrets[0];
    assert!(verify(
        "pw256",
        sec.pwd_hash.as_deref().ok_or("hash")?,
        sec.hash_function.as_deref(),
        sec.salt.as_deref()
    ));
    let c = lookup(&s, CredentialType::HashedPassword, "a512").await?;
    let sec = &c.secrets[0];
    assert_eq!(sec.hash_function.as_deref(), Some("sha-512"));
    assert!(verify(
        "pw512",
        sec.pwd_hash.as_deref().ok_or("hash")?,
        sec.hash_function.as_deref(),
        sec.salt.as_deref()
    ));
    let c = lookup(&s, CredentialType::HashedPassword, "abc").await?;
    assert!(verify(
        "U*U",
        c.secrets[0].pwd_hash.as_deref().ok_or("hash")?,
        Some("bcrypt"),
        None
    ));

    for bad in [
        json!([{"type": "hashed-password", "auth-id": "x", "secrets": [{"pwd-hash": h256, "hash-function": "md5"}]}]),
        json!([{"type": "hashed-password", "auth-id": "x", "secrets": [{"pwd-hash": h256, "hash-function": "sha-512"}]}]),
        json!([{"type": "hashed-password", "auth-id": "x", "secrets": [{"pwd-hash": bcrypt.replace("$2a$", "$2b$"), "hash-function": "bcrypt"}]}]),
        json!([{"type": "hashed-password", "auth-id": "x", "secrets": [{"pwd-plain": "p", "pwd-hash": h256}]}]),
        json!([{"type": "hashed-password", "auth-id": "x", "secrets": [{"pwd-hash": bcrypt.replace("$05$", "$15$"), "hash-function": "bcrypt"}]}]),
        json!([{"type": "hashed-password", "auth-id": "x", "secrets": []}]),
        json!([{"type": "psk", "auth-id": "x", "secrets": [{"key": "not base64!"}]}]),
        json!([{"type": "magic", "auth-id": "x", "secrets": [{}]}]),
        json!([{"type": "psk", "secrets": [{"key": "AQID"}]}]),
        json!([{"type": "psk", "auth-id": "x", "secrets": [{"key": "AQID"}]}, {"type": "psk", "auth-id": "x", "secrets": [{"key": "AQID"}]}]),
        json!({"type": "psk"}),
    ] {
        let r = s.put("/credentials/t/d2", bad.clone()).await?;
        expect(
            r.status,
            StatusCode::BAD_REQUEST,
            &json!({"request": bad, "reply": r.body}),
        )?;
    }
    Ok(())
}

#[tokio::test]
async fn patch_semantics_of_secret_ids() -> TestResult {
    let s = setup().await?;
    s.credentials("t", "d1", json!([
        {"type": "hashed-password", "auth-id": "u", "secrets": [{"pwd-plain": "one"}, {"pwd-plain": "two"}]},
        {"type": "psk", "auth-id": "p", "secrets": [{"key": "AQID"}]},
    ])).await?;
    let before = lookup(&s, CredentialType::HashedPassword, "u").await?;
    let got = s.get("/credentials/t/d1").await?;
    let pwd = got
        .body
        .as_array()
        .ok_or("array")?
        .iter()
        .find(|c| c["type"] == "hashed-password")
        .ok_or("pwd")?;
    let first_id = pwd["secrets"][0]["id"].as_str().ok_or("id")?.to_owned();
    let kept = before
        .secrets
        .iter()
        .find(|s| s.id.as_deref() == Some(&first_id))
        .ok_or("stored")?;

    // Keep the first secret by id (disabling it), drop the second, leave the psk out.
    s.credentials(
        "t",
        "d1",
        json!([{"type": "hashed-password", "auth-id": "u",
        "secrets": [{"id": first_id, "enabled": false}]}]),
    )
    .await?;
    let after = lookup(&s, CredentialType::HashedPassword, "u").await?;
    assert_eq!(after.secrets.len(), 1);
    assert_eq!(after.secrets[0].pwd_hash, kept.pwd_hash);
    assert!(!after.secrets[0].enabled);
    assert_eq!(
        lookup(&s, CredentialType::Psk, "p").await.err(),
        Some(RegistryError::NotFound)
    );

    let r = s
        .put(
            "/credentials/t/d1",
            json!([{"type": "hashed-password", "auth-id": "u", "secrets": [{"id": "unknown"}]}]),
        )
        .await?;
    expect(r.status, StatusCode::BAD_REQUEST, &r.body)?;
    // A known id with a new password replaces the hash.
    s.credentials("t", "d1", json!([{"type": "hashed-password", "auth-id": "u", "secrets": [{"id": first_id, "pwd-plain": "three"}]}])).await?;
    let after = lookup(&s, CredentialType::HashedPassword, "u").await?;
    assert_eq!(after.secrets[0].id.as_deref(), Some(first_id.as_str()));
    assert!(verify(
        "three",
        after.secrets[0].pwd_hash.as_deref().ok_or("hash")?,
        Some("bcrypt"),
        None
    ));
    Ok(())
}

#[tokio::test]
async fn conflicts_missing_devices_limits_and_etags() -> TestResult {
    let s = setup().await?;
    s.credentials(
        "t",
        "d1",
        json!([{"type": "psk", "auth-id": "shared", "secrets": [{"key": "AQID"}]}]),
    )
    .await?;
    let r = s
        .put(
            "/credentials/t/d2",
            json!([{"type": "psk", "auth-id": "shared", "secrets": [{"key": "AQID"}]}]),
        )
        .await?;
    expect(r.status, StatusCode::CONFLICT, &r.body)?;
    // Same auth-id with another type is fine.
    s.credentials(
        "t",
        "d2",
        json!([{"type": "hashed-password", "auth-id": "shared", "secrets": [{"pwd-plain": "x"}]}]),
    )
    .await?;

    expect(
        s.get("/credentials/t/nope").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    expect(
        s.put("/credentials/t/nope", json!([])).await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;

    let etag = s.get("/credentials/t/d1").await?.etag.ok_or("etag")?;
    let r = s
        .call(
            Method::PUT,
            "/credentials/t/d1",
            Some(json!([])),
            &[("if-match", "\"old\"")],
        )
        .await?;
    expect(r.status, StatusCode::PRECONDITION_FAILED, &r.body)?;
    let r = s
        .call(
            Method::PUT,
            "/credentials/t/d1",
            Some(json!([])),
            &[("if-match", &etag)],
        )
        .await?;
    expect(r.status, StatusCode::NO_CONTENT, &r.body)?;
    assert!(r.etag.is_some_and(|e| e != etag));
    assert_eq!(s.get("/credentials/t/d1").await?.body, json!([]));

    s.tenant(
        "lim",
        json!({"registration-limits": {"max-credentials-per-device": 1}}),
    )
    .await?;
    s.device("lim", "d", json!({})).await?;
    let two = json!([{"type": "psk", "auth-id": "a", "secrets": [{"key": "AQID"}]}, {"type": "psk", "auth-id": "b", "secrets": [{"key": "AQID"}]}]);
    expect(
        s.put("/credentials/lim/d", two).await?.status,
        StatusCode::FORBIDDEN,
        &Value::Null,
    )?;
    s.credentials(
        "lim",
        "d",
        json!([{"type": "psk", "auth-id": "a", "secrets": [{"key": "AQID"}]}]),
    )
    .await
}

#[tokio::test]
async fn x509_auth_id_from_certificate() -> TestResult {
    let s = setup().await?;
    let (der, _) = cert(&[
        (DnType::OrganizationName, "ACME"),
        (DnType::CommonName, "device 1+x"),
    ])?;
    s.credentials(
        "t",
        "d1",
        json!([{"type": "x509-cert", "secrets": [{"cert": b64(&der)}]}]),
    )
    .await?;
    let got = s.get("/credentials/t/d1").await?;
    assert_eq!(got.body[0]["auth-id"], "CN=device 1\\+x,O=ACME");
    assert!(got.body[0]["secrets"][0].get("cert").is_none());
    let c = lookup(&s, CredentialType::X509Cert, "CN=device 1\\+x,O=ACME").await?;
    assert_eq!(c.device_id.as_str(), "d1");
    let r = s
        .put(
            "/credentials/t/d2",
            json!([{"type": "x509-cert", "auth-id": "CN=other", "secrets": [{"cert": b64(&der)}]}]),
        )
        .await?;
    expect(r.status, StatusCode::BAD_REQUEST, &r.body)?;
    let r = s
        .put(
            "/credentials/t/d2",
            json!([{"type": "x509-cert", "secrets": [{"cert": STANDARD.encode(b"junk")}]}]),
        )
        .await?;
    expect(r.status, StatusCode::BAD_REQUEST, &r.body)?;
    s.credentials(
        "t",
        "d2",
        json!([{"type": "x509-cert", "auth-id": "cn=plain, o=x"}]),
    )
    .await?;
    let c = lookup(&s, CredentialType::X509Cert, "CN=plain,O=x").await?;
    assert_eq!(c.secrets.len(), 1);
    assert_eq!(c.auth_id, "CN=plain,O=x");
    // A given auth-id equal to the certificate's subject up to formatting is accepted.
    s.credentials("t", "d1", json!([{"type": "x509-cert", "auth-id": "CN=device 1\\+x, o=ACME", "secrets": [{"cert": b64(&der)}]}])).await?;
    Ok(())
}

#[tokio::test]
async fn rpk_key_from_certificate_and_if_match_star() -> TestResult {
    let s = setup().await?;
    let (der, spki) = cert(&[(DnType::CommonName, "jwt signer")])?;
    s.credentials(
        "t",
        "d1",
        json!([{"type": "rpk", "auth-id": "signer", "secrets": [{"cert": b64(&der)}]}]),
    )
    .await?;
    let c = lookup(&s, CredentialType::Rpk, "signer").await?;
    assert_eq!(c.secrets[0].key.as_deref(), Some(b64(&spki).as_str()));
    assert_eq!(c.secrets[0].extra.get("algorithm"), Some(&json!("EC")));
    let got = s.get("/credentials/t/d1").await?;
    assert!(got.body[0]["secrets"][0].get("key").is_none());
    let r = s
        .call(
            Method::PUT,
            "/credentials/t/d1",
            Some(json!([])),
            &[("if-match", "*")],
        )
        .await?;
    expect(r.status, StatusCode::NO_CONTENT, &r.body)
}
