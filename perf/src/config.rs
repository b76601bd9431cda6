//! What one run does, independent of the command line (the smoke test builds it directly).

use std::path::PathBuf;
use std::time::Duration;

use crate::rate::Rate;

/// The kind of load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioKind {
    /// Telemetry at a rate (or as fast as possible), QoS 0 or 1.
    Telemetry,
    /// Events (always at least once).
    Events,
    /// Open N connections, authenticate them, hold them idle; report memory per connection.
    Connections,
    /// A new TLS connection with a full handshake and the device's client certificate for every
    /// message (telemetry), so the gateway's X.509 path runs each time.
    Handshakes,
    /// Never-seen certificates connect (all at once, or a window at a time) and send one
    /// telemetry message each; the gateway auto-provisions them.
    ProvisionStorm,
}

impl ScenarioKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioKind::Telemetry => "telemetry",
            ScenarioKind::Events => "events",
            ScenarioKind::Connections => "connections",
            ScenarioKind::Handshakes => "handshakes",
            ScenarioKind::ProvisionStorm => "provision-storm",
        }
    }
}

/// The device protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP/1.1 with keep-alive and basic auth, one connection per device.
    Http,
    /// MQTT 3.1.1 or 5 with username and password (or a client certificate), one connection per
    /// device.
    Mqtt,
    /// AMQP 1.0 with SASL PLAIN (or EXTERNAL with a client certificate), one connection and
    /// sender link per device.
    Amqp,
    /// CoAP over DTLS-PSK, one session per device.
    Coap,
}

impl TransportKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Http => "http",
            TransportKind::Mqtt => "mqtt",
            TransportKind::Amqp => "amqp",
            TransportKind::Coap => "coap",
        }
    }
}

/// The MQTT protocol version of devices and of the subscriber.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

impl MqttVersion {
    /// The name used in reports (`3.1.1`, `5`).
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

/// How devices authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// Username `auth-id@tenant` and password (HTTP basic auth, MQTT CONNECT, AMQP SASL PLAIN).
    Password,
    /// A TLS client certificate from the harness's CA (`pki`); needs a TLS address (AMQP: SASL
    /// EXTERNAL).
    X509,
}

impl AuthKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Password => "password",
            AuthKind::X509 => "x509",
        }
    }
}

/// A host and port with the protocol's scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether the scheme asks for TLS (`https`, `mqtts`).
    pub tls: bool,
}

impl Address {
    /// Parses `scheme://host[:port][/]`; `plain` and `secure` are the accepted schemes.
    pub fn parse(url: &str, plain: (&str, u16), secure: (&str, u16)) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some(s) if s == plain.0 => (false, plain.1),
            Some(s) if s == secure.0 => (true, secure.1),
            _ => {
                return Err(format!(
                    "{url:?}: expected {}://host:port or {}://host:port",
                    plain.0, secure.0
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(default_port),
            tls,
        })
    }

    /// `host:port` (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// An HTTP address (`http://`, default port 80; `https://` 443).
    pub fn http(url: &str) -> Result<Self, String> {
        Self::parse(url, ("http", 80), ("https", 443))
    }

    /// An MQTT address (`mqtt://`, default port 1883; `mqtts://` 8883).
    pub fn mqtt(url: &str) -> Result<Self, String> {
        Self::parse(url, ("mqtt", 1883), ("mqtts", 8883))
    }

    /// An AMQP address (`amqp://`, default port 5672; `amqps://` 5671).
    pub fn amqp(url: &str) -> Result<Self, String> {
        Self::parse(url, ("amqp", 5672), ("amqps", 5671))
    }

    /// A CoAP address (`coap://`, default port 5683; `coaps://`, DTLS, 5684).
    pub fn coap(url: &str) -> Result<Self, String> {
        Self::parse(url, ("coap", 5683), ("coaps", 5684))
    }
}

/// A Ferry: provisioned through its Management API and consumed on its northbound.
#[derive(Clone, Debug)]
pub struct FerryTarget {
    /// Management API base URL.
    pub management: String,
    /// Basic-auth user of the Management API, if it needs one.
    pub management_credentials: Option<(String, String)>,
    /// Northbound AMQP 1.0 address (`host:port`).
    pub northbound: String,
    /// SASL PLAIN user of the northbound, if it needs one (else ANONYMOUS).
    pub northbound_credentials: Option<(String, String)>,
    /// The HTTP adapter.
    pub http: Address,
    /// The MQTT adapter.
    pub mqtt: Address,
    /// The AMQP adapter.
    pub amqp: Address,
    /// The CoAP adapter's DTLS port.
    pub coap: Address,
    /// Whether to create the tenant, devices and passwords first.
    pub setup: bool,
}

/// What the run loads.
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per run; boxing the Ferry target would buy nothing"
)]
pub enum Target {
    /// A Ferry with its northbound consumer.
    Ferry(FerryTarget),
    /// Any MQTT broker (e.g. Mosquitto): devices publish, a subscriber on the same topic is the
    /// consumer.
    MqttBroker(Address),
    /// Any HTTP server (e.g. nginx answering 202): acknowledged counts only, no consumer.
    HttpServer(Address),
}

impl Target {
    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Target::Ferry(f) => format!("ferry (northbound {})", f.northbound),
            Target::MqttBroker(a) => format!("mqtt broker {}", a.authority()),
            Target::HttpServer(a) => format!("http server {}", a.authority()),
        }
    }
}

/// One run of the harness.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// What to do.
    pub scenario: ScenarioKind,
    /// Which protocol the devices speak.
    pub transport: TransportKind,
    /// The MQTT version, with [`TransportKind::Mqtt`].
    pub mqtt_version: MqttVersion,
    /// Where to send.
    pub target: Target,
    /// The tenant of the devices.
    pub tenant: String,
    /// The devices' password (set during setup).
    pub password: String,
    /// How devices authenticate.
    pub auth: AuthKind,
    /// Where the harness keeps its CA and device certificates (X.509 devices).
    pub pki_dir: PathBuf,
    /// `provision-storm`: how many new devices connect at the same time (`devices` for all at once,
    /// 1 for one after the other).
    pub concurrency: usize,
    /// Number of simulated devices (one connection each for telemetry and events).
    pub devices: usize,
    /// Connections to open in the `connections` scenario (devices are reused round-robin).
    pub connections: usize,
    /// How long to send (or hold connections).
    pub duration: Duration,
    /// Total message rate.
    pub rate: Rate,
    /// Payload bytes per message (at least the 24-byte header).
    pub payload_size: usize,
    /// Telemetry QoS (0 or 1); events are always sent at least once.
    pub qos: u8,
    /// PEM file with the CA that signed the server certificate (for `mqtts://`, `amqps://`).
    pub ca_file: Option<PathBuf>,
    /// The gateway's process id: CPU and memory are read from `/proc/PID`.
    pub pid: Option<u32>,
    /// Show live progress on stderr.
    pub progress: bool,
    /// How long connecting and warming up (first authentication) may take.
    pub warmup_timeout: Duration,
    /// How long to wait for acknowledged messages to arrive at the consumer after sending stopped.
    pub drain_timeout: Duration,
}

impl RunConfig {
    /// Refuses client certificates over a plain `address` of `transport` (whose TLS scheme is
    /// `secure_scheme`).
    pub fn require_tls_for_x509(
        &self,
        address: &Address,
        transport: TransportKind,
        secure_scheme: &str,
    ) -> Result<(), crate::PerfError> {
        if self.auth == AuthKind::X509 && !address.tls {
            return Err(crate::PerfError::Config(format!(
                "client certificates need TLS: give the {} address as {secure_scheme}://host:port",
                transport.as_str(),
            )));
        }
        Ok(())
    }

    /// Defaults for a run against `target`: 10 devices, 5 s, as fast as possible, 256 bytes, QoS 0.
    pub fn new(scenario: ScenarioKind, transport: TransportKind, target: Target) -> Self {
        Self {
            scenario,
            transport,
            mqtt_version: MqttVersion::V311,
            target,
            tenant: "perf".to_owned(),
            password: String::new(),
            auth: AuthKind::Password,
            pki_dir: PathBuf::from("perf-pki"),
            concurrency: usize::MAX,
            devices: 10,
            connections: 100,
            duration: Duration::from_secs(5),
            rate: Rate::Max,
            payload_size: 256,
            qos: 0,
            ca_file: None,
            pid: None,
            progress: false,
            warmup_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_default_ports() -> Result<(), String> {
        let a = Address::mqtt("mqtt://127.0.0.1")?;
        assert_eq!((a.host.as_str(), a.port, a.tls), ("127.0.0.1", 1883, false));
        let a = Address::mqtt("mqtts://localhost:9883")?;
        assert_eq!((a.host.as_str(), a.port, a.tls), ("localhost", 9883, true));
        let a = Address::http("http://[::1]:8080/")?;
        assert_eq!(a.authority(), "[::1]:8080");
        assert!(Address::mqtt("http://127.0.0.1").is_err());
        assert!(Address::http("127.0.0.1:80").is_err());
        let a = Address::amqp("amqps://localhost")?;
        assert_eq!((a.host.as_str(), a.port, a.tls), ("localhost", 5671, true));
        assert_eq!(Address::amqp("amqp://127.0.0.1")?.port, 5672);
        let a = Address::coap("coaps://127.0.0.1")?;
        assert_eq!((a.port, a.tls), (5684, true));
        Ok(())
    }

    #[test]
    fn client_certificates_need_a_tls_address() -> Result<(), String> {
        let plain = Address::mqtt("mqtt://127.0.0.1")?;
        let mut config = RunConfig::new(
            ScenarioKind::Telemetry,
            TransportKind::Mqtt,
            Target::MqttBroker(plain.clone()),
        );
        assert!(
            config
                .require_tls_for_x509(&plain, TransportKind::Mqtt, "mqtts")
                .is_ok()
        );
        config.auth = AuthKind::X509;
        let refused = config.require_tls_for_x509(&plain, TransportKind::Mqtt, "mqtts");
        assert!(matches!(refused, Err(crate::PerfError::Config(m)) if m.contains("mqtts://")));
        let secure = Address::mqtt("mqtts://127.0.0.1")?;
        assert!(
            config
                .require_tls_for_x509(&secure, TransportKind::Mqtt, "mqtts")
                .is_ok()
        );
        Ok(())
    }
}
