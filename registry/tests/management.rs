//! Management API over real HTTP: tenants, devices, status codes, ETags, auth, limits.

mod common;

use common::{TestResult, b64, cert, config, expect, start};
use ferry_registry::{ManagementUser, RegistryConfig};
use rcgen::DnType;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn tenant_lifecycle_with_etags() -> TestResult {
    let s = start(config()).await?;
    let r = s.post("/tenants/t1", json!({"ext": {"a": 1}})).await?;
    expect(r.status, StatusCode::CREATED, &r.body)?;
    assert_eq!(r.location.as_deref(), Some("/v1/tenants/t1"));
    assert_eq!(r.body, json!({"id": "t1"}));
    let created = r.etag.ok_or("no etag")?;

    let dup = s.post("/tenants/t1", json!({})).await?;
    expect(dup.status, StatusCode::CONFLICT, &dup.body)?;
    assert!(dup.body["error"].is_string());

    let got = s.get("/tenants/t1").await?;
    expect(got.status, StatusCode::OK, &got.body)?;
    assert_eq!(got.etag.as_deref(), Some(created.as_str()));
    assert_eq!(got.body["ext"]["a"], 1);

    let stale = s
        .call(
            Method::PUT,
            "/tenants/t1",
            Some(json!({"enabled": false})),
            &[("if-match", "\"nope\"")],
        )
        .await?;
    expect(stale.status, StatusCode::PRECONDITION_FAILED, &stale.body)?;
    let upd = s
        .call(
            Method::PUT,
            "/tenants/t1",
            Some(json!({"enabled": false})),
            &[("if-match", &created)],
        )
        .await?;
    expect(upd.status, StatusCode::NO_CONTENT, &upd.body)?;
    let new_etag = upd.etag.ok_or("no etag on update")?;
    assert_ne!(new_etag, created);
    let got = s.get("/tenants/t1").await?;
    assert_eq!(got.body["enabled"], false);
    assert_eq!(got.etag.as_deref(), Some(new_etag.as_str()));
    // PUT without If-Match is allowed.
    let upd = s.put("/tenants/t1", json!({})).await?;
    expect(upd.status, StatusCode::NO_CONTENT, &upd.body)?;

    let del = s
        .call(
            Method::DELETE,
            "/tenants/t1",
            None,
            &[("if-match", &created)],
        )
        .await?;
    expect(del.status, StatusCode::PRECONDITION_FAILED, &del.body)?;
    let del = s.delete("/tenants/t1").await?;
    expect(del.status, StatusCode::NO_CONTENT, &del.body)?;
    expect(
        s.get("/tenants/t1").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    expect(
        s.delete("/tenants/t1").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    expect(
        s.put("/tenants/t1", json!({})).await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    Ok(())
}

#[tokio::test]
async fn generated_ids_and_bad_requests() -> TestResult {
    let s = start(config()).await?;
    let r = s.call(Method::POST, "/tenants", None, &[]).await?;
    expect(r.status, StatusCode::CREATED, &r.body)?;
    let id = r.body["id"].as_str().ok_or("no id")?.to_owned();
    assert_eq!(r.location, Some(format!("/v1/tenants/{id}")));
    expect(
        s.get(&format!("/tenants/{id}")).await?.status,
        StatusCode::OK,
        &Value::Null,
    )?;

    let r = s
        .post(&format!("/devices/{id}"), json!({"enabled": true}))
        .await?;
    expect(r.status, StatusCode::CREATED, &r.body)?;
    let dev = r.body["id"].as_str().ok_or("no device id")?;
    assert_eq!(r.location, Some(format!("/v1/devices/{id}/{dev}")));

    let malformed = s
        .client
        .post(format!("{}/tenants/t2", s.base))
        .header("content-type", "application/json")
        .body("{\"enabled\": ")
        .send()
        .await?;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let body: Value = malformed.json().await?;
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("JSON")),
        "{body}"
    );

    for (path, body) in [
        ("/tenants/a:b", json!({})),
        ("/tenants/t2", json!([])),
        ("/tenants/t2", json!({"alias": "Upper"})),
        ("/tenants/t2", json!({"enabled": "yes"})),
        (
            "/tenants/t2",
            json!({"adapters": [{"type": "hono-http"}, {"type": "hono-http"}]}),
        ),
        (
            "/tenants/t2",
            json!({"trusted-ca": [{"subject-dn": "CN=x", "public-key": "AAAA"}]}),
        ),
        (
            "/tenants/t2",
            json!({"trusted-ca": [{"cert": "bm90IGEgY2VydA=="}]}),
        ),
        (
            "/tenants/t2",
            json!({"registration-limits": {"max-devices": "3"}}),
        ),
    ] {
        let r = s.post(path, body.clone()).await?;
        expect(
            r.status,
            StatusCode::BAD_REQUEST,
            &json!({"request": body, "reply": r.body}),
        )?;
        assert!(r.body["error"].is_string());
    }
    expect(
        s.get("/tenants/t2").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    Ok(())
}

#[tokio::test]
async fn too_large_body_gives_413() -> TestResult {
    let s = start(RegistryConfig {
        max_body_size: 1024,
        ..config()
    })
    .await?;
    let big = json!({"ext": {"blob": "x".repeat(2000)}});
    let r = s.post("/tenants/t1", big).await?;
    expect(r.status, StatusCode::PAYLOAD_TOO_LARGE, &r.body)?;
    let small = s
        .post("/tenants/t1", json!({"ext": {"blob": "x".repeat(500)}}))
        .await?;
    expect(small.status, StatusCode::CREATED, &small.body)
}

#[tokio::test]
async fn basic_auth_when_users_are_configured() -> TestResult {
    let users = vec![ManagementUser {
        name: "admin".into(),
        password: "s3cret".into(),
    }];
    let s = start(RegistryConfig { users, ..config() }).await?;
    let none = s
        .client
        .post(format!("{}/tenants/t1", s.base))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(
        none.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Basic"))
    );
    let wrong = s
        .client
        .post(format!("{}/tenants/t1", s.base))
        .basic_auth("admin", Some("nope"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = s
        .client
        .post(format!("{}/tenants/t1", s.base))
        .basic_auth("admin", Some("s3cret"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let ok = s
        .client
        .post(format!("{}/devices/t1/d1", s.base))
        .basic_auth("admin", Some("s3cret"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let dev: Value = s
        .client
        .get(format!("{}/devices/t1/d1", s.base))
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(dev["status"]["last-user"], "admin");
    Ok(())
}

#[tokio::test]
async fn trusted_ca_from_certificate_and_dn_conflicts() -> TestResult {
    let s = start(config()).await?;
    let (der, spki) = cert(&[
        (DnType::OrganizationName, "ACME, Inc."),
        (DnType::CommonName, "Root CA"),
    ])?;
    s.tenant(
        "t1",
        json!({"trusted-ca": [{"cert": b64(&der), "auto-provisioning-enabled": true}]}),
    )
    .await?;
    let t = s.get("/tenants/t1").await?;
    let ca = &t.body["trusted-ca"][0];
    assert_eq!(ca["subject-dn"], "CN=Root CA,O=ACME\\, Inc.");
    assert_eq!(ca["public-key"], b64(&spki));
    assert_eq!(ca["algorithm"], "EC");
    assert!(ca["not-before"].is_string() && ca["not-after"].is_string());
    assert!(ca["id"].as_str().is_some_and(|id| !id.is_empty()));

    let other = json!({"trusted-ca": [{"subject-dn": "CN=Root CA,O=ACME\\, Inc.", "public-key": b64(&spki),
        "algorithm": "EC", "not-before": "2020-01-01T00:00:00Z", "not-after": "2040-01-01T00:00:00Z"}]});
    let r = s.post("/tenants/t2", other.clone()).await?;
    expect(r.status, StatusCode::CONFLICT, &r.body)?;
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("subject DN"))
    );
    s.tenant("t2", json!({})).await?;
    expect(
        s.put("/tenants/t2", other.clone()).await?.status,
        StatusCode::CONFLICT,
        &Value::Null,
    )?;
    // The owning tenant may keep its DN on update, and the DN is free once it is deleted.
    expect(
        s.put("/tenants/t1", other.clone()).await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;
    expect(
        s.delete("/tenants/t1").await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;
    expect(
        s.put("/tenants/t2", other).await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;

    s.tenant("t3", json!({"alias": "tee"})).await?;
    let r = s.post("/tenants/t4", json!({"alias": "tee"})).await?;
    expect(r.status, StatusCode::CONFLICT, &r.body)
}

#[tokio::test]
async fn a_trust_anchor_group_shares_a_ca_and_the_tenant_api_calls_it_ambiguous() -> TestResult {
    use ferry_registry_client::{RegistryError, TenantApi};
    let s = start(config()).await?;
    let (der, _) = cert(&[(DnType::CommonName, "Shared CA")])?;
    let ca = json!([{"cert": b64(&der)}]);
    s.tenant(
        "g1",
        json!({"trust-anchor-group": "fleet", "trusted-ca": ca}),
    )
    .await?;
    // Alone in its group, the tenant is found by the CA.
    let found = s.registry.get_tenant_by_ca("CN=Shared CA").await?;
    assert_eq!(found.payload.tenant_id.as_str(), "g1");
    // Outside the group (none, or another one) the DN conflicts, inside it is shared.
    for body in [
        json!({"trusted-ca": ca}),
        json!({"trust-anchor-group": "other", "trusted-ca": ca}),
    ] {
        let r = s.post("/tenants/x", body).await?;
        expect(r.status, StatusCode::CONFLICT, &r.body)?;
    }
    let r = s
        .post(
            "/tenants/g2",
            json!({"trust-anchor-group": "fleet", "trusted-ca": ca}),
        )
        .await?;
    expect(r.status, StatusCode::CREATED, &r.body)?;
    // Two tenants trust the CA: the issuer alone names no tenant (the adapter uses the SNI).
    assert_eq!(
        s.registry.get_tenant_by_ca("CN=Shared CA").await.err(),
        Some(RegistryError::NotFound)
    );
    // A member cannot leave the group while it shares the DN.
    let r = s
        .put(
            "/tenants/g2",
            json!({"trust-anchor-group": "other", "trusted-ca": ca}),
        )
        .await?;
    expect(r.status, StatusCode::CONFLICT, &r.body)?;
    // Once the other member is gone, the CA names one tenant again.
    expect(
        s.delete("/tenants/g1").await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;
    let found = s.registry.get_tenant_by_ca("CN=Shared CA").await?;
    assert_eq!(found.payload.tenant_id.as_str(), "g2");
    let r = s
        .post("/tenants/g3", json!({"trust-anchor-group": 7}))
        .await?;
    expect(r.status, StatusCode::BAD_REQUEST, &r.body)
}

#[tokio::test]
async fn device_lifecycle() -> TestResult {
    let s = start(config()).await?;
    let r = s.post("/devices/nope/d1", json!({})).await?;
    expect(r.status, StatusCode::NOT_FOUND, &r.body)?;
    s.tenant("t", json!({})).await?;
    let r = s
        .post(
            "/devices/t/d1",
            json!({"ext": {"k": "v"}, "status": {"created": "1999-01-01T00:00:00Z"}}),
        )
        .await?;
    expect(r.status, StatusCode::CREATED, &r.body)?;
    let etag = r.etag.ok_or("no etag")?;
    expect(
        s.post("/devices/t/d1", json!({})).await?.status,
        StatusCode::CONFLICT,
        &Value::Null,
    )?;

    let got = s.get("/devices/t/d1").await?;
    expect(got.status, StatusCode::OK, &got.body)?;
    assert_eq!(got.etag.as_deref(), Some(etag.as_str()));
    let created = got.body["status"]["created"]
        .as_str()
        .ok_or("no created")?
        .to_owned();
    assert!(!created.starts_with("1999"), "status is read-only");

    let r = s
        .call(
            Method::PUT,
            "/devices/t/d1",
            Some(json!({"enabled": false})),
            &[("if-match", "\"x\"")],
        )
        .await?;
    expect(r.status, StatusCode::PRECONDITION_FAILED, &r.body)?;
    let r = s
        .call(
            Method::PUT,
            "/devices/t/d1",
            Some(json!({"enabled": false})),
            &[("if-match", &etag)],
        )
        .await?;
    expect(r.status, StatusCode::NO_CONTENT, &r.body)?;
    assert!(r.etag.is_some_and(|e| e != etag));
    let got = s.get("/devices/t/d1").await?;
    assert_eq!(got.body["enabled"], false);
    assert_eq!(got.body["status"]["created"], created.as_str());
    assert!(got.body["status"]["updated"].is_string());

    for body in [
        json!({"memberOf": ["g"], "via": ["gw"]}),
        json!({"memberOf": ["g"], "viaGroups": ["h"]}),
        json!({"via": ["bad/id"]}),
        json!({"via": "gw"}),
        json!({"command-endpoint": {"headers": {}}}),
    ] {
        let r = s.put("/devices/t/d1", body.clone()).await?;
        expect(
            r.status,
            StatusCode::BAD_REQUEST,
            &json!({"request": body, "reply": r.body}),
        )?;
    }
    expect(
        s.post("/devices/t/bad%20id", json!({})).await?.status,
        StatusCode::BAD_REQUEST,
        &Value::Null,
    )?;
    expect(
        s.put("/devices/t/d9", json!({})).await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;

    let r = s
        .call(
            Method::DELETE,
            "/devices/t/d1",
            None,
            &[("if-match", "\"x\"")],
        )
        .await?;
    expect(r.status, StatusCode::PRECONDITION_FAILED, &r.body)?;
    expect(
        s.delete("/devices/t/d1").await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;
    expect(
        s.get("/devices/t/d1").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    expect(
        s.delete("/devices/t/d1").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    Ok(())
}

#[tokio::test]
async fn delete_all_devices_and_tenant_cascade() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t", json!({})).await?;
    for d in ["a", "b", "c"] {
        s.device("t", d, json!({})).await?;
        s.credentials(
            "t",
            d,
            json!([{"type": "psk", "auth-id": d, "secrets": [{"key": "AQID"}]}]),
        )
        .await?;
    }
    expect(
        s.delete("/devices/t").await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;
    expect(
        s.get("/devices/t").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    // Credentials went with the devices: the auth-id is free again.
    s.device("t", "x", json!({})).await?;
    s.credentials(
        "t",
        "x",
        json!([{"type": "psk", "auth-id": "a", "secrets": [{"key": "AQID"}]}]),
    )
    .await?;
    expect(
        s.delete("/devices/nope").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;

    expect(
        s.delete("/tenants/t").await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;
    s.tenant("t", json!({})).await?;
    expect(
        s.get("/devices/t/x").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    expect(
        s.get("/credentials/t/x").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    Ok(())
}

#[tokio::test]
async fn registration_limit_max_devices_gives_403() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t", json!({"registration-limits": {"max-devices": 2}}))
        .await?;
    s.device("t", "d1", json!({})).await?;
    s.device("t", "d2", json!({})).await?;
    let r = s.post("/devices/t/d3", json!({})).await?;
    expect(r.status, StatusCode::FORBIDDEN, &r.body)?;
    expect(
        s.delete("/devices/t/d1").await?.status,
        StatusCode::NO_CONTENT,
        &Value::Null,
    )?;
    s.device("t", "d3", json!({})).await
}
