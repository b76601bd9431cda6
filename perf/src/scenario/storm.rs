//! The `provision-storm` scenario: N certificates the registry has never seen (fresh every run,
//! from the harness's CA, which the tenant trusts with auto-provisioning) connect, all at once or
//! `concurrency` at a time, and send one telemetry message each.
//!
//! Each device's latency is connect → acknowledgement of its first message (which includes the
//! gateway creating the device). The result says when the last message was acknowledged and when
//! the last one arrived northbound, and how many devices the tenant gained, counted through the
//! Management API's device search before and after: exactly N if every certificate was
//! provisioned once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Device;
use super::handshakes::OneShot;
use super::sampler::Watch;
use crate::PerfError;
use crate::config::{RunConfig, Target};
use crate::payload::{PayloadBuilder, Stamp, now_us};
use crate::pki::Pki;
use crate::report::StormResult;
use crate::setup::Api;
use crate::stats::{Recorder, histogram};

/// How often the storm looks at the counters.
const TICK: Duration = Duration::from_millis(5);

/// Makes `count` devices with fresh certificates (`storm-RUN-NNNNN`), each with its own TLS
/// configuration. Key generation is CPU work, done off the runtime before the clock starts.
async fn fresh_devices(
    config: &RunConfig,
    pki: Arc<Pki>,
    run: u64,
) -> Result<Vec<Device>, PerfError> {
    let roots = crate::tls::roots(config.ca_file.as_deref())?;
    let count = config.devices;
    let pid = std::process::id();
    tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|index| {
                let cn = format!("storm-{run:x}-{index:05}");
                let cert = pki
                    .fresh(&cn)
                    .map_err(|e| PerfError::Config(e.to_string()))?;
                Ok(Device {
                    index,
                    client_id: format!("ferry-perf-{pid}-{cn}"),
                    username: String::new(),
                    password: String::new(),
                    tls: Some(crate::tls::client_config(&roots, Some(&cert))?),
                })
            })
            .collect()
    })
    .await
    .map_err(|e| PerfError::Config(format!("certificate generation failed: {e}")))?
}

/// Runs the storm and returns its figures (latencies and counts go to `recorder`).
pub(super) async fn storm(
    config: &RunConfig,
    once: OneShot,
    pki: Arc<Pki>,
    recorder: &Arc<Recorder>,
    watch: &mut Watch,
) -> Result<StormResult, PerfError> {
    let Target::Ferry(ferry) = &config.target else {
        return Err(PerfError::Config(
            "provision-storm needs a Ferry (--target ferry)".to_owned(),
        ));
    };
    let api = Api::new(&ferry.management, ferry.management_credentials.clone());
    watch.message(&format!("making {} new certificates", config.devices));
    let devices = fresh_devices(config, pki, recorder.run()).await?;
    let before = api.device_count(&config.tenant).await?;

    let concurrency = config.concurrency.clamp(1, config.devices);
    let permits = Arc::new(Semaphore::new(concurrency));
    let payload = PayloadBuilder::new(config.payload_size);
    let start = Instant::now();
    watch.start(start);
    watch.message(&format!(
        "{} new devices connecting, {concurrency} at a time",
        config.devices
    ));
    // One histogram for all devices (one per device would be 10,000 allocations of ~100 KiB).
    let latencies = Arc::new(Mutex::new(histogram()));
    let mut tasks = JoinSet::new();
    for (seq, device) in devices.into_iter().enumerate() {
        let (permits, once, recorder) = (permits.clone(), once.clone(), recorder.clone());
        let (payload, latencies) = (payload.clone(), latencies.clone());
        let qos = config.qos;
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let body = payload.build(Stamp {
                sent_us: now_us(),
                seq: seq as u64,
                run: recorder.run(),
            });
            recorder.sent();
            let t0 = Instant::now();
            match once.send(&device, qos, body).await {
                Ok(()) => {
                    let us = t0.elapsed().as_micros().max(1) as u64;
                    recorder.acked();
                    if let Ok(mut h) = latencies.lock() {
                        h.saturating_record(us);
                    }
                }
                Err(kind) => recorder.error(kind),
            }
        });
    }

    let mut arrivals = Arrivals::new(recorder.counts().received);
    let mut next_sample = start + Duration::from_secs(1);
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            () = tokio::time::sleep(TICK) => {}
        }
        arrivals.look(recorder.counts().received);
        if Instant::now() >= next_sample {
            watch.sample();
            next_sample += Duration::from_secs(1);
        }
    }
    let all_acked = Instant::now();
    if let Ok(h) = latencies.lock() {
        recorder.merge_ack_latency(&h);
    }
    watch.sent_until(all_acked);
    watch.message("waiting for the messages northbound");
    let deadline = all_acked + config.drain_timeout;
    while recorder.counts().received < recorder.counts().acked && Instant::now() < deadline {
        tokio::time::sleep(TICK).await;
        arrivals.look(recorder.counts().received);
    }
    watch.sample();
    let after = api.device_count(&config.tenant).await?;
    let counts = recorder.counts();
    Ok(StormResult {
        requested: config.devices,
        concurrency,
        acknowledged: counts.acked,
        provisioned: after.saturating_sub(before),
        seconds_to_all_acknowledged: all_acked.duration_since(start).as_secs_f64(),
        seconds_to_all_arrived: (counts.received >= counts.acked && counts.acked > 0)
            .then(|| arrivals.last.duration_since(start).as_secs_f64()),
    })
}

/// When the consumer's count last grew.
struct Arrivals {
    count: u64,
    last: Instant,
}

impl Arrivals {
    fn new(count: u64) -> Self {
        Self {
            count,
            last: Instant::now(),
        }
    }

    fn look(&mut self, count: u64) {
        if count != self.count {
            self.count = count;
            self.last = Instant::now();
        }
    }
}
