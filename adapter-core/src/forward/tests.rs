//! Tests of every refusal cause and of the message the forwarder builds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_registry_client::{
    CacheDirective, ChangeListener, RegistrationAssertion, RegistryChange,
};
use serde_json::json;

use super::*;
use crate::ErrorKind;
use crate::memo::RegistryGeneration;
use crate::test_util::{Failure, FakeNorthbound, FakeRegistry, tenant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    registry: Arc<FakeRegistry>,
    northbound: Arc<FakeNorthbound>,
    forwarder: Forwarder,
    t1: TenantId,
    dev: DeviceId,
    gw: DeviceId,
    behind_gw: DeviceId,
}

fn id(s: &str) -> Result<DeviceId, ferry_registry_client::InvalidId> {
    DeviceId::parse(s)
}

fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let registry = Arc::new(FakeRegistry::new());
    let northbound = Arc::new(FakeNorthbound::new());
    let t1 = TenantId::parse("t1")?;
    registry.add_tenant(tenant(json!({
        "tenant-id": "t1",
        "defaults": {"content-type": "text/tenant", "ttl": 100, "color": "blue", "site": "x"},
        "resource-limits": {"max-ttl": 300}
    }))?);
    let (dev, gw, behind_gw) = (id("dev-1")?, id("gw-1")?, id("dev-2")?);
    registry.add_plain_device(&t1, &dev);
    registry.add_plain_device(&t1, &gw);
    registry.add_device(
        &t1,
        RegistrationAssertion {
            device_id: behind_gw.clone(),
            via: vec![gw.clone()],
            defaults: json!({"content-type": "text/device", "ttl": 50, "color": "red"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            extra: Map::new(),
        },
    );
    let forwarder = Forwarder::new(registry.clone(), northbound.clone(), "hono-http", 16);
    Ok(Fixture {
        registry,
        northbound,
        forwarder,
        t1,
        dev,
        gw,
        behind_gw,
    })
}

fn upload(endpoint: Endpoint, content_type: Option<&str>, payload: &'static [u8]) -> Upload {
    Upload {
        endpoint,
        qos: Qos::AtMostOnce,
        content_type: content_type.map(str::to_owned),
        ttl: None,
        ttd: None,
        orig_address: "/telemetry".to_owned(),
        retain: false,
        payload: Bytes::from_static(payload),
    }
}

fn device(tenant: &TenantId, device_id: &DeviceId) -> AuthenticatedDevice {
    AuthenticatedDevice {
        tenant_id: tenant.clone(),
        device_id: device_id.clone(),
        auth_id: device_id.to_string(),
    }
}

impl Fixture {
    async fn send(
        &self,
        sender: Option<&DeviceId>,
        device_id: &DeviceId,
        upload: Upload,
    ) -> Result<DownstreamMessage, ForwardError> {
        let sender = sender.map(|s| device(&self.t1, s));
        self.forwarder
            .forward(sender.as_ref(), &self.t1, device_id, upload)
            .await?;
        self.northbound
            .sent()
            .pop()
            .ok_or(ForwardError::NoConsumer("nothing recorded".to_owned()))
    }
}

#[tokio::test]
async fn content_rules_are_checked_first() -> TestResult {
    let f = fixture()?;
    let dev = Some(&f.dev);
    let too_big = upload(Endpoint::Telemetry, None, b"01234567890123456");
    let e = f.send(dev, &f.dev, too_big).await.err();
    assert_eq!(e, Some(ForwardError::PayloadTooLarge { size: 17, max: 16 }));
    let empty = upload(Endpoint::Telemetry, None, b"");
    let e = f.send(dev, &f.dev, empty).await.err();
    assert_eq!(e, Some(ForwardError::EmptyBodyWithoutContentType));
    let notification = upload(Endpoint::Event, Some(EMPTY_NOTIFICATION), b"x");
    let e = f.send(dev, &f.dev, notification).await.err();
    assert_eq!(e, Some(ForwardError::EmptyNotificationWithBody));
    let ok = upload(Endpoint::Event, Some(EMPTY_NOTIFICATION), b"");
    assert!(f.send(dev, &f.dev, ok).await.is_ok());
    Ok(())
}

#[test]
fn media_types_ignore_case_white_space_and_parameters() {
    let empty = EMPTY_NOTIFICATION;
    for yes in [
        empty,
        "  Application/VND.Eclipse-Hono-Empty-Notification",
        "application/vnd.eclipse-hono-empty-notification ; charset=utf-8",
        "application/vnd.eclipse-hono-empty-notification;x=y",
        "application/vnd.eclipse-hono-empty-notification  ",
    ] {
        assert!(is_media_type(yes, empty), "{yes:?}");
    }
    for no in [
        "",
        "text/plain",
        "application/vnd.eclipse-hono-empty-notificationx",
        "application/vnd.eclipse-hono-empty-notification x",
        "application/vnd.eclipse-hono-empty-notificatio",
        "x application/vnd.eclipse-hono-empty-notification",
        "application/vnd.eclipse-hono-empty-notificatiön",
    ] {
        assert!(!is_media_type(no, empty), "{no:?}");
    }
}

#[tokio::test]
async fn tenant_checks() -> TestResult {
    let f = fixture()?;
    let t2 = TenantId::parse("t2")?;
    let other = device(&t2, &f.dev);
    let e = f
        .forwarder
        .forward(
            Some(&other),
            &f.t1,
            &f.dev,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await
        .err();
    assert!(matches!(e, Some(ForwardError::OtherTenant { .. })));
    let e = f
        .forwarder
        .forward(None, &t2, &f.dev, upload(Endpoint::Telemetry, None, b"x"))
        .await
        .err();
    assert_eq!(e, Some(ForwardError::TenantUnknown(t2.clone())));
    f.registry
        .add_tenant(tenant(json!({"tenant-id": "t1", "enabled": false}))?);
    let e = f
        .send(
            Some(&f.dev),
            &f.dev,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await
        .err();
    assert_eq!(e, Some(ForwardError::TenantDisabled(f.t1.clone())));
    Ok(())
}

#[tokio::test]
async fn adapter_settings_of_the_tenant() -> TestResult {
    let f = fixture()?;
    f.registry.add_tenant(tenant(json!({
        "tenant-id": "t1", "adapters": [{"type": "hono-mqtt", "enabled": true}]
    }))?);
    let e = f
        .send(
            Some(&f.dev),
            &f.dev,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await
        .err();
    assert!(matches!(e, Some(ForwardError::AdapterDisabled { .. })));
    f.registry.add_tenant(tenant(json!({
        "tenant-id": "t1", "adapters": [{"type": "hono-http", "enabled": true}]
    }))?);
    let e = f
        .send(None, &f.dev, upload(Endpoint::Telemetry, None, b"x"))
        .await
        .err();
    assert_eq!(e, Some(ForwardError::AuthenticationRequired(f.t1.clone())));
    f.registry.add_tenant(tenant(json!({
        "tenant-id": "t1",
        "adapters": [{"type": "hono-http", "enabled": true, "device-authentication-required": false}]
    }))?);
    assert!(
        f.send(None, &f.dev, upload(Endpoint::Telemetry, None, b"x"))
            .await
            .is_ok()
    );
    Ok(())
}

#[tokio::test]
async fn registration_checks() -> TestResult {
    let f = fixture()?;
    let ghost = id("ghost")?;
    let e = f
        .send(
            Some(&ghost),
            &ghost,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await
        .err();
    assert_eq!(
        e,
        Some(ForwardError::DeviceUnknownOrDisabled(ghost.clone()))
    );
    // dev-1 is not in dev-2's via.
    let e = f
        .send(
            Some(&f.dev),
            &f.behind_gw,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await
        .err();
    assert_eq!(
        e,
        Some(ForwardError::GatewayNotAuthorised {
            gateway: f.dev.clone(),
            device: f.behind_gw.clone()
        })
    );
    let m = f
        .send(
            Some(&f.gw),
            &f.behind_gw,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await?;
    assert_eq!(m.device_id, f.behind_gw);
    assert_eq!(m.properties.get("gateway_id"), Some(&json!("gw-1")));
    f.registry.set_unavailable(true);
    let e = f
        .send(
            Some(&f.dev),
            &f.dev,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await
        .err();
    assert!(matches!(e, Some(ForwardError::RegistryUnavailable(_))));
    Ok(())
}

#[tokio::test]
async fn northbound_failures_are_kept_apart() -> TestResult {
    let f = fixture()?;
    let cases = [
        (Failure::NoConsumer, "NoConsumer"),
        (Failure::Rejected, "NorthboundRejected"),
        (Failure::Unavailable, "NorthboundUnavailable"),
        (Failure::Storage, "NorthboundStorage"),
    ];
    for (failure, variant) in cases {
        f.northbound.set_failure(Some(failure));
        let e = f
            .send(Some(&f.dev), &f.dev, upload(Endpoint::Event, None, b"x"))
            .await
            .err();
        assert!(
            format!("{e:?}").starts_with(&format!("Some({variant}(")),
            "{e:?}"
        );
        assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::Unavailable));
    }
    Ok(())
}

#[tokio::test]
async fn message_fields_and_defaults_precedence() -> TestResult {
    let f = fixture()?;
    let mut u = upload(Endpoint::Telemetry, None, b"x");
    u.ttd = Some(30);
    u.orig_address = "/telemetry".to_owned();
    let m = f.send(Some(&f.dev), &f.dev, u).await?;
    assert_eq!(m.content_type, "text/tenant");
    assert_eq!(
        m.ttl_ms, None,
        "telemetry has no ttl without ttl-telemetry defaults"
    );
    assert_eq!(m.ttd, Some(30));
    assert_eq!(m.orig_adapter, "hono-http");
    assert_eq!(m.orig_address, "/telemetry");
    assert_eq!(m.qos, Qos::AtMostOnce);
    assert_eq!(m.properties.get("color"), Some(&json!("blue")));
    assert!(!m.properties.contains_key("content-type"));
    assert!(!m.properties.contains_key("ttl"));
    assert!(!m.properties.contains_key("gateway_id"));
    assert!((chrono::Utc::now().timestamp_millis() - m.creation_time).abs() < 10_000);

    let m = f
        .send(
            Some(&f.gw),
            &f.behind_gw,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await?;
    assert_eq!(
        m.content_type, "text/device",
        "device default beats tenant default"
    );
    assert_eq!(m.properties.get("color"), Some(&json!("red")));
    assert_eq!(m.properties.get("site"), Some(&json!("x")));

    let m = f
        .send(
            Some(&f.gw),
            &f.behind_gw,
            upload(Endpoint::Telemetry, Some("a/b"), b"x"),
        )
        .await?;
    assert_eq!(m.content_type, "a/b", "the upload's own type wins");

    f.registry.add_tenant(tenant(json!({"tenant-id": "t1"}))?);
    let m = f
        .send(
            Some(&f.dev),
            &f.dev,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await?;
    assert_eq!(m.content_type, DEFAULT_CONTENT_TYPE);
    Ok(())
}

#[tokio::test]
async fn event_ttl_follows_limits_and_defaults() -> TestResult {
    let f = fixture()?;
    let mut u = upload(Endpoint::Event, None, b"x");
    u.qos = Qos::AtMostOnce;
    let m = f.send(Some(&f.dev), &f.dev, u.clone()).await?;
    assert_eq!(m.qos, Qos::AtLeastOnce, "events are always at least once");
    assert_eq!(m.ttl_ms, Some(100_000), "tenant default ttl");
    let m = f.send(Some(&f.gw), &f.behind_gw, u.clone()).await?;
    assert_eq!(m.ttl_ms, Some(50_000), "device default ttl");
    u.ttl = Some(Duration::from_secs(20));
    let m = f.send(Some(&f.dev), &f.dev, u.clone()).await?;
    assert_eq!(m.ttl_ms, Some(20_000), "requested ttl below max-ttl");
    u.ttl = Some(Duration::from_secs(1000));
    let m = f.send(Some(&f.dev), &f.dev, u).await?;
    assert_eq!(m.ttl_ms, Some(100_000), "too long: the default applies");
    Ok(())
}

#[tokio::test]
async fn telemetry_ttl_uses_qos_specific_keys() -> TestResult {
    let f = fixture()?;
    f.registry.add_tenant(tenant(json!({
        "tenant-id": "t1",
        "defaults": {"ttl-telemetry-qos1": 40},
        "resource-limits": {"max-ttl-telemetry-qos0": 10}
    }))?);
    let mut u = upload(Endpoint::Telemetry, None, b"x");
    assert_eq!(
        f.send(Some(&f.dev), &f.dev, u.clone()).await?.ttl_ms,
        Some(10_000)
    );
    u.qos = Qos::AtLeastOnce;
    let m = f.send(Some(&f.dev), &f.dev, u).await?;
    assert_eq!((m.qos, m.ttl_ms), (Qos::AtLeastOnce, Some(40_000)));
    Ok(())
}

#[test]
fn every_cause_has_a_kind() -> TestResult {
    let t = TenantId::parse("t")?;
    let d = id("d")?;
    let cases = [
        (
            ForwardError::PayloadTooLarge { size: 2, max: 1 },
            ErrorKind::PayloadTooLarge,
        ),
        (
            ForwardError::EmptyBodyWithoutContentType,
            ErrorKind::BadRequest,
        ),
        (
            ForwardError::EmptyNotificationWithBody,
            ErrorKind::BadRequest,
        ),
        (
            ForwardError::OtherTenant {
                sender: t.clone(),
                tenant: t.clone(),
            },
            ErrorKind::Forbidden,
        ),
        (ForwardError::TenantUnknown(t.clone()), ErrorKind::NotFound),
        (
            ForwardError::TenantDisabled(t.clone()),
            ErrorKind::Forbidden,
        ),
        (
            ForwardError::AdapterDisabled {
                adapter: "a".into(),
                tenant: t.clone(),
            },
            ErrorKind::Forbidden,
        ),
        (
            ForwardError::AuthenticationRequired(t),
            ErrorKind::Unauthorized,
        ),
        (
            ForwardError::DeviceUnknownOrDisabled(d.clone()),
            ErrorKind::NotFound,
        ),
        (
            ForwardError::DeviceNotClaimed(d.clone()),
            ErrorKind::Forbidden,
        ),
        (
            ForwardError::GatewayNotAuthorised {
                gateway: d.clone(),
                device: d,
            },
            ErrorKind::Forbidden,
        ),
        (
            ForwardError::RegistryUnavailable(String::new()),
            ErrorKind::Unavailable,
        ),
        (
            ForwardError::RegistrationForbidden(String::new()),
            ErrorKind::Forbidden,
        ),
        (
            ForwardError::RegistryBadRequest(String::new()),
            ErrorKind::BadRequest,
        ),
        (
            ForwardError::NoConsumer(String::new()),
            ErrorKind::Unavailable,
        ),
        (
            ForwardError::NorthboundRejected(String::new()),
            ErrorKind::Unavailable,
        ),
        (
            ForwardError::NorthboundUnavailable(String::new()),
            ErrorKind::Unavailable,
        ),
        (
            ForwardError::NorthboundStorage(String::new()),
            ErrorKind::Unavailable,
        ),
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind, "{error}");
    }
    Ok(())
}

#[test]
fn every_auth_failure_is_unauthorized_except_an_outage() {
    use crate::AuthError;
    for e in [
        AuthError::MalformedUsername,
        AuthError::UnknownCredentials,
        AuthError::CredentialsDisabled,
        AuthError::NoValidSecret,
        AuthError::WrongPassword,
        AuthError::NoClientCertificate,
        AuthError::MalformedCertificate(String::new()),
        AuthError::UnknownIssuer(String::new()),
        AuthError::UntrustedChain(String::new()),
        AuthError::CertificateExpired,
        AuthError::CertificateNotYetValid,
        AuthError::CaOutsideValidity(String::new()),
        AuthError::AuthIdTemplate(String::new()),
        AuthError::UnregisteredCertificate,
    ] {
        assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    }
    assert_eq!(
        AuthError::RegistryUnavailable(String::new()).kind(),
        ErrorKind::Unavailable
    );
}

#[tokio::test]
async fn cheap_checks_come_before_any_registry_call() -> TestResult {
    let f = fixture()?;
    f.registry.set_unavailable(true);
    let too_big = upload(Endpoint::Telemetry, None, b"01234567890123456");
    let e = f.send(Some(&f.dev), &f.dev, too_big).await.err();
    assert!(matches!(e, Some(ForwardError::PayloadTooLarge { .. })));
    let other = device(&TenantId::parse("t2")?, &f.dev);
    let e = f
        .forwarder
        .forward(
            Some(&other),
            &f.t1,
            &f.dev,
            upload(Endpoint::Telemetry, None, b"x"),
        )
        .await
        .err();
    assert!(matches!(e, Some(ForwardError::OtherTenant { .. })));
    Ok(())
}

/// A fixture whose registry answers may be cached, with a memo following `generation`.
fn remembering()
-> Result<(Fixture, Arc<RegistryGeneration>, ForwardMemo), Box<dyn std::error::Error>> {
    let f = fixture()?;
    f.registry.set_cache_directive(CacheDirective::Default);
    let generation = Arc::new(RegistryGeneration::default());
    let memo = ForwardMemo::new(Arc::clone(&generation));
    Ok((f, generation, memo))
}

impl Fixture {
    async fn send_with(
        &self,
        memo: &ForwardMemo,
        sender: &DeviceId,
        device_id: &DeviceId,
    ) -> Result<(), ForwardError> {
        let sender = device(&self.t1, sender);
        let upload = upload(Endpoint::Telemetry, None, b"x");
        self.forwarder
            .forward_with(memo, Some(&sender), &self.t1, device_id, upload)
            .await
    }
}

fn changed(f: &Fixture, generation: &RegistryGeneration) {
    generation.registry_changed(&RegistryChange::Device {
        tenant_id: f.t1.clone(),
        device_id: f.dev.clone(),
    });
}

#[tokio::test]
async fn a_memo_saves_the_lookups_of_the_next_upload() -> TestResult {
    let (f, _generation, memo) = remembering()?;
    f.send_with(&memo, &f.dev, &f.dev).await?;
    let calls = f.registry.calls();
    f.send_with(&memo, &f.dev, &f.dev).await?;
    assert_eq!(f.registry.calls(), calls, "tenant and assertion recalled");
    // Another device of the connection (a gateway's) is asserted anew.
    f.send_with(&memo, &f.gw, &f.behind_gw).await?;
    assert_eq!(f.registry.calls(), calls + 1);
    assert_eq!(f.northbound.sent().len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_removed_device_is_refused_on_the_next_upload_despite_the_memo() -> TestResult {
    let (f, generation, memo) = remembering()?;
    f.send_with(&memo, &f.dev, &f.dev).await?;
    f.registry.remove_device(&f.t1, &f.dev);
    changed(&f, &generation);
    let e = f.send_with(&memo, &f.dev, &f.dev).await.err();
    assert_eq!(
        e,
        Some(ForwardError::DeviceUnknownOrDisabled(f.dev.clone()))
    );
    Ok(())
}

#[tokio::test]
async fn a_disabled_tenant_is_refused_on_the_next_upload_despite_the_memo() -> TestResult {
    let (f, generation, memo) = remembering()?;
    f.send_with(&memo, &f.dev, &f.dev).await?;
    f.registry
        .add_tenant(tenant(json!({"tenant-id": "t1", "enabled": false}))?);
    changed(&f, &generation);
    let e = f.send_with(&memo, &f.dev, &f.dev).await.err();
    assert_eq!(e, Some(ForwardError::TenantDisabled(f.t1.clone())));
    Ok(())
}

#[tokio::test]
async fn answers_the_registry_marks_no_cache_are_not_remembered() -> TestResult {
    let (f, _generation, memo) = remembering()?;
    f.registry.set_cache_directive(CacheDirective::NoCache);
    f.send_with(&memo, &f.dev, &f.dev).await?;
    let calls = f.registry.calls();
    f.send_with(&memo, &f.dev, &f.dev).await?;
    assert_eq!(f.registry.calls(), calls + 2);
    Ok(())
}

/// A connection handle that ignores refusals (the memo is what is tested).
#[derive(Clone)]
struct Ignore;

impl crate::watch::Revoke for Ignore {
    fn refused(&self, _tenant: &TenantId, _device: &DeviceId, _error: ForwardError) {}
}

#[tokio::test]
async fn a_connection_watchs_memo_forgets_on_the_changes_the_watch_is_told() -> TestResult {
    let f = fixture()?;
    f.registry.set_cache_directive(CacheDirective::Default);
    let watch = crate::watch::ConnectionWatch::<Ignore>::new(f.forwarder.clone());
    let memo = watch.forward_memo();
    f.send_with(&memo, &f.dev, &f.dev).await?;
    let calls = f.registry.calls();
    f.send_with(&memo, &f.dev, &f.dev).await?;
    assert_eq!(f.registry.calls(), calls, "tenant and assertion recalled");
    f.registry.remove_device(&f.t1, &f.dev);
    watch.registry_changed(&RegistryChange::Device {
        tenant_id: f.t1.clone(),
        device_id: f.dev.clone(),
    });
    let e = f.send_with(&memo, &f.dev, &f.dev).await.err();
    assert_eq!(
        e,
        Some(ForwardError::DeviceUnknownOrDisabled(f.dev.clone()))
    );
    Ok(())
}
