//! Smoke runs of each scenario against a Ferry started in-process on ephemeral loopback ports:
//! messages must be sent, acknowledged and received, and the numbers must be consistent. No
//! timing thresholds: this machine may be busy.

use std::time::Duration;

use ferry::{Config, Gateway};
use ferry_perf::config::{
    Address, AuthKind, FerryTarget, MqttVersion, RunConfig, ScenarioKind, Target, TransportKind,
};
use ferry_perf::rate::Rate;
use ferry_perf::report::RunResult;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn start_ferry(
    dir: &std::path::Path,
) -> Result<Gateway, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = Config::ephemeral(dir);
    config.registry.bcrypt_cost = 4;
    Gateway::start(config)
        .await
        .map_err(|e| format!("{e:#}").into())
}

fn run_config(
    gateway: &Gateway,
    scenario: ScenarioKind,
    tenant: &str,
) -> Result<RunConfig, String> {
    let a = gateway.addresses();
    let http = a.http.ok_or("no plain HTTP listener")?;
    let target = Target::Ferry(FerryTarget {
        management: format!("http://{}", a.management),
        management_credentials: None,
        northbound: a.northbound.to_string(),
        northbound_credentials: None,
        http: Address::http(&format!("http://{http}"))?,
        mqtt: Address::mqtt(&format!(
            "mqtt://{}",
            a.mqtt.ok_or("no plain MQTT listener")?
        ))?,
        coap: Address::coap(&format!("coaps://{}", a.coaps.ok_or("no CoAP DTLS port")?))?,
        amqp: Address::amqp(&format!(
            "amqp://{}",
            a.amqp.ok_or("no plain AMQP listener")?
        ))?,
        setup: true,
    });
    let mut config = RunConfig::new(scenario, TransportKind::Http, target);
    config.tenant = tenant.to_owned();
    config.password = "smoke-test-password".to_owned();
    config.devices = 3;
    config.duration = Duration::from_secs(1);
    config.payload_size = 64;
    config.warmup_timeout = Duration::from_secs(30);
    Ok(config)
}

/// Runs `config` as the `connections` scenario with 10 connections and checks that all opened;
/// returns the figures.
async fn holds_ten_connections(
    mut config: RunConfig,
) -> Result<ferry_perf::report::ConnectionsResult, Box<dyn std::error::Error + Send + Sync>> {
    config.scenario = ScenarioKind::Connections;
    config.connections = 10;
    let r = ferry_perf::run(&config).await?;
    let c = r.connections.ok_or("no connections figures")?;
    assert_eq!((c.opened, c.failed), (10, 0), "{:?}", r.errors);
    Ok(c)
}

fn assert_sane(r: &RunResult) {
    let received = r.received.unwrap_or(0);
    assert!(r.sent > 0, "nothing sent: {r:?}");
    assert!(r.acked > 0, "nothing acknowledged: {r:?}");
    assert!(received > 0, "nothing received: {r:?}");
    assert!(r.acked <= r.sent, "{r:?}");
    assert!(received <= r.sent, "{r:?}");
    assert_eq!(r.duplicates, 0, "{r:?}");
    let e2e = r.end_to_end.clone().unwrap_or_default();
    assert_eq!(e2e.count, received);
    assert!(
        e2e.p50_ms > 0.0 && e2e.p50_ms <= e2e.p99_ms && e2e.p99_ms <= e2e.max_ms,
        "{e2e:?}"
    );
    // MQTT QoS 0 has no acknowledgement to time.
    if r.transport == "http" || r.qos == 1 {
        assert!(r.ack.count > 0 && r.ack.p50_ms > 0.0, "{:?}", r.ack);
    }
    assert!(r.sent_per_s > 0.0 && r.duration_s > 0.0);
    assert!(r.loadgen.as_ref().is_some_and(|c| c.cpu_seconds >= 0.0));
    assert!(!r.timeline.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_telemetry_and_events_arrive_northbound() -> TestResult {
    let dir = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;

    let mut config = run_config(&gateway, ScenarioKind::Telemetry, "smoke")?;
    config.pid = Some(std::process::id());
    let telemetry = ferry_perf::run(&config).await?;
    assert_sane(&telemetry);
    assert!(
        telemetry
            .gateway
            .as_ref()
            .and_then(|g| g.rss_kib_peak)
            .is_some()
    );

    // Setup is idempotent: the same tenant and devices again, now at a fixed rate, QoS 1.
    config.rate = Rate::PerSecond(300.0);
    config.qos = 1;
    let qos1 = ferry_perf::run(&config).await?;
    assert_sane(&qos1);
    assert!(qos1.sent <= 400, "the rate was not kept: {}", qos1.sent);

    let events = ferry_perf::run(&run_config(&gateway, ScenarioKind::Events, "smoke")?).await?;
    assert_sane(&events);
    assert_eq!(events.qos, 1);

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_opened_and_held() -> TestResult {
    let dir = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;
    let mut config = run_config(&gateway, ScenarioKind::Connections, "smoke-conn")?;
    config.pid = Some(std::process::id());
    let c = holds_ten_connections(config).await?;
    assert!(c.rss_kib_after.is_some());
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_and_5_telemetry_events_and_connections_against_ferry() -> TestResult {
    let dir = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let mut config = run_config(&gateway, ScenarioKind::Telemetry, "smoke-mqtt")?;
        config.transport = TransportKind::Mqtt;
        config.mqtt_version = version;
        config.rate = Rate::PerSecond(300.0);
        config.qos = 1;
        let telemetry = ferry_perf::run(&config).await?;
        assert_sane(&telemetry);
        assert_eq!(telemetry.mqtt_version.as_deref(), Some(version.as_str()));
        assert!(telemetry.errors.is_empty(), "{:?}", telemetry.errors);
        assert_eq!(telemetry.received, Some(telemetry.acked), "{telemetry:?}");
        config.scenario = ScenarioKind::Events;
        let events = ferry_perf::run(&config).await?;
        assert_sane(&events);
        assert_eq!(events.received, Some(events.acked), "{events:?}");
        holds_ten_connections(config).await?;
    }
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_telemetry_over_dtls_psk_arrives_and_sessions_are_held() -> TestResult {
    let dir = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;
    // CON telemetry (QoS 1) at a fixed rate, then events, then NON telemetry as fast as the
    // answers come.
    let mut config = run_config(&gateway, ScenarioKind::Telemetry, "smoke-coap")?;
    config.transport = TransportKind::Coap;
    config.rate = Rate::PerSecond(300.0);
    config.qos = 1;
    let con = ferry_perf::run(&config).await?;
    assert_sane(&con);
    assert_eq!(con.transport, "coap");
    assert!(con.errors.is_empty(), "{:?}", con.errors);
    config.scenario = ScenarioKind::Events;
    let events = ferry_perf::run(&config).await?;
    assert_sane(&events);
    config.scenario = ScenarioKind::Telemetry;
    config.rate = Rate::Max;
    config.qos = 0;
    let non = ferry_perf::run(&config).await?;
    assert_sane(&non);

    let mut config = run_config(&gateway, ScenarioKind::Connections, "smoke-coap")?;
    config.transport = TransportKind::Coap;
    config.pid = Some(std::process::id());
    holds_ten_connections(config).await?;
    gateway.shutdown().await;
    Ok(())
}

/// A Mosquitto on a free loopback port (local-only mode: anonymous, any credentials), if the
/// `mosquitto` binary is installed.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
}

impl Mosquitto {
    fn start() -> Option<Self> {
        Self::start_with(|port| vec!["-p".to_owned(), port.to_string()])
    }

    /// Starts `mosquitto` with the arguments `args` makes for a free port.
    fn start_with(args: impl FnOnce(u16) -> Vec<String>) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("mosquitto")
            .args(args(port))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, port })
    }

    async fn wait_listening(&self) {
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_telemetry_and_connections_against_mosquitto_if_installed() -> TestResult {
    let Some(broker) = Mosquitto::start() else {
        eprintln!("mosquitto is not installed: the MQTT smoke run is skipped");
        return Ok(());
    };
    let address = Address::mqtt(&format!("mqtt://127.0.0.1:{}", broker.port))?;
    broker.wait_listening().await;
    for (qos, version) in [
        (0, MqttVersion::V311),
        (1, MqttVersion::V311),
        (0, MqttVersion::V5),
        (1, MqttVersion::V5),
    ] {
        let target = Target::MqttBroker(address.clone());
        let mut config = RunConfig::new(ScenarioKind::Telemetry, TransportKind::Mqtt, target);
        config.mqtt_version = version;
        config.password = "any".to_owned();
        config.devices = 3;
        config.duration = Duration::from_secs(1);
        config.rate = Rate::PerSecond(300.0);
        config.payload_size = 64;
        config.qos = qos;
        let r = ferry_perf::run(&config).await?;
        assert_sane(&r);
        assert_eq!(r.qos, qos);
        assert_eq!(r.mqtt_version.as_deref(), Some(version.as_str()));
    }
    let target = Target::MqttBroker(address);
    let mut config = RunConfig::new(ScenarioKind::Connections, TransportKind::Mqtt, target);
    config.password = "any".to_owned();
    config.duration = Duration::from_secs(1);
    holds_ten_connections(config).await?;
    Ok(())
}

/// A run with client-certificate devices against the gateway's TLS ports (its own server
/// certificate as the CA), the harness's PKI in `pki`.
fn x509_config(
    gateway: &Gateway,
    data_dir: &std::path::Path,
    pki: &std::path::Path,
    scenario: ScenarioKind,
    transport: TransportKind,
    tenant: &str,
) -> Result<RunConfig, String> {
    let a = gateway.addresses();
    let https = a.https.ok_or("no HTTPS listener")?;
    let mqtts = a.mqtts.ok_or("no MQTTS listener")?;
    let amqps = a.amqps.ok_or("no AMQPS listener")?;
    let mut config = run_config(gateway, scenario, tenant)?;
    config.transport = transport;
    if let Target::Ferry(f) = &mut config.target {
        f.http = Address::http(&format!("https://localhost:{}", https.port()))?;
        f.mqtt = Address::mqtt(&format!("mqtts://localhost:{}", mqtts.port()))?;
        f.amqp = Address::amqp(&format!("amqps://localhost:{}", amqps.port()))?;
    }
    config.auth = AuthKind::X509;
    config.pki_dir = pki.to_path_buf();
    config.ca_file = Some(data_dir.join("tls/server-cert.pem"));
    config.password = String::new();
    config.rate = Rate::PerSecond(40.0);
    Ok(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_telemetry_and_handshakes_over_http_and_mqtt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;
    let cases = [
        (TransportKind::Http, MqttVersion::V311),
        (TransportKind::Mqtt, MqttVersion::V311),
        (TransportKind::Mqtt, MqttVersion::V5),
    ];
    for (transport, version) in cases {
        // Keep-alive devices authenticated by their certificates.
        let mut config = x509_config(
            &gateway,
            dir.path(),
            pki.path(),
            ScenarioKind::Telemetry,
            transport,
            "smoke-x509",
        )?;
        config.mqtt_version = version;
        config.qos = 1;
        let r = ferry_perf::run(&config).await?;
        assert_sane(&r);

        // Every message on a new connection with a full handshake, certificates from the cache.
        config.scenario = ScenarioKind::Handshakes;
        let r = ferry_perf::run(&config).await?;
        assert_sane(&r);
        assert_eq!(r.scenario, "handshakes");
        assert_eq!(r.received, Some(r.acked), "{r:?}");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    // The device certificates were made once and cached for the tenant.
    let cached = std::fs::read_dir(pki.path().join("smoke-x509/devices"))?.count();
    assert_eq!(cached, 3);
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_storm_creates_each_new_device_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;
    let cases = [
        (TransportKind::Http, MqttVersion::V311, 30, usize::MAX),
        (TransportKind::Mqtt, MqttVersion::V311, 20, usize::MAX),
        (TransportKind::Mqtt, MqttVersion::V5, 10, usize::MAX),
        (TransportKind::Http, MqttVersion::V311, 3, 1),
    ];
    for (transport, version, devices, concurrency) in cases {
        let mut config = x509_config(
            &gateway,
            dir.path(),
            pki.path(),
            ScenarioKind::ProvisionStorm,
            transport,
            "smoke-storm",
        )?;
        config.mqtt_version = version;
        config.devices = devices;
        config.concurrency = concurrency;
        let r = ferry_perf::run(&config).await?;
        let storm = r.storm.clone().ok_or("no storm figures")?;
        let n = devices as u64;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!((r.sent, r.acked, r.received), (n, n, Some(n)), "{r:?}");
        assert_eq!(storm.provisioned, n, "{storm:?}");
        assert_eq!(storm.concurrency, concurrency.min(devices));
        let arrived = storm.seconds_to_all_arrived.ok_or("not all arrived")?;
        assert!(arrived > 0.0 && storm.seconds_to_all_acknowledged > 0.0);
        assert_eq!(r.ack.count, n);
        assert!(r.ack.p50_ms > 0.0 && r.ack.p50_ms <= r.ack.p99_ms);
    }
    gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_and_bulk_jobs_are_measured() -> TestResult {
    use base64::Engine as _;
    let dir = tempfile::tempdir()?;
    let pki = tempfile::tempdir()?;
    let mut config = Config::ephemeral(dir.path());
    config.registry.bcrypt_cost = 4;
    config.registry.ca_encryption_key = Some(ferry_registry::EncryptionKey(
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    ));
    let gateway = Gateway::start(config).await.map_err(|e| format!("{e:#}"))?;
    let issuance = ferry_perf::issuance::IssuanceConfig {
        management: format!("http://{}", gateway.addresses().management),
        credentials: None,
        tenant: "smoke-issue".to_owned(),
        certificates: 5,
        bulk_rows: 40,
        pki: std::sync::Arc::new(ferry_perf::pki::Pki::open(pki.path())?),
    };
    let r = ferry_perf::issuance::run(&issuance).await?;
    assert_eq!(r.issued, 5, "{:?}", r.errors);
    assert!(r.errors.is_empty());
    assert_eq!(r.issue.count, 5);
    assert!(r.issue.p50_ms > 0.0 && r.issue.p50_ms <= r.issue.p99_ms);
    let bulk = r.bulk.clone().ok_or("no bulk figures")?;
    assert_eq!((bulk.rows, bulk.created, bulk.failed), (40, 40, 0));
    assert!(bulk.seconds > 0.0);
    let table = ferry_perf::issuance::table(&r);
    assert!(table.contains("40 created"), "{table}");

    // The devices of the bulk file exist.
    let api = ferry_perf::setup::Api::new(&issuance.management, None);
    assert_eq!(api.device_count("smoke-issue").await?, 40);
    gateway.shutdown().await;
    Ok(())
}

/// Mosquitto configured as `perf/compare.sh` does for client certificates: TLS, the harness's CA
/// as `cafile`, `require_certificate`, `use_identity_as_username`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_client_certificates_against_mosquitto_if_installed() -> TestResult {
    let dir = tempfile::tempdir()?;
    // The harness's CA for tenant `perf` must exist before Mosquitto reads it as its cafile.
    ferry_perf::pki::Pki::open(&dir.path().join("pki/perf"))?;
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert, key, conf) = (
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
        dir.path().join("mosquitto.conf"),
    );
    std::fs::write(&cert, server.cert.pem())?;
    std::fs::write(&key, server.signing_key.serialize_pem())?;
    let conf_path = conf.clone();
    let Some(broker) = Mosquitto::start_with(|port| {
        let text = format!(
            "user root\nlistener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\n\
             require_certificate true\nuse_identity_as_username true\n",
            cert.display(),
            key.display(),
            dir.path().join("pki/perf/ca-cert.pem").display(),
        );
        let _ = std::fs::write(&conf_path, text);
        vec!["-c".to_owned(), conf_path.display().to_string()]
    }) else {
        eprintln!("mosquitto is not installed: the MQTT client-certificate smoke run is skipped");
        return Ok(());
    };
    broker.wait_listening().await;
    let address = Address::mqtt(&format!("mqtts://localhost:{}", broker.port))?;
    let mut config = RunConfig::new(
        ScenarioKind::Telemetry,
        TransportKind::Mqtt,
        Target::MqttBroker(address),
    );
    config.auth = AuthKind::X509;
    config.pki_dir = dir.path().join("pki");
    config.ca_file = Some(cert.clone());
    config.devices = 3;
    config.duration = Duration::from_secs(1);
    config.rate = Rate::PerSecond(300.0);
    config.payload_size = 64;
    config.qos = 1;
    let r = ferry_perf::run(&config).await?;
    assert_sane(&r);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_telemetry_events_and_connections_arrive_northbound() -> TestResult {
    let dir = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;
    let amqps = gateway.addresses().amqps.ok_or("no AMQP TLS listener")?;

    // Unsettled telemetry over TLS: every accepted message arrives.
    let mut config = run_config(&gateway, ScenarioKind::Telemetry, "smoke-amqp")?;
    config.transport = TransportKind::Amqp;
    config.qos = 1;
    config.ca_file = Some(dir.path().join("tls/server-cert.pem"));
    if let Target::Ferry(ferry) = &mut config.target {
        ferry.amqp = Address::amqp(&format!("amqps://localhost:{}", amqps.port()))?;
    }
    let unsettled = ferry_perf::run(&config).await?;
    assert_sane(&unsettled);
    assert_eq!(unsettled.transport, "amqp");
    assert!(
        unsettled.received >= Some(unsettled.acked),
        "an accepted message did not arrive: {unsettled:?}"
    );
    assert!(unsettled.errors.is_empty(), "{:?}", unsettled.errors);

    // Pre-settled telemetry on the plain port at a fixed rate, then events.
    let mut config = run_config(&gateway, ScenarioKind::Telemetry, "smoke-amqp")?;
    config.transport = TransportKind::Amqp;
    config.rate = Rate::PerSecond(300.0);
    let presettled = ferry_perf::run(&config).await?;
    assert_sane(&presettled);
    assert_eq!(presettled.qos, 0);
    config.scenario = ScenarioKind::Events;
    config.rate = Rate::Max;
    let events = ferry_perf::run(&config).await?;
    assert_sane(&events);
    assert!(events.received >= Some(events.acked), "{events:?}");

    config.pid = Some(std::process::id());
    holds_ten_connections(config).await?;
    gateway.shutdown().await;
    Ok(())
}

/// AMQP devices with client certificates (SASL EXTERNAL over TLS): unsettled telemetry and
/// events, and idle connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_client_certificates_with_sasl_external() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = tempfile::tempdir()?;
    let gateway = start_ferry(dir.path()).await?;
    let mut config = x509_config(
        &gateway,
        dir.path(),
        pki.path(),
        ScenarioKind::Telemetry,
        TransportKind::Amqp,
        "smoke-amqp-x509",
    )?;
    config.qos = 1;
    let telemetry = ferry_perf::run(&config).await?;
    assert_sane(&telemetry);
    assert_eq!(telemetry.transport, "amqp");
    assert!(telemetry.errors.is_empty(), "{:?}", telemetry.errors);
    assert!(telemetry.received >= Some(telemetry.acked), "{telemetry:?}");

    config.scenario = ScenarioKind::Events;
    let events = ferry_perf::run(&config).await?;
    assert_sane(&events);
    assert!(events.errors.is_empty(), "{:?}", events.errors);
    assert!(events.received >= Some(events.acked), "{events:?}");

    config.pid = Some(std::process::id());
    holds_ten_connections(config.clone()).await?;

    // The same devices over the plain port: refused before anything is sent.
    let mut plain = config;
    if let Target::Ferry(f) = &mut plain.target {
        f.amqp = Address::amqp(&format!(
            "amqp://{}",
            gateway.addresses().amqp.ok_or("no plain AMQP listener")?
        ))?;
    }
    assert!(matches!(
        ferry_perf::run(&plain).await,
        Err(ferry_perf::PerfError::Config(_))
    ));
    gateway.shutdown().await;
    Ok(())
}
