//! Hono's HTTP adapter API over real sockets: every status code from its cause.

mod common;

use common::*;
use ferry_adapter_core::Qos;
use ferry_adapter_core::test_util::Failure;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn authenticated_telemetry_is_accepted_and_forwarded() -> TestResult {
    let h = start().await?;
    let response = client()?
        .post(h.url("/telemetry")?)
        .basic_auth("sensor1@t1", Some("pw1"))
        .header("content-type", "application/json")
        .body(r#"{"temp": 5}"#)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let sent = h.northbound.sent();
    let m = sent.first().ok_or("nothing forwarded")?;
    assert_eq!(m.tenant_id, tid("t1")?);
    assert_eq!(m.device_id, id("dev-1")?);
    assert_eq!(m.qos, Qos::AtMostOnce);
    assert_eq!(m.content_type, "application/json");
    assert_eq!(m.orig_adapter, "hono-http");
    assert_eq!(m.orig_address, "/telemetry");
    assert_eq!(&m.payload[..], br#"{"temp": 5}"#);
    h.stop().await
}

#[tokio::test]
async fn qos_level_header() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let send = |qos: &'static str| {
        c.post(h.url("/telemetry").unwrap_or_default())
            .basic_auth("sensor1@t1", Some("pw1"))
            .header("QoS-Level", qos)
            .body("x")
            .send()
    };
    assert_eq!(send("1").await?.status(), StatusCode::ACCEPTED);
    assert_eq!(send("0").await?.status(), StatusCode::ACCEPTED);
    let qos: Vec<Qos> = h.northbound.sent().iter().map(|m| m.qos).collect();
    assert_eq!(qos, [Qos::AtLeastOnce, Qos::AtMostOnce]);
    for bad in ["2", "x", "-1"] {
        let response = send(bad).await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(response.text().await?.contains("qos-level"));
    }
    h.stop().await
}

#[tokio::test]
async fn events_take_ttl_and_ttd_from_headers_or_query() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let response = c
        .post(h.url("/event?hono-ttd=20")?)
        .basic_auth("sensor1@t1", Some("pw1"))
        .header("hono-ttl", "30")
        .header("qos-level", "0")
        .body("e")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let sent = h.northbound.sent();
    let m = sent.first().ok_or("nothing forwarded")?;
    assert_eq!(
        (m.qos, m.ttl_ms, m.ttd),
        (Qos::AtLeastOnce, Some(30_000), Some(20))
    );
    assert_eq!(m.orig_address, "/event");
    for (name, value) in [
        ("hono-ttl", "-1"),
        ("hono-ttl", "soon"),
        ("hono-ttd", "1.5"),
    ] {
        let response = c
            .post(h.url("/event")?)
            .basic_auth("sensor1@t1", Some("pw1"))
            .header(name, value)
            .body("e")
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{name}: {value}"
        );
    }
    h.stop().await
}

#[tokio::test]
async fn missing_and_bad_credentials_get_401_with_realm() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let requests = [
        c.post(h.url("/telemetry")?),
        c.post(h.url("/telemetry")?)
            .basic_auth("sensor1@t1", Some("wrong")),
        c.post(h.url("/telemetry")?)
            .basic_auth("nobody@t1", Some("pw1")),
        c.post(h.url("/telemetry")?)
            .basic_auth("sensor1", Some("pw1")),
        c.post(h.url("/telemetry")?)
            .header("authorization", "Basic !!!"),
        c.post(h.url("/telemetry")?)
            .header("authorization", "Bearer abc.def.ghi"),
        c.post(h.url("/telemetry")?)
            .header("authorization", "Basic"),
        c.put(h.url("/telemetry/t1/dev-1")?),
    ];
    for request in requests {
        let response = request.body("x").send().await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let realm = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str());
        assert_eq!(realm.transpose()?, Some("Basic realm=\"Hono\""));
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .map(|v| v.to_str())
                .transpose()?,
            Some("text/plain; charset=utf-8")
        );
        assert!(!response.text().await?.is_empty());
    }
    assert!(h.northbound.sent().is_empty());
    h.stop().await
}

#[tokio::test]
async fn unknown_uris_and_wrong_methods() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let not_found = [
        c.post(h.url("/")?),
        c.post(h.url("/foo")?),
        c.put(h.url("/telemetry/t1/dev-1/x")?),
    ];
    for request in not_found {
        let response = request
            .basic_auth("sensor1@t1", Some("pw1"))
            .body("x")
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let response = c.get(h.url("/telemetry")?).send().await?;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .map(|v| v.to_str())
            .transpose()?,
        Some("POST")
    );
    let response = c.post(h.url("/event/t1/dev-1")?).body("x").send().await?;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = c
        .put(h.url("/telemetry/t1/bad%20id")?)
        .basic_auth("sensor1@t1", Some("pw1"))
        .body("x")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    h.stop().await
}

#[tokio::test]
async fn content_type_rules() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let post = || {
        c.post(h.url("/event").unwrap_or_default())
            .basic_auth("sensor1@t1", Some("pw1"))
    };
    let response = post().send().await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await?.contains("content type"));
    let notification = "application/vnd.eclipse-hono-empty-notification";
    let response = post()
        .header("content-type", notification)
        .body("x")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = post()
        .header("content-type", notification)
        .header("hono-ttd", "-1")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let response = post().body("no type").send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let types: Vec<String> = h
        .northbound
        .sent()
        .iter()
        .map(|m| m.content_type.clone())
        .collect();
    assert_eq!(types, [notification, "application/octet-stream"]);
    h.stop().await
}

#[tokio::test]
async fn payload_limit() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let post = |size: usize| {
        c.post(h.url("/telemetry").unwrap_or_default())
            .basic_auth("sensor1@t1", Some("pw1"))
            .body(vec![b'a'; size])
            .send()
    };
    assert_eq!(post(2048).await?.status(), StatusCode::ACCEPTED);
    assert_eq!(post(2049).await?.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(post(100_000).await?.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.northbound.sent().len(), 1);
    h.stop().await
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused() -> TestResult {
    let h = start().await?;
    let mut stream = tokio::net::TcpStream::connect(h.addr.ok_or("no port")?).await?;
    let chunk = "a".repeat(1500);
    let request = format!(
        "POST /telemetry HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ntransfer-encoding: chunked\r\n\r\n\
         5dc\r\n{chunk}\r\n5dc\r\n{chunk}\r\n0\r\n\r\n",
        basic("sensor1@t1", "pw1")
    );
    let response = raw_exchange(&mut stream, request.as_bytes()).await?;
    assert_eq!(response.status, 413);
    assert!(h.northbound.sent().is_empty());
    h.stop().await
}

#[tokio::test]
async fn gateway_forms() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let put = |path: &str, user: &str, password: &str| {
        c.put(h.url(path).unwrap_or_default())
            .basic_auth(user, Some(password))
            .body("g")
            .send()
    };
    assert_eq!(
        put("/telemetry/t1/dev-2", "gw1@t1", "gwpw").await?.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        put("/event//dev-2", "gw1@t1", "gwpw").await?.status(),
        StatusCode::ACCEPTED
    );
    let sent = h.northbound.sent();
    assert_eq!(sent.len(), 2);
    for m in &sent {
        assert_eq!(m.device_id, id("dev-2")?);
        assert_eq!(m.properties.get("gateway_id"), Some(&json!("gw-1")));
        assert_eq!(m.content_type, "text/dev2", "device default content type");
        assert_eq!(m.properties.get("site"), Some(&json!("hall")));
    }
    assert_eq!(
        sent.get(1).map(|m| m.orig_address.as_str()),
        Some("/event//dev-2")
    );
    // Not in via, a device that is no gateway, unknown device, foreign tenant.
    assert_eq!(
        put("/telemetry/t1/dev-3", "gw1@t1", "gwpw").await?.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put("/telemetry/t1/dev-2", "sensor1@t1", "pw1")
            .await?
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put("/telemetry/t1/ghost", "gw1@t1", "gwpw").await?.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put("/telemetry/t2/dev-x", "gw1@t1", "gwpw").await?.status(),
        StatusCode::FORBIDDEN
    );
    // A device may use the long form for itself; no gateway_id then.
    assert_eq!(
        put("/telemetry/t1/dev-1", "sensor1@t1", "pw1")
            .await?
            .status(),
        StatusCode::ACCEPTED
    );
    let sent = h.northbound.sent();
    let own = sent.last().ok_or("nothing forwarded")?;
    assert_eq!(own.device_id, id("dev-1")?);
    assert!(!own.properties.contains_key("gateway_id"));
    h.stop().await
}

#[tokio::test]
async fn unauthenticated_devices_when_allowed() -> TestResult {
    let h = start_with(
        ferry_adapter_http::HttpConfig {
            authentication_required: false,
            ..config()
        },
        None,
    )
    .await?;
    let c = client()?;
    let put = |path: &str| c.put(h.url(path).unwrap_or_default()).body("u").send();
    assert_eq!(
        put("/telemetry/open/dev-o").await?.status(),
        StatusCode::ACCEPTED
    );
    // t1 keeps Hono's default: devices must authenticate.
    assert_eq!(
        put("/telemetry/t1/dev-1").await?.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        put("/telemetry//dev-o").await?.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put("/telemetry/open/ghost").await?.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put("/telemetry/nope/dev-o").await?.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.northbound.sent().len(), 1);
    h.stop().await
}

#[tokio::test]
async fn tenant_and_adapter_settings_give_403() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let post = |user: &str, password: &str| {
        c.post(h.url("/telemetry").unwrap_or_default())
            .basic_auth(user, Some(password))
            .body("x")
            .send()
    };
    assert_eq!(post("x@t2", "pwx").await?.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        post("off@off", "pwoff").await?.status(),
        StatusCode::FORBIDDEN
    );
    h.registry.remove_device(&tid("t1")?, &id("dev-1")?);
    assert_eq!(
        post("sensor1@t1", "pw1").await?.status(),
        StatusCode::NOT_FOUND
    );
    h.stop().await
}

#[tokio::test]
async fn northbound_and_registry_failures_give_503() -> TestResult {
    let h = start().await?;
    let c = client()?;
    let post = || {
        c.post(h.url("/event").unwrap_or_default())
            .basic_auth("sensor1@t1", Some("pw1"))
            .body("x")
            .send()
    };
    for failure in [
        Failure::NoConsumer,
        Failure::Rejected,
        Failure::Unavailable,
        Failure::Storage,
    ] {
        h.northbound.set_failure(Some(failure));
        assert_eq!(
            post().await?.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{failure:?}"
        );
    }
    h.northbound.set_failure(None);
    h.registry.set_unavailable(true);
    assert_eq!(post().await?.status(), StatusCode::SERVICE_UNAVAILABLE);
    h.registry.set_unavailable(false);
    assert_eq!(post().await?.status(), StatusCode::ACCEPTED);
    h.stop().await
}
