//! Service APIs (Tenant, Credentials, Registration) and change notifications.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestResult, b64, cert, config, start};
use ferry_registry::RegistryConfig;
use ferry_registry_client::{
    CacheConfig, CacheDirective, Cached, CredentialType, CredentialsApi, DeviceId, RegistrationApi,
    RegistryChange, RegistryError, TenantApi, TenantId,
};
use rcgen::DnType;
use serde_json::{Map, json};

fn tid(s: &str) -> Result<TenantId, Box<dyn std::error::Error>> {
    Ok(TenantId::parse(s)?)
}

fn did(s: &str) -> Result<DeviceId, Box<dyn std::error::Error>> {
    Ok(DeviceId::parse(s)?)
}

#[tokio::test]
async fn tenant_by_id_alias_and_ca() -> TestResult {
    let s = start(RegistryConfig {
        cache_max_age: 42,
        ..config()
    })
    .await?;
    let (der, _) = cert(&[(DnType::CommonName, "Tenant CA")])?;
    let (_, spki) = cert(&[(DnType::CommonName, "old")])?;
    s.tenant("t1", json!({"alias": "first", "ext": {"messaging-type": "kafka"}, "trusted-ca": [
        {"cert": b64(&der), "auto-provision-as-gateway": true, "auto-provisioning-device-id-template": "x-{{subject-cn}}"},
        {"subject-dn": "CN=Expired CA", "public-key": b64(&spki), "algorithm": "EC",
         "not-before": "2000-01-01T00:00:00Z", "not-after": "2001-01-01T00:00:00Z"}
    ]})).await?;

    let r = s.registry.get_tenant(&tid("t1")?).await?;
    assert_eq!(r.cache, CacheDirective::MaxAge(Duration::from_secs(42)));
    assert_eq!(r.payload.tenant_id.as_str(), "t1");
    assert_eq!(r.payload.ext.get("messaging-type"), Some(&json!("kafka")));
    assert_eq!(r.payload.trusted_ca.len(), 1, "the expired CA is left out");
    let ca = &r.payload.trusted_ca[0];
    assert_eq!(ca.subject_dn, "CN=Tenant CA");
    assert_eq!(ca.algorithm.as_deref(), Some("EC"));
    for stripped in [
        "cert",
        "auto-provision-as-gateway",
        "auto-provisioning-device-id-template",
    ] {
        assert!(!ca.extra.contains_key(stripped), "{stripped} not stripped");
    }

    let by_alias = s.registry.get_tenant(&tid("first")?).await?;
    assert_eq!(by_alias.payload.tenant_id.as_str(), "t1");
    assert_eq!(
        s.registry.get_tenant(&tid("t2")?).await.err(),
        Some(RegistryError::NotFound)
    );

    let by_ca = s.registry.get_tenant_by_ca("CN=Tenant CA").await?;
    assert_eq!(by_ca.payload.tenant_id.as_str(), "t1");
    assert_eq!(by_ca.cache, CacheDirective::MaxAge(Duration::from_secs(42)));
    assert_eq!(
        s.registry.get_tenant_by_ca("CN=Expired CA").await.err(),
        Some(RegistryError::NotFound)
    );
    assert_eq!(
        s.registry.get_tenant_by_ca("CN=Unknown").await.err(),
        Some(RegistryError::NotFound)
    );
    // A DN typed by a user is stored in the formatter's RFC 2253 form.
    s.tenant("t2", json!({"trusted-ca": [{"subject-dn": "cn = Typed CA , o=ACME\\, Inc.", "public-key": b64(&spki),
        "algorithm": "EC", "not-before": "2000-01-01T00:00:00Z", "not-after": "2999-01-01T00:00:00Z"}]})).await?;
    let typed = s
        .registry
        .get_tenant_by_ca("CN=Typed CA,O=ACME\\, Inc.")
        .await?;
    assert_eq!(typed.payload.tenant_id.as_str(), "t2");
    assert_eq!(
        typed.payload.trusted_ca[0].subject_dn,
        "CN=Typed CA,O=ACME\\, Inc."
    );
    Ok(())
}

#[tokio::test]
async fn credentials_lookup() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t", json!({})).await?;
    s.device("t", "d", json!({})).await?;
    s.credentials(
        "t",
        "d",
        json!([
            {"type": "psk", "auth-id": "p1", "ext": {"x": 1}, "secrets": [{"key": "c2VjcmV0"}]},
            {"type": "psk", "auth-id": "off", "enabled": false, "secrets": [{"key": "c2VjcmV0"}]},
        ]),
    )
    .await?;
    let t = tid("t")?;
    let r = s
        .registry
        .get_credentials(&t, CredentialType::Psk, "p1", &Map::new())
        .await?;
    assert_eq!(r.cache, CacheDirective::MaxAge(Duration::from_secs(180)));
    assert!(!r.created);
    assert_eq!(r.payload.device_id.as_str(), "d");
    assert_eq!(r.payload.auth_id, "p1");
    assert_eq!(r.payload.secrets[0].key.as_deref(), Some("c2VjcmV0"));
    assert_eq!(r.payload.ext.get("x"), Some(&json!(1)));
    let none = |kind, id: &'static str| {
        let (reg, t) = (s.registry.clone(), t.clone());
        async move { reg.get_credentials(&t, kind, id, &Map::new()).await.err() }
    };
    assert_eq!(
        none(CredentialType::Psk, "off").await,
        Some(RegistryError::NotFound)
    );
    assert_eq!(
        none(CredentialType::HashedPassword, "p1").await,
        Some(RegistryError::NotFound)
    );
    assert_eq!(
        none(CredentialType::Psk, "nobody").await,
        Some(RegistryError::NotFound)
    );
    Ok(())
}

#[tokio::test]
async fn registration_assertions() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t", json!({})).await?;
    s.device("t", "gw-a", json!({})).await?;
    s.device("t", "gw-b", json!({"memberOf": ["group-1"]}))
        .await?;
    s.device("t", "gw-c", json!({"memberOf": ["group-2"]}))
        .await?;
    s.device(
        "t",
        "gw-off",
        json!({"enabled": false, "memberOf": ["group-1"]}),
    )
    .await?;
    s.device("t", "dev", json!({"via": ["gw-a"], "viaGroups": ["group-1"], "defaults": {"content-type": "text/plain"},
        "downstream-message-mapper": "m1", "command-endpoint": {"uri": "http://x/{{deviceId}}/cmd", "headers": {"a": "b"}}})).await?;
    s.device("t", "off", json!({"enabled": false})).await?;
    let (t, reg) = (tid("t")?, &s.registry);

    let direct = reg.assert_registration(&t, &did("dev")?, None).await?;
    let a = &direct.payload;
    assert_eq!(
        direct.cache,
        CacheDirective::MaxAge(Duration::from_secs(180))
    );
    let mut via: Vec<&str> = a.via.iter().map(DeviceId::as_str).collect();
    via.sort_unstable();
    assert_eq!(via, vec!["gw-a", "gw-b", "gw-off"]);
    assert_eq!(a.defaults.get("content-type"), Some(&json!("text/plain")));
    assert_eq!(a.extra.get("downstream-message-mapper"), Some(&json!("m1")));
    assert_eq!(a.extra["command-endpoint"]["uri"], "http://x/dev/cmd");

    assert!(
        reg.assert_registration(&t, &did("dev")?, Some(&did("gw-a")?))
            .await
            .is_ok()
    );
    assert!(
        reg.assert_registration(&t, &did("dev")?, Some(&did("gw-b")?))
            .await
            .is_ok()
    );
    for gw in ["gw-c", "gw-off", "unknown-gw"] {
        let e = reg
            .assert_registration(&t, &did("dev")?, Some(&did(gw)?))
            .await
            .err();
        assert!(
            matches!(e, Some(RegistryError::Forbidden(_))),
            "{gw}: {e:?}"
        );
    }
    assert_eq!(
        reg.assert_registration(&t, &did("off")?, None).await.err(),
        Some(RegistryError::NotFound)
    );
    assert_eq!(
        reg.assert_registration(&t, &did("ghost")?, None)
            .await
            .err(),
        Some(RegistryError::NotFound)
    );
    assert_eq!(
        reg.assert_registration(&t, &did("ghost")?, Some(&did("gw-a")?))
            .await
            .err(),
        Some(RegistryError::NotFound)
    );
    assert_eq!(
        reg.assert_registration(&tid("other")?, &did("dev")?, None)
            .await
            .err(),
        Some(RegistryError::NotFound)
    );
    Ok(())
}

#[tokio::test]
async fn every_change_is_reported_before_the_response() -> TestResult {
    let s = start(config()).await?;
    let (t, d) = (tid("t")?, did("d")?);
    let tenant = RegistryChange::Tenant {
        tenant_id: t.clone(),
    };
    let device = RegistryChange::Device {
        tenant_id: t.clone(),
        device_id: d.clone(),
    };
    let creds = RegistryChange::Credentials {
        tenant_id: t.clone(),
        device_id: d.clone(),
    };
    let all = RegistryChange::AllDevicesOfTenant {
        tenant_id: t.clone(),
    };

    s.tenant("t", json!({})).await?;
    assert_eq!(s.changes.take(), vec![tenant.clone()]);
    s.put("/tenants/t", json!({"enabled": true})).await?;
    assert_eq!(s.changes.take(), vec![tenant.clone()]);
    s.device("t", "d", json!({})).await?;
    assert_eq!(s.changes.take(), vec![device.clone()]);
    s.put("/devices/t/d", json!({"enabled": false})).await?;
    assert_eq!(s.changes.take(), vec![device.clone()]);
    s.credentials("t", "d", json!([])).await?;
    assert_eq!(s.changes.take(), vec![creds.clone()]);
    s.delete("/devices/t/d").await?;
    assert_eq!(s.changes.take(), vec![device, creds]);
    s.delete("/devices/t").await?;
    assert_eq!(s.changes.take(), vec![all.clone()]);
    s.delete("/tenants/t").await?;
    assert_eq!(s.changes.take(), vec![tenant, all]);
    // Failed requests change nothing and report nothing.
    s.delete("/tenants/t").await?;
    assert!(s.changes.take().is_empty());
    Ok(())
}

#[tokio::test]
async fn cached_client_sees_a_disabled_device_at_once() -> TestResult {
    let s = start(config()).await?;
    let cached = Arc::new(Cached::new(s.registry.clone(), CacheConfig::default()));
    s.registry.add_change_listener(cached.clone());
    s.tenant("t", json!({})).await?;
    s.device("t", "d", json!({})).await?;
    let (t, d) = (tid("t")?, did("d")?);
    assert!(cached.assert_registration(&t, &d, None).await.is_ok());
    s.put("/devices/t/d", json!({"enabled": false})).await?;
    assert_eq!(
        cached.assert_registration(&t, &d, None).await.err(),
        Some(RegistryError::NotFound)
    );
    Ok(())
}
