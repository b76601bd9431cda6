//! The scenario runner: setup, consumer, devices, sampling, stop, drain, result.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::amqp::AmqpTransport;
use super::coap::CoapTransport;
use super::handshakes::{Handshakes, OneShot};
use super::http::HttpTransport;
use super::mqtt::MqttTransport;
use super::sampler::{Finished, Watch};
use super::storm::storm;
use super::{Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::config::{AuthKind, RunConfig, ScenarioKind, Target, TransportKind};
use crate::consumer;
use crate::payload::PayloadBuilder;
use crate::pki::Pki;
use crate::procfs;
use crate::report::{ConnectionsResult, CpuUse, GatewayUse, RunResult, StormResult};
use crate::setup::{self, Credential, Provisioning};
use crate::stats::Recorder;

/// How many connections are being opened at once in the `connections` scenario.
const CONNECT_WINDOW: usize = 100;

/// Runs one scenario and returns its result.
pub async fn run(config: &RunConfig) -> Result<RunResult, PerfError> {
    if config.devices == 0 {
        return Err(PerfError::Config("--devices must be at least 1".to_owned()));
    }
    if config.qos > 1 {
        return Err(PerfError::Config("--qos must be 0 or 1".to_owned()));
    }
    let one_shot = matches!(
        config.scenario,
        ScenarioKind::Handshakes | ScenarioKind::ProvisionStorm
    );
    if one_shot && config.auth != AuthKind::X509 {
        return Err(PerfError::Config(format!(
            "{} is about client certificates: use --auth x509",
            config.scenario.as_str()
        )));
    }
    let recorder = Arc::new(Recorder::new(rand::random::<u64>() >> 1));
    let (pki, identities) = prepare(config).await?;
    let endpoint = match config.scenario {
        ScenarioKind::Events => Endpoint::Event,
        _ => Endpoint::Telemetry,
    };
    let consumer_stop = CancellationToken::new();
    let consumer =
        consumer::start(config, endpoint, recorder.clone(), consumer_stop.clone()).await?;
    let (once, transport) = transports(config, endpoint)?;
    let mut watch = Watch::new(config, recorder.clone());
    let devices = Devices {
        config,
        identities: &identities,
    };
    // `pki` is there for every certificate scenario (checked above).
    let outcome = match (config.scenario, pki, once) {
        (ScenarioKind::ProvisionStorm, Some(pki), Some(once)) => {
            storm(config, once, pki, &recorder, &mut watch)
                .await
                .map(|s| (None, Some(s)))
        }
        (ScenarioKind::Connections, ..) => {
            connections(config, &devices, transport, &recorder, &mut watch)
                .await
                .map(|c| (Some(c), None))
        }
        _ => load(config, &devices, endpoint, transport, &recorder, &mut watch)
            .await
            .map(|()| (None, None)),
    };
    let (connections, storm) = match outcome {
        Ok(c) => c,
        Err(e) => {
            consumer_stop.cancel();
            return Err(e);
        }
    };
    let has_consumer = consumer.is_some();
    if let Some(task) = consumer {
        drain_consumer(config, &recorder).await;
        consumer_stop.cancel();
        let _ = task.await;
    }
    watch.finish();
    Ok(result(
        config,
        &recorder,
        watch,
        has_consumer,
        connections,
        storm,
    ))
}

/// Opens the PKI (certificate devices), provisions (unless `--no-setup`) and makes the devices'
/// TLS identities.
async fn prepare(
    config: &RunConfig,
) -> Result<(Option<Arc<Pki>>, Vec<Arc<rustls::ClientConfig>>), PerfError> {
    let pki = match config.auth {
        AuthKind::X509 => Some(Arc::new(
            Pki::open(&config.pki_dir.join(&config.tenant))
                .map_err(|e| PerfError::Config(format!("--pki-dir: {e}")))?,
        )),
        AuthKind::Password => None,
    };
    if let Target::Ferry(ferry) = &config.target
        && ferry.setup
    {
        setup::provision(&Provisioning {
            management: ferry.management.clone(),
            credentials: ferry.management_credentials.clone(),
            tenant: config.tenant.clone(),
            // The storm's devices must be unknown: they are provisioned by connecting.
            devices: match config.scenario {
                ScenarioKind::ProvisionStorm => 0,
                _ => config.devices,
            },
            credential: match &pki {
                Some(pki) => Credential::X509(pki.clone()),
                None => Credential::Password(config.password.clone()),
            },
        })
        .await?;
    }
    let identities = match &pki {
        Some(pki) if config.scenario != ScenarioKind::ProvisionStorm => {
            identities(config, pki.clone()).await?
        }
        _ => Vec::new(),
    };
    Ok((pki, identities))
}

/// The protocol as a one-message-per-connection sender, and the transport the scenario drives.
fn transports(
    config: &RunConfig,
    endpoint: Endpoint,
) -> Result<(Option<OneShot>, Arc<dyn Transport>), PerfError> {
    let once = match config.transport {
        TransportKind::Http => OneShot::Http(Arc::new(HttpTransport::new(config, endpoint)?)),
        TransportKind::Mqtt => OneShot::Mqtt(Arc::new(MqttTransport::new(config, endpoint)?)),
        TransportKind::Coap | TransportKind::Amqp => {
            if matches!(
                config.scenario,
                ScenarioKind::Handshakes | ScenarioKind::ProvisionStorm
            ) {
                return Err(PerfError::Config(
                    "handshakes and provision-storm need --transport http or mqtt".to_owned(),
                ));
            }
            let transport: Arc<dyn Transport> = match config.transport {
                TransportKind::Amqp => Arc::new(AmqpTransport::new(config, endpoint)?),
                _ => Arc::new(CoapTransport::new(config, endpoint)?),
            };
            return Ok((None, transport));
        }
    };
    let transport: Arc<dyn Transport> = match (&once, config.scenario) {
        (once, ScenarioKind::Handshakes) => Arc::new(Handshakes::new(once.clone())),
        (OneShot::Http(t), _) => t.clone(),
        (OneShot::Mqtt(t), _) => t.clone(),
    };
    Ok((Some(once), transport))
}

/// The TLS configurations of devices `perf-00000 …` with their certificates (made or read off
/// the runtime: key generation is CPU work).
async fn identities(
    config: &RunConfig,
    pki: Arc<Pki>,
) -> Result<Vec<Arc<rustls::ClientConfig>>, PerfError> {
    let roots = crate::tls::roots(config.ca_file.as_deref())?;
    let count = config.devices;
    tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|index| {
                let cert = pki
                    .device(&setup::device_id(index))
                    .map_err(|e| PerfError::Config(format!("--pki-dir: {e}")))?;
                crate::tls::client_config(&roots, Some(&cert))
            })
            .collect()
    })
    .await
    .map_err(|e| PerfError::Config(format!("device certificates: {e}")))?
}

/// The simulated devices of a run.
struct Devices<'a> {
    config: &'a RunConfig,
    /// With `--auth x509`: each device's TLS configuration with its certificate.
    identities: &'a [Arc<rustls::ClientConfig>],
}

impl Devices<'_> {
    /// Device `index` (modulo the number of devices) for connection number `connection`.
    fn device(&self, index: usize, connection: usize) -> Device {
        let number = index % self.config.devices;
        Device {
            index: number,
            client_id: format!("ferry-perf-{}-{connection}", std::process::id()),
            username: setup::username(number, &self.config.tenant),
            password: self.config.password.clone(),
            tls: self.identities.get(number).cloned(),
        }
    }
}

/// Telemetry and events: every device sends from the same start instant until the duration is over.
async fn load(
    config: &RunConfig,
    devices_of_run: &Devices<'_>,
    endpoint: Endpoint,
    transport: Arc<dyn Transport>,
    recorder: &Arc<Recorder>,
    watch: &mut Watch,
) -> Result<(), PerfError> {
    let (ready_tx, mut ready_rx) = mpsc::channel(config.devices);
    let (start_tx, start_rx) = watch::channel(None);
    let stop = CancellationToken::new();
    let seq = Arc::new(AtomicU64::new(0));
    let rate = config.rate.per_device(config.devices);
    let mut devices = JoinSet::new();
    for index in 0..config.devices {
        let load = Load {
            recorder: recorder.clone(),
            endpoint,
            qos: config.qos,
            payload: PayloadBuilder::new(config.payload_size),
            seq: seq.clone(),
            rate,
            phase: index as f64 / config.devices as f64,
            ready: ready_tx.clone(),
            start: start_rx.clone(),
            stop: stop.clone(),
        };
        devices.spawn(
            transport
                .clone()
                .drive(devices_of_run.device(index, index), load),
        );
    }
    drop(ready_tx);
    watch.message("connecting");
    let mut ready = 0;
    let deadline = tokio::time::Instant::now() + config.warmup_timeout;
    for _ in 0..config.devices {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(true)) => ready += 1,
            Ok(Some(false)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if ready == 0 {
        stop.cancel();
        devices.abort_all();
        return Err(PerfError::NoDevice(format!("{:?}", recorder.errors())));
    }
    let start = Instant::now() + Duration::from_millis(20);
    let _ = start_tx.send(Some(start));
    watch.start(start);
    watch.run_for(config.duration).await;
    stop.cancel();
    watch.sent_until(Instant::now());
    watch.message("draining");
    let join = async { while devices.join_next().await.is_some() {} };
    if tokio::time::timeout(super::DRAIN + Duration::from_secs(2), join)
        .await
        .is_err()
    {
        devices.abort_all();
    }
    Ok(())
}

/// Opens `config.connections` connections (a window at a time), measures the gateway's memory,
/// holds them for the duration and closes them.
async fn connections(
    config: &RunConfig,
    devices: &Devices<'_>,
    transport: Arc<dyn Transport>,
    recorder: &Arc<Recorder>,
    watch: &mut Watch,
) -> Result<ConnectionsResult, PerfError> {
    let rss_before = config.pid.and_then(procfs::rss_kib);
    let (opened_tx, mut opened_rx) = mpsc::channel(config.connections.max(1));
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let (mut opened, mut failed, mut pending) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    watch.start(started);
    watch.message("opening connections");
    for i in 0..config.connections {
        while pending >= CONNECT_WINDOW {
            let ok = tokio::time::timeout(config.warmup_timeout, opened_rx.recv())
                .await
                .ok()
                .flatten();
            note(ok, &mut opened, &mut failed);
            pending -= 1;
        }
        let hold = Hold {
            recorder: recorder.clone(),
            payload: PayloadBuilder::new(config.payload_size),
            opened: opened_tx.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(transport.clone().hold(devices.device(i, i), hold));
        pending += 1;
    }
    while pending > 0 {
        let ok = tokio::time::timeout(config.warmup_timeout, opened_rx.recv())
            .await
            .ok()
            .flatten();
        note(ok, &mut opened, &mut failed);
        pending -= 1;
    }
    let open_s = started.elapsed().as_secs_f64();
    // Let the gateway settle (buffers shrink after the handshakes) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = config.pid.and_then(procfs::rss_kib);
    watch.message(&format!("holding {opened} connections"));
    let held_for = config.duration.saturating_sub(started.elapsed());
    watch.run_for(held_for).await;
    stop.cancel();
    watch.sent_until(Instant::now());
    let join = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => {
            Some(a.saturating_sub(b) as f64 * 1024.0 / opened as f64)
        }
        _ => None,
    };
    Ok(ConnectionsResult {
        requested: config.connections,
        opened,
        failed,
        open_seconds: open_s,
        rss_kib_before: rss_before,
        rss_kib_after: rss_after,
        rss_bytes_per_connection: per_connection,
    })
}

fn note(ok: Option<bool>, opened: &mut usize, failed: &mut usize) {
    match ok {
        Some(true) => *opened += 1,
        Some(false) | None => *failed += 1,
    }
}

/// Waits until every acknowledged message arrived, progress stalls, or the drain timeout passes.
async fn drain_consumer(config: &RunConfig, recorder: &Recorder) {
    let deadline = Instant::now() + config.drain_timeout;
    let mut last = recorder.counts().received;
    let mut last_change = Instant::now();
    while Instant::now() < deadline {
        let c = recorder.counts();
        if c.received >= c.acked {
            return;
        }
        if c.received != last {
            last = c.received;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn result(
    config: &RunConfig,
    recorder: &Recorder,
    watch: Watch,
    has_consumer: bool,
    connections: Option<ConnectionsResult>,
    storm: Option<StormResult>,
) -> RunResult {
    let c = recorder.counts();
    let start = watch.start.unwrap_or_else(Instant::now);
    let Finished {
        at: end,
        cpu: cpu_end,
        gateway_cpu: gateway_cpu_end,
        gateway_rss: gateway_rss_end,
    } = watch.finished.unwrap_or(Finished {
        at: Instant::now(),
        cpu: None,
        gateway_cpu: None,
        gateway_rss: None,
    });
    let sending = watch
        .sent_until
        .unwrap_or(end)
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-6);
    let wall = end.saturating_duration_since(start).as_secs_f64();
    let per_s = |n: u64| n as f64 / sending;
    let cpu = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(CpuUse::new(b - a, wall, c.sent)),
        _ => None,
    };
    let gateway = config.pid.map(|pid| GatewayUse {
        pid,
        cpu: cpu(watch.gateway_cpu_start, gateway_cpu_end),
        rss_kib_start: watch.gateway_rss_start,
        rss_kib_end: gateway_rss_end,
        rss_kib_peak: match (watch.gateway_rss_peak, gateway_rss_end) {
            (Some(p), Some(e)) => Some(p.max(e)),
            (p, e) => p.or(e),
        },
    });
    RunResult {
        scenario: config.scenario.as_str().to_owned(),
        transport: config.transport.as_str().to_owned(),
        mqtt_version: (config.transport == TransportKind::Mqtt)
            .then(|| config.mqtt_version.as_str().to_owned()),
        target: config.target.describe(),
        devices: config.devices,
        rate: config.rate.to_string(),
        payload_size: PayloadBuilder::new(config.payload_size).size(),
        qos: match config.scenario {
            ScenarioKind::Events => 1,
            _ => config.qos,
        },
        duration_s: sending,
        sent: c.sent,
        acked: c.acked,
        received: has_consumer.then_some(c.received),
        duplicates: c.duplicates,
        foreign: c.foreign,
        skipped: c.skipped,
        errors: recorder.errors(),
        sent_per_s: per_s(c.sent),
        acked_per_s: per_s(c.acked),
        received_per_s: has_consumer.then(|| per_s(c.received)),
        end_to_end: has_consumer.then(|| recorder.end_to_end()),
        ack: recorder.ack(),
        loadgen: cpu(watch.cpu_start, cpu_end),
        gateway,
        connections,
        storm,
        timeline: watch.timeline,
        machine: procfs::Machine::current(),
    }
}
