//! End to end: the README flow and the HTTP adapter's status codes, with the real embedded
//! registry, the real northbound, reqwest as the device and fe2o3-amqp as the application.

mod common;

use std::time::Duration;

use common::{AmqpConsumer, TestGateway, TestResult};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn readme_flow_delivers_telemetry_to_the_consumer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("t1", "dev1", "pw-1").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t1").await?;

    let status = ferry
        .upload("/telemetry", "dev1@t1", "pw-1", "hello")
        .await?;
    assert_eq!(status, 202);

    let msg = consumer.next(WAIT).await?.ok_or("no telemetry arrived")?;
    assert_eq!(msg.payload, b"hello");
    assert_eq!(msg.content_type.as_deref(), Some("text/plain"));
    assert_eq!(msg.prop("device_id").as_deref(), Some("dev1"));
    assert_eq!(msg.prop("orig_adapter").as_deref(), Some("hono-http"));
    assert_eq!(msg.prop("orig_address").as_deref(), Some("/telemetry"));
    assert_eq!(msg.prop("qos").as_deref(), Some("0"));
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn each_status_code_comes_from_its_cause() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("t2", "dev1", "pw").await?;
    let c = &ferry.client;
    let url = ferry.http("/telemetry");

    // 503: telemetry without any consumer.
    assert_eq!(ferry.upload("/telemetry", "dev1@t2", "pw", "x").await?, 503);
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t2").await?;

    // 401 with a challenge: wrong password, unknown user, no credentials at all.
    for (user, pw) in [
        ("dev1@t2", "wrong"),
        ("nobody@t2", "pw"),
        ("dev1@nope", "pw"),
    ] {
        let r = c
            .post(&url)
            .basic_auth(user, Some(pw))
            .body("x")
            .header("content-type", "text/plain")
            .send()
            .await?;
        assert_eq!(r.status(), 401, "{user}");
        let challenge = r
            .headers()
            .get("www-authenticate")
            .ok_or("no challenge")?
            .to_str()?;
        assert!(challenge.contains("Basic"), "{challenge}");
    }
    let r = c.post(&url).body("x").send().await?;
    assert_eq!(r.status(), 401);

    // 400: empty body without content type, bad qos-level, empty notification with a body;
    // 413 over the default 2048-byte limit; exactly at the limit is fine.
    let text = ("content-type", "text/plain");
    let empty_notification = (
        "content-type",
        "application/vnd.eclipse-hono-empty-notification",
    );
    type Case<'a> = (&'a [(&'a str, &'a str)], Vec<u8>, u16);
    let cases: [Case; 5] = [
        (&[], Vec::new(), 400),
        (&[("qos-level", "2"), text], b"x".to_vec(), 400),
        (&[empty_notification], b"x".to_vec(), 400),
        (&[text], vec![b'a'; 2049], 413),
        (&[text], vec![b'a'; 2048], 202),
    ];
    for (headers, body, want) in cases {
        let mut request = c.post(&url).basic_auth("dev1@t2", Some("pw"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let status = request.body(body).send().await?.status();
        assert_eq!(status, want, "headers {headers:?}");
    }
    assert_eq!(
        consumer
            .next(WAIT)
            .await?
            .ok_or("no message")?
            .payload
            .len(),
        2048
    );

    // QoS 1 telemetry: 202 only once the consumer accepted it, so the upload runs alongside.
    let upload = c
        .post(&url)
        .basic_auth("dev1@t2", Some("pw"))
        .header("qos-level", "1")
        .header("content-type", "text/plain")
        .body("q1")
        .send();
    let upload = tokio::spawn(upload);
    let msg = consumer.next(WAIT).await?.ok_or("no qos 1 message")?;
    assert_eq!(msg.prop("qos").as_deref(), Some("1"));
    assert_eq!(upload.await??.status(), 202);

    // 404: unknown URI.
    let r = c
        .post(ferry.http("/nothing"))
        .basic_auth("dev1@t2", Some("pw"))
        .body("x")
        .send()
        .await?;
    assert_eq!(r.status(), 404);

    // 403: the tenant does not allow the HTTP adapter.
    ferry
        .tenant(
            "t3",
            json!({"adapters": [{"type": "hono-mqtt", "enabled": true}]}),
        )
        .await?;
    ferry.device("t3", "dev1", json!({})).await?;
    ferry.password("t3", "dev1", "pw").await?;
    assert_eq!(ferry.upload("/telemetry", "dev1@t3", "pw", "x").await?, 403);

    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn disabling_a_device_or_tenant_takes_effect_on_the_next_request() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("t4", "dev1", "pw").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t4").await?;
    assert_eq!(
        ferry
            .upload("/telemetry", "dev1@t4", "pw", "before")
            .await?,
        202
    );
    assert!(consumer.next(WAIT).await?.is_some());

    let r = ferry
        .client
        .put(ferry.mgmt("/devices/t4/dev1"))
        .json(&json!({"enabled": false}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(
        ferry
            .upload("/telemetry", "dev1@t4", "pw", "disabled")
            .await?,
        404
    );

    let r = ferry
        .client
        .put(ferry.mgmt("/devices/t4/dev1"))
        .json(&json!({"enabled": true}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(
        ferry.upload("/telemetry", "dev1@t4", "pw", "again").await?,
        202
    );
    assert_eq!(
        consumer.next(WAIT).await?.ok_or("no message")?.payload,
        b"again"
    );

    let r = ferry
        .client
        .put(ferry.mgmt("/tenants/t4"))
        .json(&json!({"enabled": false}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    let status = ferry
        .upload("/telemetry", "dev1@t4", "pw", "tenant off")
        .await?;
    assert!(
        status == 403 || status == 401,
        "disabled tenant answered {status}"
    );
    assert!(consumer.next(Duration::from_millis(300)).await?.is_none());
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// The HTTP adapter reuses a keep-alive connection's last password check; a password change
/// must still be seen by the very next request on that connection.
#[tokio::test]
async fn a_changed_password_takes_effect_on_the_next_request_of_a_connection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("t7", "dev1", "old").await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t7").await?;
    for _ in 0..3 {
        assert_eq!(
            ferry.upload("/telemetry", "dev1@t7", "old", "a").await?,
            202
        );
    }
    ferry.password("t7", "dev1", "new").await?;
    assert_eq!(
        ferry.upload("/telemetry", "dev1@t7", "old", "b").await?,
        401
    );
    assert_eq!(
        ferry.upload("/telemetry", "dev1@t7", "new", "c").await?,
        202
    );
    let mut payloads = Vec::new();
    while let Some(m) = consumer.next(Duration::from_millis(500)).await? {
        payloads.push(m.payload);
    }
    assert_eq!(payloads, [&b"a"[..], b"a", b"a", b"c"]);
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

/// The HTTP adapter reuses a keep-alive connection's last tenant and registration answers; a
/// disabled device or a tenant that turns the adapter off must still be refused on the very next
/// request of that connection.
#[tokio::test]
async fn registry_changes_take_effect_on_the_next_request_of_a_connection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.tenant("t8", json!({})).await?;
    ferry.device("t8", "gw", json!({})).await?;
    ferry.password("t8", "gw", "gw-pw").await?;
    ferry.device("t8", "behind", json!({"via": ["gw"]})).await?;
    let consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t8").await?;
    let put = |path: &'static str| {
        ferry
            .client
            .put(ferry.http(path))
            .basic_auth("gw@t8", Some("gw-pw"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(put("/telemetry/t8/behind").await?.status(), 202);
    }
    let r = ferry
        .client
        .put(ferry.mgmt("/devices/t8/behind"))
        .json(&json!({"via": ["gw"], "enabled": false}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(put("/telemetry/t8/behind").await?.status(), 404);
    assert_eq!(put("/telemetry/t8/gw").await?.status(), 202);
    let r = ferry
        .client
        .put(ferry.mgmt("/tenants/t8"))
        .json(&json!({"adapters": [{"type": "hono-mqtt", "enabled": true}]}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(put("/telemetry/t8/gw").await?.status(), 403);
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_gateway_sends_only_for_devices_that_list_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.tenant("t5", json!({})).await?;
    ferry.device("t5", "gw", json!({})).await?;
    ferry.password("t5", "gw", "gw-pw").await?;
    ferry.device("t5", "behind", json!({"via": ["gw"]})).await?;
    ferry.device("t5", "stranger", json!({})).await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "telemetry/t5").await?;
    let c = &ferry.client;

    for path in ["/telemetry/t5/behind", "/telemetry//behind"] {
        let r = c
            .put(ferry.http(path))
            .basic_auth("gw@t5", Some("gw-pw"))
            .header("content-type", "text/plain")
            .body(path)
            .send()
            .await?;
        assert_eq!(r.status(), 202, "{path}");
        let msg = consumer
            .next(WAIT)
            .await?
            .ok_or("no message from the gateway")?;
        assert_eq!(msg.prop("device_id").as_deref(), Some("behind"));
        assert_eq!(msg.prop("gateway_id").as_deref(), Some("gw"));
        assert_eq!(msg.payload, path.as_bytes());
    }
    let r = c
        .put(ferry.http("/telemetry/t5/stranger"))
        .basic_auth("gw@t5", Some("gw-pw"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let r = c
        .put(ferry.http("/telemetry/other/behind"))
        .basic_auth("gw@t5", Some("gw-pw"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    assert!(consumer.next(Duration::from_millis(300)).await?.is_none());
    consumer.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_event_accepted_without_consumer_survives_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("t6", "dev1", "pw").await?;
    assert_eq!(
        ferry.upload("/event", "dev1@t6", "pw", "keep me").await?,
        202
    );
    ferry.stop().await;

    let ferry = TestGateway::start(dir.path()).await?;
    let mut consumer = AmqpConsumer::attach(&ferry.addrs, "event/t6").await?;
    let msg = consumer.next(WAIT).await?.ok_or("the event was lost")?;
    assert_eq!(msg.payload, b"keep me");
    assert!(msg.durable);
    assert_eq!(msg.prop("device_id").as_deref(), Some("dev1"));
    assert_eq!(msg.prop("qos").as_deref(), Some("1"));
    // Accepted means gone: a new consumer gets nothing.
    consumer.close().await;
    let mut again = AmqpConsumer::attach(&ferry.addrs, "event/t6").await?;
    assert!(again.next(Duration::from_millis(500)).await?.is_none());
    again.close().await;
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn two_consumers_of_a_tenant_share_its_telemetry() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ferry = TestGateway::start(dir.path()).await?;
    ferry.provision("t7", "dev1", "pw").await?;
    let a = AmqpConsumer::attach(&ferry.addrs, "telemetry/t7").await?;
    let b = AmqpConsumer::attach(&ferry.addrs, "telemetry/t7").await?;
    // Each consumer counts what it gets until nothing came for a while.
    let count = |mut consumer: AmqpConsumer| {
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok(Some(_)) = consumer.next(Duration::from_secs(2)).await {
                n += 1;
            }
            consumer.close().await;
            n
        })
    };
    let (a, b) = (count(a), count(b));
    const N: usize = 20;
    for _ in 0..N {
        assert_eq!(ferry.upload("/telemetry", "dev1@t7", "pw", "m").await?, 202);
    }
    let (got_a, got_b) = (a.await?, b.await?);
    assert!(got_a > 0 && got_b > 0, "a got {got_a}, b got {got_b}");
    assert_eq!(got_a + got_b, N);
    ferry.stop().await;
    Ok(())
}

#[tokio::test]
async fn protected_mode_refuses_an_open_northbound_without_users() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = common::config(dir.path());
    config.northbound.bind = "0.0.0.0:0".parse()?;
    let Err(error) = ferry::Gateway::start(config).await else {
        return Err("Ferry started with an anonymous northbound on 0.0.0.0".into());
    };
    assert!(format!("{error:#}").contains("protected mode"), "{error:#}");
    Ok(())
}
