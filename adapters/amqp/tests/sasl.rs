//! The SASL layer against the pipeline doubles: outcome codes, and garbage from a peer.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use fe2o3_amqp::connection::OpenError;
use fe2o3_amqp::types::sasl::SaslCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Harness, TestResult};

/// Starts the adapter with a short handshake timeout.
async fn start() -> Result<Harness, common::Error> {
    common::start(|c| c.handshake_timeout = Duration::from_millis(500)).await
}

async fn sasl_code(addr: SocketAddr, password: &str) -> Result<Option<SaslCode>, OpenError> {
    let opened = common::open(addr, "sensor1@t1", password).await;
    match opened {
        Ok(mut connection) => {
            let _ = connection.close().await;
            Ok(None)
        }
        Err(OpenError::SaslError { code, .. }) => Ok(Some(code)),
        Err(other) => Err(other),
    }
}

#[tokio::test]
async fn outcome_codes_tell_bad_credentials_from_an_unavailable_registry() -> TestResult {
    let h = start().await?;
    let addr = h.addr;
    assert_eq!(sasl_code(addr, "pw1").await?, None);
    assert_eq!(sasl_code(addr, "nope").await?, Some(SaslCode::Auth));
    h.registry.set_unavailable(true);
    // A fresh password (not in the verification cache) needs the registry.
    assert_eq!(sasl_code(addr, "other").await?, Some(SaslCode::SysTemp));
    h.shutdown.cancel();
    Ok(())
}

/// Reads until the adapter closes the connection; false if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read_to_end = async { while let Ok(1..) = stream.read(&mut buf).await {} };
    tokio::time::timeout(wait, read_to_end).await.is_ok()
}

#[tokio::test]
async fn garbage_and_silence_end_the_connection() -> TestResult {
    let h = start().await?;
    let addr = h.addr;
    let inputs: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"AMQP\x00\x01\x00\x00",
        b"AMQP\x03\x01\x00\x00\xff\xff\xff\xff",
        b"AMQP\x03\x01\x00\x00\x00\x00\x00\x10\x02\x01\x00\x00\x00\x53\x41\xd0\x00\x00\x00\x00",
        b"AMQP\x03\x01",
    ];
    for input in inputs {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(input).await?;
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "{input:?}"
        );
    }
    // The adapter still serves well-behaved devices.
    assert_eq!(sasl_code(addr, "pw1").await?, None);
    h.shutdown.cancel();
    Ok(())
}
