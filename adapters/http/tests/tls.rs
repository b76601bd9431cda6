//! The TLS port with an rcgen self-signed server certificate, trusted by reqwest.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn server_tls() -> Result<(Arc<rustls::ServerConfig>, CertificateDer<'static>), Error> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert))
}

#[tokio::test]
async fn telemetry_over_tls() -> TestResult {
    let (tls, cert) = server_tls()?;
    let h = start_with(config(), Some(tls)).await?;
    let tls_addr = h.tls_addr.ok_or("no TLS port")?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_der(&cert)?)
        .resolve("localhost", tls_addr)
        .build()?;
    let url = format!("https://localhost:{}/telemetry", tls_addr.port());
    for _ in 0..2 {
        let response = client
            .post(&url)
            .basic_auth("sensor1@t1", Some("pw1"))
            .body("secure")
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let response = client
        .post(&url)
        .basic_auth("sensor1@t1", Some("bad"))
        .body("x")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.northbound.sent().len(), 2);
    h.stop().await
}

#[tokio::test]
async fn tls_only_when_the_insecure_port_is_disabled() -> TestResult {
    let (tls, _) = server_tls()?;
    let config = ferry_adapter_http::HttpConfig {
        insecure_port_enabled: false,
        ..config()
    };
    let h = start_with(config.clone(), Some(tls)).await?;
    assert!(h.addr.is_none());
    assert!(h.tls_addr.is_some());
    h.stop().await?;
    let no_port = start_with(config, None).await;
    assert!(no_port.is_err(), "neither port would be open");
    Ok(())
}

#[tokio::test]
async fn silent_or_plain_clients_are_dropped_after_the_handshake_timeout() -> TestResult {
    let (tls, _) = server_tls()?;
    let h = start_with(
        ferry_adapter_http::HttpConfig {
            tls_handshake_timeout: Duration::from_millis(300),
            ..config()
        },
        Some(tls),
    )
    .await?;
    let tls_addr = h.tls_addr.ok_or("no TLS port")?;
    let mut silent = tokio::net::TcpStream::connect(tls_addr).await?;
    let mut plain = tokio::net::TcpStream::connect(tls_addr).await?;
    plain
        .write_all(b"POST /telemetry HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let mut buf = [0u8; 512];
    for stream in [&mut silent, &mut plain] {
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await?;
        // Closed (0), or a TLS alert followed by the close; never an HTTP answer.
        if let Ok(n) = read {
            assert!(
                !buf[..n].starts_with(b"HTTP/"),
                "answered plain HTTP on the TLS port"
            );
        }
    }
    // The accept loop was never blocked: a real client is still served meanwhile.
    let response = client()?
        .post(h.url("/telemetry")?)
        .basic_auth("sensor1@t1", Some("pw1"))
        .body("x")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    h.stop().await
}

/// With both ports open and room for one connection, the idle TLS port must not sit on the only
/// permit: a plain connection is served.
#[tokio::test]
async fn an_idle_port_holds_no_connection_permit() -> TestResult {
    let (tls, _) = server_tls()?;
    let h = start_with(
        ferry_adapter_http::HttpConfig {
            max_connections: 1,
            ..config()
        },
        Some(tls),
    )
    .await?;
    let request = format!(
        "POST /telemetry HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        basic("sensor1@t1", "pw1")
    );
    // Two connections one after the other on the plain port: whichever loop held the permit
    // before, a loop sitting idle in `accept` must not keep it from the port that is used.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut stream = tokio::net::TcpStream::connect(h.addr.ok_or("no plain port")?).await?;
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            raw_exchange(&mut stream, request.as_bytes()),
        )
        .await??;
        assert_eq!(response.status, 202);
    }
    h.stop().await
}
