//! Every refused request logs one line with tenant, device and reason; never a password or payload.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use common::*;

/// Collects formatted log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn refusals_are_logged_once_without_secrets() -> TestResult {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // #[tokio::test] runs the adapter's tasks on this thread, so a thread-local default suffices.
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = start().await?;
    let c = client()?;
    let secret = "SuperSecret-4711";
    let payload = "PAYLOAD-MARKER";
    let refused = [
        c.post(h.url("/telemetry")?)
            .basic_auth("sensor1@t1", Some(secret)),
        c.put(h.url("/telemetry/t1/dev-3")?)
            .basic_auth("gw1@t1", Some("gwpw")),
        c.post(h.url("/telemetry")?)
            .header("authorization", "Basic !!!"),
    ];
    for request in refused {
        let response = request.body(payload).send().await?;
        assert!(response.status().is_client_error());
    }
    let accepted = c
        .post(h.url("/telemetry")?)
        .basic_auth("sensor1@t1", Some("pw1"));
    assert!(accepted.body(payload).send().await?.status().is_success());
    h.stop().await?;

    let log = captured.text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    let wrong = lines.first().ok_or("missing line")?;
    assert!(
        wrong.contains("t1") && wrong.contains("status=401"),
        "{wrong}"
    );
    let gateway = lines.get(1).ok_or("missing line")?;
    assert!(
        gateway.contains("tenant=\"t1\"") || gateway.contains("tenant=t1"),
        "{gateway}"
    );
    assert!(
        gateway.contains("dev-3") && gateway.contains("status=403"),
        "{gateway}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("connection{peer=127.0.0.1:")),
        "{log}"
    );
    assert!(!log.contains(secret), "password logged: {log}");
    assert!(
        !log.contains("pw1") && !log.contains("gwpw"),
        "password logged: {log}"
    );
    assert!(!log.contains(payload), "payload logged: {log}");
    Ok(())
}
