//! The result of a run: a serde tree written as JSON (`--json`), and the summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::procfs::Machine;
use crate::stats::Percentiles;

/// Writing or reading a result file failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a result.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// What went wrong.
        source: serde_json::Error,
    },
}

/// CPU used during the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// CPU seconds per wall-clock second (1.0 = one core busy).
    pub cores: f64,
    /// CPU microseconds per message sent (`None` when nothing was sent): comparable between
    /// runs at different rates and on a busy machine, where cores are not.
    #[serde(default)]
    pub us_per_message: Option<f64>,
}

impl CpuUse {
    /// `cpu_seconds` used over `wall_seconds` for `messages` messages.
    pub fn new(cpu_seconds: f64, wall_seconds: f64, messages: u64) -> Self {
        Self {
            cpu_seconds,
            cores: cpu_seconds / wall_seconds.max(1e-6),
            us_per_message: (messages > 0).then(|| cpu_seconds * 1e6 / messages as f64),
        }
    }

    /// `1.23 s = 0.61 cores, 12.3 µs per message`.
    fn describe(&self) -> String {
        let per_message = self
            .us_per_message
            .map_or_else(String::new, |us| format!(", {us:.1} µs per message"));
        format!(
            "{:.2} s = {:.2} cores{per_message}",
            self.cpu_seconds, self.cores
        )
    }
}

/// What the gateway process (given by `--pid`) used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayUse {
    /// Its process id.
    pub pid: u32,
    /// CPU during the run.
    pub cpu: Option<CpuUse>,
    /// Resident memory when sending started, KiB.
    pub rss_kib_start: Option<u64>,
    /// Resident memory at the end, KiB.
    pub rss_kib_end: Option<u64>,
    /// Largest resident memory seen (sampled once a second), KiB.
    pub rss_kib_peak: Option<u64>,
}

/// The `connections` scenario's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsResult {
    /// Connections asked for.
    pub requested: usize,
    /// Connections opened and authenticated.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// Seconds it took to open them all.
    pub open_seconds: f64,
    /// Gateway resident memory before opening, KiB.
    pub rss_kib_before: Option<u64>,
    /// Gateway resident memory with all connections open, KiB.
    pub rss_kib_after: Option<u64>,
    /// (after - before) / opened, bytes.
    pub rss_bytes_per_connection: Option<f64>,
}

/// The `provision-storm` scenario's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StormResult {
    /// New certificates that connected.
    pub requested: usize,
    /// How many connected at the same time.
    pub concurrency: usize,
    /// First messages acknowledged (HTTP 2xx, MQTT PUBACK).
    pub acknowledged: u64,
    /// Devices the tenant gained during the run (Management API search): `requested` when each
    /// certificate was provisioned exactly once.
    pub provisioned: u64,
    /// Seconds from the first connect until every device had its answer.
    pub seconds_to_all_acknowledged: f64,
    /// Seconds from the first connect until the last acknowledged message arrived northbound
    /// (`None` if some never arrived, or there was no consumer).
    pub seconds_to_all_arrived: Option<f64>,
}

/// One second of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Messages sent per second in this interval.
    pub sent_per_s: f64,
    /// Messages acknowledged per second.
    pub acked_per_s: f64,
    /// Messages received by the consumer per second.
    pub received_per_s: f64,
    /// Errors per second.
    pub errors_per_s: f64,
    /// Median end-to-end latency of the messages received in this interval.
    pub p50_ms: Option<f64>,
    /// 99th percentile end-to-end latency of the messages received in this interval.
    pub p99_ms: Option<f64>,
}

/// Everything a run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// `telemetry`, `events` or `connections`.
    pub scenario: String,
    /// `http`, `mqtt`, `amqp` or `coap`.
    pub transport: String,
    /// With MQTT: the protocol version (`3.1.1`, `5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_version: Option<String>,
    /// What was loaded.
    pub target: String,
    /// Simulated devices.
    pub devices: usize,
    /// Requested total rate (`max` or `N/s`).
    pub rate: String,
    /// Payload bytes per message.
    pub payload_size: usize,
    /// QoS the messages were sent with.
    pub qos: u8,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages acknowledged (HTTP 2xx, MQTT PUBACK; at MQTT QoS 0, written to the socket).
    pub acked: u64,
    /// Messages of this run received by the consumer (`None` without a consumer).
    pub received: Option<u64>,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages of other runs the consumer ignored.
    pub foreign: u64,
    /// Schedule slots skipped because the target could not keep up.
    pub skipped: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Sent per second of sending.
    pub sent_per_s: f64,
    /// Acknowledged per second of sending.
    pub acked_per_s: f64,
    /// Received per second of sending.
    pub received_per_s: Option<f64>,
    /// End-to-end latency (payload timestamp to consumer), if there is a consumer.
    pub end_to_end: Option<Percentiles>,
    /// Acknowledgement latency (send to 2xx or PUBACK).
    pub ack: Percentiles,
    /// CPU the load generator itself used.
    pub loadgen: Option<CpuUse>,
    /// What the gateway used, with `--pid`.
    pub gateway: Option<GatewayUse>,
    /// Figures of the `connections` scenario.
    pub connections: Option<ConnectionsResult>,
    /// Figures of the `provision-storm` scenario.
    #[serde(default)]
    pub storm: Option<StormResult>,
    /// Once-a-second samples.
    pub timeline: Vec<Sample>,
    /// Where it ran.
    pub machine: Machine,
}

/// Writes `result` (a [`RunResult`], or another scenario's result) as pretty JSON.
pub fn write_json(result: &impl Serialize, path: &Path) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(result).map_err(|source| ReportError::Json {
        path: path.display().to_string(),
        source,
    })?;
    std::fs::write(path, text + "\n").map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a result written by [`write_json`].
pub fn read_json(path: &Path) -> Result<RunResult, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.display().to_string(),
        source,
    })
}

fn latency_row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {name:<13} p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  max {:>8.2} ms  (n={})",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
    );
}

/// The summary table printed at the end of a run.
pub fn table(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} over {}{} against {}: {} devices, rate {}, {} B payload, QoS {}, {:.1} s",
        r.scenario,
        r.transport,
        r.mqtt_version
            .as_ref()
            .map_or_else(String::new, |v| format!(" {v}")),
        r.target,
        r.devices,
        r.rate,
        r.payload_size,
        r.qos,
        r.duration_s
    );
    let _ = writeln!(out, "  {:<13} {:>12} {:>14}", "", "messages", "per second");
    let _ = writeln!(
        out,
        "  {:<13} {:>12} {:>14.0}",
        "sent", r.sent, r.sent_per_s
    );
    let _ = writeln!(
        out,
        "  {:<13} {:>12} {:>14.0}",
        "acknowledged", r.acked, r.acked_per_s
    );
    match (r.received, r.received_per_s) {
        (Some(n), Some(rate)) => {
            let _ = writeln!(out, "  {:<13} {:>12} {:>14.0}", "received", n, rate);
            let lost = r.acked.saturating_sub(n);
            let _ = writeln!(
                out,
                "  {:<13} {:>12}   (acknowledged but not received; duplicates {}, other runs {})",
                "missing", lost, r.duplicates, r.foreign
            );
        }
        _ => {
            let _ = writeln!(out, "  {:<13} {:>12}", "received", "(no consumer)");
        }
    }
    if r.skipped > 0 {
        let _ = writeln!(
            out,
            "  {:<13} {:>12}   (target fell behind the rate)",
            "skipped", r.skipped
        );
    }
    if let Some(e2e) = &r.end_to_end {
        latency_row(&mut out, "end-to-end", e2e);
    }
    latency_row(&mut out, "acknowledge", &r.ack);
    if r.errors.is_empty() {
        let _ = writeln!(out, "  errors        none");
    } else {
        for (kind, n) in &r.errors {
            let _ = writeln!(out, "  error         {n:>12}  {kind}");
        }
    }
    if let Some(c) = &r.connections {
        let _ = writeln!(
            out,
            "  connections   {} of {} open ({} failed) in {:.1} s",
            c.opened, c.requested, c.failed, c.open_seconds
        );
        if let Some(b) = c.rss_bytes_per_connection {
            let _ = writeln!(
                out,
                "  gateway RSS   {} KiB -> {} KiB: {:.0} bytes per connection",
                c.rss_kib_before.unwrap_or(0),
                c.rss_kib_after.unwrap_or(0),
                b
            );
        }
    }
    if let Some(s) = &r.storm {
        storm_rows(&mut out, s);
    }
    if let Some(cpu) = &r.loadgen {
        let _ = writeln!(out, "  load generator CPU {}", cpu.describe());
    }
    if let Some(g) = &r.gateway {
        if let Some(cpu) = &g.cpu {
            let _ = writeln!(out, "  gateway CPU        {}", cpu.describe());
        }
        if let Some(peak) = g.rss_kib_peak {
            let _ = writeln!(
                out,
                "  gateway RSS        start {} KiB, peak {peak} KiB",
                g.rss_kib_start.unwrap_or(0)
            );
        }
    }
    let _ = writeln!(
        out,
        "  machine            {} CPUs, {}, load average {:.2}",
        r.machine.nproc, r.machine.cpu_model, r.machine.load_average
    );
    out
}

fn storm_rows(out: &mut String, s: &StormResult) {
    let requested = s.requested as u64;
    let verdict = match s.provisioned.cmp(&requested) {
        std::cmp::Ordering::Equal => "each exactly once".to_owned(),
        std::cmp::Ordering::Less => format!("{} never provisioned", requested - s.provisioned),
        std::cmp::Ordering::Greater => "more devices than certificates!".to_owned(),
    };
    let _ = writeln!(
        out,
        "  new devices   {} connected ({} at a time), {} acknowledged, {} provisioned ({verdict})",
        s.requested, s.concurrency, s.acknowledged, s.provisioned,
    );
    let arrived = s
        .seconds_to_all_arrived
        .map_or("not all arrived".to_owned(), |t| format!("{t:.2} s"));
    let _ = writeln!(
        out,
        "  all answered  {:.2} s; all first messages northbound {arrived}",
        s.seconds_to_all_acknowledged
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_result() -> RunResult {
        RunResult {
            scenario: "telemetry".to_owned(),
            transport: "http".to_owned(),
            mqtt_version: None,
            target: "ferry".to_owned(),
            devices: 2,
            rate: "max".to_owned(),
            payload_size: 256,
            qos: 0,
            duration_s: 2.0,
            sent: 100,
            acked: 98,
            received: Some(97),
            duplicates: 0,
            foreign: 0,
            skipped: 0,
            errors: BTreeMap::from([("http 503".to_owned(), 2)]),
            sent_per_s: 50.0,
            acked_per_s: 49.0,
            received_per_s: Some(48.5),
            end_to_end: Some(Percentiles {
                count: 97,
                mean_ms: 1.0,
                p50_ms: 1.0,
                p90_ms: 2.0,
                p99_ms: 3.0,
                p999_ms: 4.0,
                max_ms: 5.0,
            }),
            ack: Percentiles::default(),
            loadgen: Some(CpuUse::new(0.1, 2.0, 100)),
            gateway: None,
            connections: None,
            storm: None,
            timeline: vec![
                Sample {
                    t_s: 1.0,
                    sent_per_s: 50.0,
                    acked_per_s: 49.0,
                    received_per_s: 48.0,
                    errors_per_s: 1.0,
                    p50_ms: Some(1.0),
                    p99_ms: Some(3.0),
                },
                Sample {
                    t_s: 2.0,
                    sent_per_s: 50.0,
                    acked_per_s: 49.0,
                    received_per_s: 49.0,
                    errors_per_s: 1.0,
                    p50_ms: None,
                    p99_ms: None,
                },
            ],
            machine: Machine {
                nproc: 2,
                cpu_model: "test".to_owned(),
                load_average: 0.5,
            },
        }
    }

    #[test]
    fn json_round_trips_and_names_fields_plainly() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.json");
        let r = sample_result();
        write_json(&r, &path)?;
        assert_eq!(read_json(&path)?, r);
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        assert_eq!(json["received"], 97);
        assert_eq!(json["end_to_end"]["p99_ms"], 3.0);
        assert_eq!(json["errors"]["http 503"], 2);
        assert_eq!(json["timeline"][1]["p99_ms"], serde_json::Value::Null);
        Ok(())
    }

    #[test]
    fn table_shows_loss_and_errors() {
        let t = table(&sample_result());
        assert!(t.contains("received"), "{t}");
        assert!(t.contains("missing"), "{t}");
        assert!(t.contains("http 503"), "{t}");
        assert!(t.contains("p99.9"), "{t}");
        assert!(!t.contains("new devices"), "{t}");
        assert!(
            t.contains("load generator CPU 0.10 s = 0.05 cores, 1000.0 µs per message"),
            "{t}"
        );
    }

    #[test]
    fn cpu_per_message_is_cpu_time_over_messages() {
        let c = CpuUse::new(1.5, 10.0, 100_000);
        assert!((c.cores - 0.15).abs() < 1e-9);
        assert_eq!(c.us_per_message, Some(15.0));
        assert_eq!(CpuUse::new(1.0, 1.0, 0).us_per_message, None);
    }

    #[test]
    fn table_says_whether_each_certificate_was_provisioned_once() {
        let mut r = sample_result();
        let mut storm = StormResult {
            requested: 10,
            concurrency: 10,
            acknowledged: 10,
            provisioned: 10,
            seconds_to_all_acknowledged: 0.5,
            seconds_to_all_arrived: Some(0.6),
        };
        r.storm = Some(storm.clone());
        let t = table(&r);
        assert!(t.contains("10 provisioned (each exactly once)"), "{t}");
        assert!(t.contains("northbound 0.60 s"), "{t}");
        storm.provisioned = 11;
        storm.seconds_to_all_arrived = None;
        r.storm = Some(storm.clone());
        let t = table(&r);
        assert!(t.contains("more devices than certificates"), "{t}");
        assert!(t.contains("not all arrived"), "{t}");
        storm.provisioned = 7;
        r.storm = Some(storm);
        assert!(table(&r).contains("3 never provisioned"));
    }

    #[test]
    fn a_bad_file_is_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{")?;
        assert!(matches!(read_json(&path), Err(ReportError::Json { .. })));
        assert!(matches!(
            read_json(&dir.path().join("none.json")),
            Err(ReportError::Io { .. })
        ));
        Ok(())
    }
}
