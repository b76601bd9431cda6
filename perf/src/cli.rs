//! The command line: global options for where Ferry (or a peer) listens and how to load it, one
//! subcommand per scenario.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use ferry_perf::config::{
    Address, AuthKind, FerryTarget, MqttVersion, RunConfig, ScenarioKind, Target, TransportKind,
};
use ferry_perf::issuance::IssuanceConfig;
use ferry_perf::rate::Rate;
use ferry_perf::setup::{Credential, Provisioning};

/// Load generator and benchmark harness for Ferry and its peers (Mosquitto, nginx).
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// Management API of the Ferry under test.
    #[arg(long, global = true, default_value = "http://127.0.0.1:28080")]
    pub management: String,
    /// Management API user (basic auth), if it requires one.
    #[arg(long, global = true, env = "PERF_MANAGEMENT_USER")]
    pub management_user: Option<String>,
    /// Management API password.
    #[arg(
        long,
        global = true,
        env = "PERF_MANAGEMENT_PASSWORD",
        hide_env_values = true
    )]
    pub management_password: Option<String>,
    /// Northbound AMQP 1.0 endpoint of the Ferry under test (`host:port`).
    #[arg(long, global = true, default_value = "127.0.0.1:15672")]
    pub northbound: String,
    /// Northbound application user (SASL PLAIN); ANONYMOUS when absent.
    #[arg(long, global = true, env = "PERF_NORTHBOUND_USER")]
    pub northbound_user: Option<String>,
    /// Northbound application password.
    #[arg(
        long,
        global = true,
        env = "PERF_NORTHBOUND_PASSWORD",
        hide_env_values = true
    )]
    pub northbound_password: Option<String>,
    /// HTTP adapter of the Ferry under test [default: http://127.0.0.1:8080, with `--auth x509`
    /// https://127.0.0.1:8443].
    #[arg(long, global = true)]
    pub http: Option<String>,
    /// MQTT adapter of the Ferry under test (`mqtt://host:port` or `mqtts://host:port`)
    /// [default: mqtt://127.0.0.1:1883, with `--auth x509` mqtts://127.0.0.1:8883].
    #[arg(long, global = true)]
    pub mqtt: Option<String>,
    /// MQTT protocol version of the devices (and of the subscriber against a broker).
    #[arg(long, global = true, value_enum, default_value_t = MqttVersionArg::V311)]
    pub mqtt_version: MqttVersionArg,
    /// How devices authenticate: `password`, or `x509` (client certificates from the harness's
    /// CA, over TLS; the default of `handshakes` and `provision-storm`).
    #[arg(long, global = true, value_enum)]
    pub auth: Option<AuthArg>,
    /// Directory of the harness's CA and device certificates (one subdirectory per tenant; made
    /// on first use, reused afterwards).
    #[arg(long, global = true, default_value = "perf-pki")]
    pub pki_dir: PathBuf,
    /// CoAP adapter of the Ferry under test (`coaps://host:port`, DTLS-PSK).
    #[arg(long, global = true, default_value = "coaps://127.0.0.1:5684")]
    pub coap: String,
    /// AMQP adapter of the Ferry under test (`amqp://host:port` or `amqps://host:port`)
    /// [default: amqp://127.0.0.1:5672, with `--auth x509` amqps://127.0.0.1:5671].
    #[arg(long, global = true)]
    pub amqp: Option<String>,
    /// What to load: `ferry` (the addresses above), or a peer: `mqtt://host:port` (any broker; a
    /// subscriber is the consumer) or `http://host:port` (any HTTP server; no consumer).
    #[arg(long, global = true, default_value = "ferry")]
    pub target: String,
    /// Device protocol.
    #[arg(long, global = true, value_enum, default_value_t = TransportArg::Http)]
    pub transport: TransportArg,
    /// Seconds to send (or to hold connections).
    #[arg(long, global = true, default_value_t = 10.0)]
    pub duration: f64,
    /// Number of simulated devices (one connection each).
    #[arg(long, global = true, default_value_t = 100)]
    pub devices: usize,
    /// Total messages per second over all devices, or `max`.
    #[arg(long, global = true, default_value = "max")]
    pub rate: Rate,
    /// Payload bytes (at least 24: timestamp, sequence number, run id).
    #[arg(long, global = true, default_value_t = 256)]
    pub payload_size: usize,
    /// Telemetry QoS, 0 or 1 (events are always 1).
    #[arg(long, global = true, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Tenant of the simulated devices.
    #[arg(long, global = true, default_value = "perf")]
    pub tenant: String,
    /// The devices' password. Without it a random one is made (and set during setup).
    #[arg(long, global = true, env = "PERF_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Do not provision tenant, devices and passwords (they exist already).
    #[arg(long, global = true)]
    pub no_setup: bool,
    /// PEM CA certificate that signed the server certificate (for `mqtts://`, `amqps://`).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Process id of the gateway: report its CPU and resident memory from /proc.
    #[arg(long, global = true)]
    pub pid: Option<u32>,
    /// Write the result as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Draw throughput and latency over time into this SVG file.
    #[arg(long, global = true)]
    pub plot: Option<PathBuf>,
    /// Runtime threads of the load generator (1: everything on one thread, the cheapest; the
    /// harness is meant to stay well under one core).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// No live progress on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// The scenario.
    #[command(subcommand)]
    pub scenario: ScenarioCommand,
}

/// Device protocols.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TransportArg {
    /// HTTP/1.1 keep-alive with basic auth.
    Http,
    /// MQTT (3.1.1, or 5 with `--mqtt-version 5`) with username and password or a client
    /// certificate.
    Mqtt,
    /// AMQP 1.0 with SASL PLAIN, or EXTERNAL with `--auth x509` (Ferry only).
    Amqp,
    /// CoAP over DTLS with a pre-shared key (CON at `--qos 1`, NON at `--qos 0`).
    Coap,
}

/// MQTT protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MqttVersionArg {
    /// MQTT 3.1.1.
    #[value(name = "3.1.1")]
    V311,
    /// MQTT 5.
    #[value(name = "5")]
    V5,
}

/// Device authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// Username and password.
    Password,
    /// TLS client certificate.
    X509,
}

/// Scenarios.
#[derive(Subcommand, Debug)]
pub enum ScenarioCommand {
    /// Telemetry at `--rate` (or as fast as acknowledgements allow) with `--qos`.
    Telemetry,
    /// Events (at least once, durable).
    Events,
    /// Open N connections, authenticate them, hold them; with `--pid`, the gateway's memory per
    /// connection.
    Connections {
        /// Connections to open (devices are reused round-robin).
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Only provision the tenant, the devices and their password (`--password` required) or
    /// certificates (`--auth x509`), so that later runs can use `--no-setup`.
    Setup,
    /// TLS handshakes per second with client certificates: every message on a new connection
    /// (full handshake, no resumption), at `--rate` or as fast as answers come back.
    Handshakes,
    /// Certificate issuance from CSRs through `/v1/provisioning/{tenant}/cas/…` (one after the
    /// other, each timed) and a bulk job with certificate rows from submit to done. The Ferry
    /// needs `registry.ca_encryption_key`.
    Issuance {
        /// Certificates to issue.
        #[arg(long, default_value_t = 200)]
        certificates: usize,
        /// Rows of the bulk file (0: no bulk job).
        #[arg(long, default_value_t = 10_000)]
        bulk_rows: usize,
    },
    /// `--devices` never-seen certificates connect and send one message each; the gateway
    /// provisions them. Reports time until all arrived, connect-to-answer latency and how many
    /// devices were created.
    ProvisionStorm {
        /// How many connect at the same time (default: all at once; 1: one after the other).
        #[arg(long)]
        concurrency: Option<usize>,
    },
}

impl Cli {
    /// The run this command line asks for.
    pub fn to_run_config(&self) -> anyhow::Result<RunConfig> {
        let (scenario, connections) = match &self.scenario {
            ScenarioCommand::Telemetry => (ScenarioKind::Telemetry, 0),
            ScenarioCommand::Events => (ScenarioKind::Events, 0),
            ScenarioCommand::Connections { count } => (ScenarioKind::Connections, *count),
            ScenarioCommand::Setup | ScenarioCommand::Issuance { .. } => {
                bail!("`setup` and `issuance` are not load scenarios")
            }
            ScenarioCommand::Handshakes => (ScenarioKind::Handshakes, 0),
            ScenarioCommand::ProvisionStorm { concurrency } => {
                if *concurrency == Some(0) {
                    bail!("--concurrency must be at least 1");
                }
                (ScenarioKind::ProvisionStorm, 0)
            }
        };
        let auth = self.auth(scenario)?;
        let transport = match self.transport {
            TransportArg::Http => TransportKind::Http,
            TransportArg::Mqtt => TransportKind::Mqtt,
            TransportArg::Amqp => TransportKind::Amqp,
            TransportArg::Coap => TransportKind::Coap,
        };
        let pair = |u: &Option<String>, p: &Option<String>| {
            u.clone().map(|u| (u, p.clone().unwrap_or_default()))
        };
        let target = if self.target == "ferry" {
            Target::Ferry(FerryTarget {
                management: self.management.clone(),
                management_credentials: pair(&self.management_user, &self.management_password),
                northbound: self.northbound.clone(),
                northbound_credentials: pair(&self.northbound_user, &self.northbound_password),
                http: Address::http(self.http.as_deref().unwrap_or(match auth {
                    AuthKind::Password => "http://127.0.0.1:8080",
                    AuthKind::X509 => "https://127.0.0.1:8443",
                }))
                .map_err(anyhow::Error::msg)
                .context("--http")?,
                mqtt: Address::mqtt(self.mqtt.as_deref().unwrap_or(match auth {
                    AuthKind::Password => "mqtt://127.0.0.1:1883",
                    AuthKind::X509 => "mqtts://127.0.0.1:8883",
                }))
                .map_err(anyhow::Error::msg)
                .context("--mqtt")?,
                coap: Address::coap(&self.coap)
                    .map_err(anyhow::Error::msg)
                    .context("--coap")?,
                amqp: Address::amqp(self.amqp.as_deref().unwrap_or(match auth {
                    AuthKind::Password => "amqp://127.0.0.1:5672",
                    AuthKind::X509 => "amqps://127.0.0.1:5671",
                }))
                .map_err(anyhow::Error::msg)
                .context("--amqp")?,
                setup: !self.no_setup,
            })
        } else if self.target.starts_with("mqtt") {
            Target::MqttBroker(Address::mqtt(&self.target).map_err(anyhow::Error::msg)?)
        } else if self.target.starts_with("http") {
            Target::HttpServer(Address::http(&self.target).map_err(anyhow::Error::msg)?)
        } else {
            bail!("--target: `ferry`, `mqtt://host:port` or `http://host:port`");
        };
        let password = match (&self.password, &target) {
            (Some(p), _) => p.clone(),
            (None, _) if auth == AuthKind::X509 => String::new(),
            (None, Target::Ferry(f)) if f.setup => random_password(),
            (None, Target::HttpServer(_)) => random_password(),
            (None, _) => bail!(
                "give the devices' password with --password or PERF_PASSWORD \
                 (nothing is set up with --no-setup or against a broker)"
            ),
        };
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            bail!("--duration must be between 0 and 3600 seconds");
        }
        let mut config = RunConfig::new(scenario, transport, target);
        config.tenant = self.tenant.clone();
        config.password = password;
        config.auth = auth;
        config.mqtt_version = match self.mqtt_version {
            MqttVersionArg::V311 => MqttVersion::V311,
            MqttVersionArg::V5 => MqttVersion::V5,
        };
        config.pki_dir = self.pki_dir.clone();
        if let ScenarioCommand::ProvisionStorm {
            concurrency: Some(n),
        } = self.scenario
        {
            config.concurrency = n;
        }
        config.devices = self.devices;
        config.connections = connections;
        config.duration = Duration::from_secs_f64(self.duration);
        config.rate = self.rate;
        config.payload_size = self.payload_size;
        config.qos = self.qos;
        config.ca_file = self.ca.clone();
        config.pid = self.pid;
        config.progress = !self.quiet;
        Ok(config)
    }
}

impl Cli {
    /// How devices authenticate in `scenario`: `--auth`, else x509 for the certificate scenarios.
    fn auth(&self, scenario: ScenarioKind) -> anyhow::Result<AuthKind> {
        let certificates = matches!(
            scenario,
            ScenarioKind::Handshakes | ScenarioKind::ProvisionStorm
        );
        match self.auth {
            Some(AuthArg::Password) if certificates => bail!(
                "`{}` measures client-certificate authentication: --auth x509 (the default)",
                scenario.as_str()
            ),
            Some(AuthArg::Password) => Ok(AuthKind::Password),
            Some(AuthArg::X509) => Ok(AuthKind::X509),
            None if certificates => Ok(AuthKind::X509),
            None => Ok(AuthKind::Password),
        }
    }

    /// What `ferry-perf issuance` measures (`None` for other subcommands).
    pub fn to_issuance(&self) -> anyhow::Result<Option<IssuanceConfig>> {
        let ScenarioCommand::Issuance {
            certificates,
            bulk_rows,
        } = self.scenario
        else {
            return Ok(None);
        };
        if self.target != "ferry" {
            bail!("`issuance` measures a Ferry (--target ferry)");
        }
        let pki =
            ferry_perf::pki::Pki::open(&self.pki_dir.join(&self.tenant)).context("--pki-dir")?;
        Ok(Some(IssuanceConfig {
            management: self.management.clone(),
            credentials: self.management_credentials(),
            tenant: self.tenant.clone(),
            certificates,
            bulk_rows,
            pki: std::sync::Arc::new(pki),
        }))
    }

    fn management_credentials(&self) -> Option<(String, String)> {
        self.management_user
            .clone()
            .map(|u| (u, self.management_password.clone().unwrap_or_default()))
    }

    /// What `ferry-perf setup` provisions.
    pub fn to_provisioning(&self) -> anyhow::Result<Provisioning> {
        let credential = if self.auth == Some(AuthArg::X509) {
            let pki = ferry_perf::pki::Pki::open(&self.pki_dir.join(&self.tenant))
                .context("--pki-dir")?;
            Credential::X509(std::sync::Arc::new(pki))
        } else {
            let Some(password) = self.password.clone() else {
                bail!("`setup` needs --password or PERF_PASSWORD (later runs must know it)");
            };
            Credential::Password(password)
        };
        if self.target != "ferry" {
            bail!("`setup` provisions a Ferry (--target ferry)");
        }
        Ok(Provisioning {
            management: self.management.clone(),
            credentials: self.management_credentials(),
            tenant: self.tenant.clone(),
            devices: self.devices,
            credential,
        })
    }
}

fn random_password() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<RunConfig> {
        let cli = Cli::try_parse_from(std::iter::once("ferry-perf").chain(args.iter().copied()))?;
        cli.to_run_config()
    }

    #[test]
    fn certificate_scenarios_default_to_x509_on_the_tls_ports() -> anyhow::Result<()> {
        let c = parse(&["--ca", "ca.pem", "handshakes"])?;
        assert_eq!(
            (c.scenario, c.auth),
            (ScenarioKind::Handshakes, AuthKind::X509)
        );
        let Target::Ferry(f) = &c.target else {
            bail!("not a Ferry target");
        };
        assert_eq!((f.http.port, f.http.tls), (8443, true));
        assert_eq!((f.mqtt.port, f.mqtt.tls), (8883, true));

        let c = parse(&["--devices", "50", "provision-storm", "--concurrency", "1"])?;
        assert_eq!(
            (c.scenario, c.concurrency),
            (ScenarioKind::ProvisionStorm, 1)
        );
        let c = parse(&["provision-storm"])?;
        assert_eq!(c.concurrency, usize::MAX, "all at once by default");

        // Password devices stay on the plain ports; x509 telemetry moves to TLS.
        let c = parse(&["telemetry"])?;
        assert_eq!(c.auth, AuthKind::Password);
        let Target::Ferry(f) = &c.target else {
            bail!("not a Ferry target");
        };
        assert!(!f.http.tls);
        assert_eq!((f.amqp.port, f.amqp.tls), (5672, false));
        let c = parse(&["--auth", "x509", "--pki-dir", "/tmp/p", "telemetry"])?;
        assert_eq!(c.auth, AuthKind::X509);
        let Target::Ferry(f) = &c.target else {
            bail!("not a Ferry target");
        };
        assert_eq!((f.amqp.port, f.amqp.tls), (5671, true));
        assert_eq!(c.pki_dir, PathBuf::from("/tmp/p"));
        Ok(())
    }

    #[test]
    fn contradictory_arguments_are_refused() {
        assert!(parse(&["--auth", "password", "handshakes"]).is_err());
        assert!(parse(&["--auth", "password", "provision-storm"]).is_err());
        assert!(parse(&["provision-storm", "--concurrency", "0"]).is_err());
        assert!(parse(&["--auth", "kerberos", "telemetry"]).is_err());
        assert!(parse(&["issuance"]).is_err(), "not a load scenario");
        assert!(parse(&["--mqtt-version", "4", "telemetry"]).is_err());
    }

    #[test]
    fn mqtt_version_defaults_to_3_1_1_and_takes_5() -> anyhow::Result<()> {
        assert_eq!(parse(&["telemetry"])?.mqtt_version, MqttVersion::V311);
        let c = parse(&["--transport", "mqtt", "--mqtt-version", "5", "telemetry"])?;
        assert_eq!(c.mqtt_version, MqttVersion::V5);
        let c = parse(&["--mqtt-version", "3.1.1", "--ca", "ca.pem", "handshakes"])?;
        assert_eq!(c.mqtt_version, MqttVersion::V311);
        Ok(())
    }

    #[test]
    fn issuance_takes_its_counts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pki = dir.path().to_string_lossy().into_owned();
        let cli = Cli::try_parse_from([
            "ferry-perf",
            "--pki-dir",
            &pki,
            "issuance",
            "--certificates",
            "5",
            "--bulk-rows",
            "0",
        ])?;
        let c = cli
            .to_issuance()?
            .ok_or_else(|| anyhow::anyhow!("no issuance"))?;
        assert_eq!(
            (c.certificates, c.bulk_rows, c.tenant.as_str()),
            (5, 0, "perf")
        );
        assert!(
            Cli::try_parse_from(["ferry-perf", "telemetry"])?
                .to_issuance()?
                .is_none()
        );
        Ok(())
    }
}
