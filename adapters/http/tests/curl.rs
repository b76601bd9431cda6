//! Interop with curl (skipped when curl is not installed): `Expect: 100-continue` bodies, the
//! payload limit, Basic auth and TLS as a real, independent client does them.

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::*;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs curl with `args`, feeding `body` on stdin, and returns the HTTP status it saw.
async fn curl(args: &[&str], body: &[u8]) -> Result<u16, Error> {
    let mut child = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
            "@-",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(body).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

fn curl_installed() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn curl_plain_and_tls() -> TestResult {
    if !curl_installed() {
        eprintln!("curl is not installed: skipping the interop test");
        return Ok(());
    }
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let h = start_with(config(), Some(Arc::new(tls))).await?;

    let url = h.url("/telemetry")?;
    let auth = ["-u", "sensor1@t1:pw1", "-H", "content-type: text/plain"];
    let big = vec![b'a'; 1500]; // curl asks `Expect: 100-continue` above 1024 bytes
    assert_eq!(
        curl(&[&auth[..], &[url.as_str()]].concat(), &big).await?,
        202
    );
    assert_eq!(
        curl(&[&auth[..], &[url.as_str()]].concat(), &[b'a'; 3000]).await?,
        413
    );
    assert_eq!(
        curl(&["-u", "sensor1@t1:nope", url.as_str()], b"x").await?,
        401
    );
    let gateway = h.url("/event//dev-2")?;
    assert_eq!(
        curl(&["-u", "gw1@t1:gwpw", "-X", "PUT", gateway.as_str()], b"x").await?,
        202
    );

    let ca = std::env::temp_dir().join(format!("ferry-http-curl-{}.pem", std::process::id()));
    std::fs::write(&ca, cert.pem())?;
    let port = h.tls_addr.ok_or("no TLS port")?.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let tls_url = format!("https://localhost:{port}/telemetry");
    let ca_path = ca.to_str().ok_or("temp path is not UTF-8")?;
    let status = curl(
        &[
            "--cacert",
            ca_path,
            "--resolve",
            &resolve,
            "-u",
            "sensor1@t1:pw1",
            &tls_url,
        ],
        b"secure",
    )
    .await;
    std::fs::remove_file(&ca)?;
    assert_eq!(status?, 202);
    assert_eq!(h.northbound.sent().len(), 3);
    h.stop().await
}
