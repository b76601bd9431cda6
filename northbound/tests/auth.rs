//! Authentication and link refusal over real sockets.

mod common;

use std::time::Duration;

use common::{TestResult, config, credentials, message, start, within};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use ferry_adapter_core::{Endpoint, Northbound, Qos};
use ferry_northbound::{Consumer, ConsumerError};
use ferry_registry_client::TenantId;

#[tokio::test]
async fn plain_with_wrong_password_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let wrong = Consumer::connect(server.addr(), Some((common::USER.into(), "nope".into()))).await;
    assert!(matches!(wrong, Err(ConsumerError::Open(_))), "{wrong:?}");
    let unknown =
        Consumer::connect(server.addr(), Some(("who".into(), common::PASSWORD.into()))).await;
    assert!(
        matches!(unknown, Err(ConsumerError::Open(_))),
        "{unknown:?}"
    );
    // The right password works.
    let consumer = Consumer::connect(server.addr(), credentials()).await?;
    consumer.close().await?;
    server.stop().await
}

#[tokio::test]
async fn anonymous_is_refused_unless_allowed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let anonymous = Consumer::connect(server.addr(), None).await;
    assert!(
        matches!(anonymous, Err(ConsumerError::Open(_))),
        "{anonymous:?}"
    );
    server.stop().await?;

    let mut open = config(dir.path());
    open.users.clear();
    open.allow_anonymous = true;
    let server = start(open).await?;
    let mut consumer = Consumer::connect(server.addr(), None).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Telemetry, &TenantId::parse("anon")?)
        .await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "anon", 1)
        .await?;
    server
        .northbound
        .send(message(
            Endpoint::Telemetry,
            Qos::AtMostOnce,
            "anon",
            "d",
            b"hi",
        )?)
        .await?;
    assert_eq!(within(receiver.recv()).await??.payload.as_ref(), b"hi");
    // PLAIN is not offered without users.
    let plain = Consumer::connect(server.addr(), credentials()).await;
    assert!(plain.is_err(), "{plain:?}");
    server.stop().await
}

#[tokio::test]
async fn unknown_addresses_and_sender_links_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut connection = Connection::builder()
        .container_id("raw-client")
        .sasl_profile((common::USER, common::PASSWORD))
        .open_with_stream(tokio::net::TcpStream::connect(server.addr()).await?)
        .await?;
    let mut session = Session::begin(&mut connection).await?;
    for address in ["command/t", "telemetry", "telemetry/bad tenant", "queue"] {
        let attached = within(Receiver::attach(
            &mut session,
            format!("r-{address}"),
            address,
        ))
        .await?;
        // Either the attach fails, or the link is closed at once with amqp:not-found.
        if let Ok(mut receiver) = attached {
            let next = within(receiver.recv::<Body<Value>>()).await?;
            let error = format!(
                "{:?}",
                next.err().ok_or("refused link delivered a message")?
            );
            assert!(error.contains("NotFound"), "{address}: {error}");
        }
    }
    let sender = within(Sender::attach(&mut session, "s", "telemetry/t")).await?;
    match sender {
        Err(_) => {}
        Ok(mut sender) => {
            // Attached, but the server closes it at once.
            let detached = tokio::time::timeout(Duration::from_secs(2), sender.on_detach()).await;
            assert!(
                detached.is_ok(),
                "sender link to the northbound was not closed"
            );
        }
    }
    // The session is still usable for a valid consumer link.
    let receiver = within(Receiver::attach(&mut session, "ok", "event/t")).await?;
    assert!(receiver.is_ok(), "{receiver:?}");
    server.wait_for_consumers(Endpoint::Event, "t", 1).await?;
    server.stop().await
}

#[tokio::test]
async fn garbage_and_vanishing_peers_do_not_hurt_the_server() -> TestResult {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let mut garbage = tokio::net::TcpStream::connect(server.addr()).await?;
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
    drop(garbage);
    let mut header_then_junk = tokio::net::TcpStream::connect(server.addr()).await?;
    header_then_junk
        .write_all(b"AMQP\x03\x01\x00\x00\xff\xff\xff\xff\x02\x01\x00\x00")
        .await?;
    drop(header_then_junk);

    // A consumer that disappears without closing.
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let _receiver = consumer
        .receiver(Endpoint::Telemetry, &TenantId::parse("v")?)
        .await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "v", 1)
        .await?;
    drop(_receiver);
    drop(consumer);
    server
        .wait_for_consumers(Endpoint::Telemetry, "v", 0)
        .await?;

    // Still serving.
    let mut consumer = Consumer::connect(server.addr(), credentials()).await?;
    let mut receiver = consumer
        .receiver(Endpoint::Telemetry, &TenantId::parse("v")?)
        .await?;
    server
        .wait_for_consumers(Endpoint::Telemetry, "v", 1)
        .await?;
    server
        .northbound
        .send(message(
            Endpoint::Telemetry,
            Qos::AtMostOnce,
            "v",
            "d",
            b"ok",
        )?)
        .await?;
    assert_eq!(within(receiver.recv()).await??.payload.as_ref(), b"ok");
    server.stop().await
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut limited = config(dir.path());
    limited.max_connections = 1;
    let server = start(limited).await?;
    let first = Consumer::connect(server.addr(), credentials()).await?;
    let second = tokio::time::timeout(
        Duration::from_millis(300),
        Consumer::connect(server.addr(), credentials()),
    )
    .await;
    assert!(
        second.is_err(),
        "a second connection was served beyond max_connections"
    );
    first.close().await?;
    let third = within(Consumer::connect(server.addr(), credentials())).await??;
    third.close().await?;
    server.stop().await
}
