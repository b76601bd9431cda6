//! Shutdown with the registry and northbound doubles: deliveries in flight are still settled with
//! their real outcome, then the connection closes and the port stops accepting.

mod common;

use std::time::Duration;

use common::{Device, TestResult, message};
use fe2o3_amqp::types::messaging::Outcome;

#[tokio::test]
async fn shutdown_settles_the_deliveries_in_flight() -> TestResult {
    let h = common::start(|_| {}).await?;
    h.northbound.set_delay(Some(Duration::from_millis(500)));
    let mut device = Device::connect(h.addr, "sensor1@t1", "pw1").await?;
    let mut pending = Vec::new();
    for payload in ["one", "two"] {
        pending.push(device.sender.send_batchable(message("t", payload)).await?);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.shutdown.cancel();
    for settlement in pending {
        let outcome = tokio::time::timeout(Duration::from_secs(5), settlement).await??;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }
    let mut payloads: Vec<_> = h.northbound.sent().into_iter().map(|m| m.payload).collect();
    payloads.sort();
    assert_eq!(payloads, ["one", "two"]);
    tokio::time::timeout(Duration::from_secs(10), h.task).await??;
    assert!(
        tokio::net::TcpStream::connect(h.addr).await.is_err(),
        "still accepting after shutdown"
    );
    Ok(())
}
