//! Terminal errors found when a device sends (the registry changed without telling the adapter,
//! e.g. a remote registry or an expired cache entry): the delivery is rejected, then the
//! connection is closed.

mod common;

use std::time::Duration;

use common::{Device, TestResult};
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::Outcome;
use ferry_adapter_core::test_util::tenant;
use ferry_registry_client::{DeviceId, TenantId};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

fn rejected_with(outcome: &Outcome) -> Option<ErrorCondition> {
    match outcome {
        Outcome::Rejected(r) => r.error.as_ref().map(|e| e.condition.clone()),
        _ => None,
    }
}

/// Whether the device can no longer send: its link or connection was closed.
async fn is_cut_off(device: &mut Device) -> bool {
    matches!(
        tokio::time::timeout(WAIT, device.send("t", "after")).await,
        Ok(Err(_))
    )
}

#[tokio::test]
async fn a_device_that_disappeared_is_rejected_then_disconnected() -> TestResult {
    let h = common::start(|_| {}).await?;
    let mut device = Device::connect(h.addr, "sensor1@t1", "pw1").await?;
    assert!(matches!(
        device.send("t", "before").await?,
        Outcome::Accepted(_)
    ));
    h.registry
        .remove_device(&TenantId::parse("t1")?, &DeviceId::parse("dev-1")?);
    let outcome = device.send("t", "gone").await?;
    assert_eq!(rejected_with(&outcome), Some(AmqpError::NotFound.into()));
    assert!(is_cut_off(&mut device).await);
    assert_eq!(h.northbound.sent().len(), 1);
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_tenant_that_disabled_the_adapter_rejects_then_disconnects() -> TestResult {
    let h = common::start(|_| {}).await?;
    let mut device = Device::connect(h.addr, "sensor1@t1", "pw1").await?;
    h.registry.add_tenant(tenant(json!({
        "tenant-id": "t1", "adapters": [{"type": "hono-amqp", "enabled": false}]
    }))?);
    let outcome = device.send("t", "refused").await?;
    assert_eq!(
        rejected_with(&outcome),
        Some(AmqpError::UnauthorizedAccess.into())
    );
    assert!(is_cut_off(&mut device).await);
    assert!(h.northbound.sent().is_empty());
    h.shutdown.cancel();
    Ok(())
}
