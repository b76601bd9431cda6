//! Connection handling: keep-alive, idle timeout, connection limit, graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn telemetry_request(body: &str) -> String {
    format!(
        "POST /telemetry HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n{body}",
        basic("sensor1@t1", "pw1"),
        body.len()
    )
}

/// Waits for the peer to close the connection; fails if it sends anything or stays open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Result<bool, Error> {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(0)) => Ok(true),
        Ok(Ok(n)) => Err(format!("unexpected {n} bytes").into()),
        Ok(Err(_)) => Ok(true), // reset
        Err(_) => Ok(false),
    }
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() -> TestResult {
    let h = start().await?;
    let mut stream = TcpStream::connect(h.addr.ok_or("no port")?).await?;
    for body in ["one", "two", "three"] {
        let response = raw_exchange(&mut stream, telemetry_request(body).as_bytes()).await?;
        assert_eq!(response.status, 202);
    }
    // A refusal keeps the connection usable too.
    let bad = "POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
    let response = raw_exchange(&mut stream, bad.as_bytes()).await?;
    assert_eq!(response.status, 404);
    assert!(String::from_utf8(response.body)?.contains("no such resource"));
    let response = raw_exchange(&mut stream, telemetry_request("four").as_bytes()).await?;
    assert_eq!(response.status, 202);
    assert_eq!(h.northbound.sent().len(), 4);
    h.stop().await
}

#[tokio::test]
async fn idle_connections_are_closed() -> TestResult {
    let h = start_idle(Duration::from_millis(300)).await?;
    let mut stream = TcpStream::connect(h.addr.ok_or("no port")?).await?;
    let response = raw_exchange(&mut stream, telemetry_request("x").as_bytes()).await?;
    assert_eq!(response.status, 202);
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await?);
    h.stop().await
}

#[tokio::test]
async fn connection_limit_holds_further_connections_back() -> TestResult {
    let h = start_with(
        ferry_adapter_http::HttpConfig {
            max_connections: 1,
            ..config()
        },
        None,
    )
    .await?;
    let addr = h.addr.ok_or("no port")?;
    let mut first = TcpStream::connect(addr).await?;
    assert_eq!(
        raw_exchange(&mut first, telemetry_request("a").as_bytes())
            .await?
            .status,
        202
    );
    let mut second = TcpStream::connect(addr).await?;
    let waiting = tokio::time::timeout(
        Duration::from_millis(300),
        raw_exchange(&mut second, telemetry_request("b").as_bytes()),
    )
    .await;
    assert!(
        waiting.is_err(),
        "second connection was served beyond the limit"
    );
    drop(first);
    let mut reader = tokio::io::BufReader::new(&mut second);
    let response =
        tokio::time::timeout(Duration::from_secs(5), read_response(&mut reader)).await??;
    assert_eq!(response.status, 202);
    h.stop().await
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() -> TestResult {
    let h = start().await?;
    h.northbound.set_delay(Some(Duration::from_millis(500)));
    let addr = h.addr.ok_or("no port")?;
    let mut idle = TcpStream::connect(addr).await?;
    let mut partial = TcpStream::connect(addr).await?;
    partial
        .write_all(b"POST /telemetry HTTP/1.1\r\nhost: x")
        .await?;
    let mut busy = TcpStream::connect(addr).await?;
    let in_flight = tokio::spawn(async move {
        let response = raw_exchange(&mut busy, telemetry_request("late").as_bytes()).await;
        response.map_err(|e| e.to_string()).map(|r| {
            let connection = r.headers.iter().find(|(n, _)| n == "connection");
            (r.status, connection.map(|(_, v)| v.clone()))
        })
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    h.shutdown.cancel();
    // The idle connection and the one that has not completed a request are closed at once, the
    // busy one gets its answer, and is told the connection ends.
    assert!(closed_within(&mut idle, Duration::from_secs(2)).await?);
    assert!(closed_within(&mut partial, Duration::from_secs(2)).await?);
    assert_eq!(in_flight.await??, (202, Some("close".to_owned())));
    assert_eq!(h.northbound.sent().len(), 1);
    tokio::time::timeout(Duration::from_secs(5), h.task).await??;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    Ok(())
}
