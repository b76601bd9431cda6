//! Ferry's configuration: a TOML file, overridden by `FERRY_*` environment variables, overridden
//! by command-line settings. Every section has defaults, so no file at all is a valid setup.
//!
//! Environment variables name a setting by its path with `__` between levels:
//! `FERRY_HTTP__BIND=0.0.0.0:8080` sets `[http] bind`, `FERRY_DATA_DIR=/var/lib/ferry` sets
//! `data_dir`. Values are read as TOML when they parse as such (numbers, booleans, arrays) and as
//! strings otherwise.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use ferry_adapter_amqp::AmqpConfig;
use ferry_adapter_coap::CoapConfig;
use ferry_adapter_core::CoreConfig;
use ferry_adapter_http::HttpConfig;
use ferry_adapter_mqtt::MqttConfig;
use ferry_northbound::NorthboundConfig;
use ferry_registry::RegistryConfig;

/// The whole configuration of a Ferry process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the registry database, the event store and generated certificates.
    pub data_dir: PathBuf,
    /// Threads that run the adapters (the async runtime's workers); `None`: one per CPU.
    pub worker_threads: Option<NonZeroUsize>,
    /// The server certificate used by every TLS listener.
    pub tls: TlsConfig,
    /// The device registry and its storage.
    pub registry: RegistryConfig,
    /// Where the Management API listens.
    pub management: ManagementConfig,
    /// The cache in front of the registry, used by every adapter.
    pub cache: CacheSettings,
    /// Settings shared by all protocol adapters (payload limit, password checks).
    pub adapter: CoreConfig,
    /// The HTTP adapter.
    pub http: HttpConfig,
    /// The MQTT adapter.
    pub mqtt: MqttConfig,
    /// The AMQP 1.0 adapter.
    pub amqp: AmqpConfig,
    /// The CoAP adapter (UDP and DTLS).
    pub coap: CoapConfig,
    /// The embedded AMQP 1.0 northbound endpoint for applications.
    pub northbound: NorthboundConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            worker_threads: None,
            tls: TlsConfig::default(),
            registry: RegistryConfig::default(),
            management: ManagementConfig::default(),
            cache: CacheSettings::default(),
            adapter: CoreConfig::default(),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            amqp: AmqpConfig::default(),
            coap: CoapConfig::default(),
            northbound: NorthboundConfig::default(),
        }
    }
}

/// The server certificate for TLS listeners.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain. Without it, Ferry creates a self-signed
    /// certificate for `localhost` under `DATA_DIR/tls/` on first start and reuses it.
    pub cert: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// The HTTP Management API listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Address of Hono's Device Registry Management API (`/v1`); Hono's default port is 28080.
    pub bind: SocketAddr,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 28080)),
        }
    }
}

/// Lifetimes of registry answers cached by the adapters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Maximum number of cached tenants, credentials and assertions (each).
    pub max_entries: u64,
    /// Seconds an answer without a cache directive is kept.
    pub default_ttl_secs: u64,
    /// Seconds a "not found" answer is kept.
    pub negative_ttl_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        let defaults = ferry_registry_client::CacheConfig::default();
        Self {
            max_entries: defaults.max_entries,
            default_ttl_secs: defaults.default_ttl.as_secs(),
            negative_ttl_secs: defaults.negative_ttl.as_secs(),
        }
    }
}

impl CacheSettings {
    /// The registry-client cache configuration.
    pub fn to_cache_config(&self) -> ferry_registry_client::CacheConfig {
        ferry_registry_client::CacheConfig {
            max_entries: self.max_entries,
            default_ttl: Duration::from_secs(self.default_ttl_secs),
            negative_ttl: Duration::from_secs(self.negative_ttl_secs),
            ..ferry_registry_client::CacheConfig::default()
        }
    }
}

impl Config {
    /// The defaults with every listener on `127.0.0.1` and a port the operating system picks,
    /// and data under `data_dir`: for tests, benchmarks and embedding several gateways on one
    /// host. [`crate::Gateway::addresses`] tells the ports.
    pub fn ephemeral(data_dir: &Path) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            ..Config::default()
        };
        config.management.bind = any;
        config.northbound.bind = any;
        config.http.bind = any;
        config.http.tls_bind = any;
        config.mqtt.bind = any;
        config.mqtt.tls_bind = any;
        config.amqp.bind = any;
        config.amqp.tls_bind = any;
        config.coap.bind = any;
        config.coap.dtls_bind = any;
        config
    }

    /// Loads the configuration: the file (if any), then `FERRY_*` variables from `env`, then
    /// `overrides` given as `path.to.key=value`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(path) = name.strip_prefix("FERRY_") else {
                continue;
            };
            if path == "CONFIG" || path == "LOG" {
                continue;
            }
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            set(&mut table, &keys, &value)
                .with_context(|| format!("environment variable {name}"))?;
        }
        for item in overrides {
            let Some((path, value)) = item.split_once('=') else {
                bail!("--set {item:?}: expected key=value, e.g. http.bind=127.0.0.1:8080");
            };
            let keys: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
            set(&mut table, &keys, value).with_context(|| format!("--set {item}"))?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        Ok(config)
    }
}

/// Sets `keys` (a path of table names) to `raw`, read as a TOML value when it parses as one.
fn set(table: &mut toml::Table, keys: &[String], raw: &str) -> anyhow::Result<()> {
    let Some((last, parents)) = keys.split_last() else {
        bail!("empty setting name");
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("{key} is not a section"),
        };
    }
    current.insert(last.clone(), parse_value(raw));
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_hono_ports_on_loopback() -> anyhow::Result<()> {
        let c = Config::load(None, Vec::new(), &[])?;
        assert_eq!(c.management.bind.port(), 28080);
        assert!(c.management.bind.ip().is_loopback());
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.mqtt.bind.port(), 1883);
        assert_eq!(c.mqtt.tls_bind.port(), 8883);
        assert!(c.mqtt.bind.ip().is_loopback());
        assert_eq!(c.amqp.bind.port(), 5672);
        assert_eq!(c.amqp.tls_bind.port(), 5671);
        assert!(c.amqp.bind.ip().is_loopback());
        Ok(())
    }

    #[test]
    fn env_beats_file_and_flags_beat_env() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("ferry.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[management]\nbind = \"127.0.0.1:1\"\n",
        )?;
        let env = vec![
            ("FERRY_DATA_DIR".to_owned(), "/from/env".to_owned()),
            (
                "FERRY_MANAGEMENT__BIND".to_owned(),
                "127.0.0.1:2".to_owned(),
            ),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let c = Config::load(
            Some(&file),
            env,
            &["management.bind=127.0.0.1:3".to_owned()],
        )?;
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.management.bind.port(), 3);
        Ok(())
    }

    #[test]
    fn amqp_section_is_read() -> anyhow::Result<()> {
        let c = Config::load(
            None,
            vec![("FERRY_AMQP__MAX_PAYLOAD_SIZE".to_owned(), "100".to_owned())],
            &["amqp.authentication_required=false".to_owned()],
        )?;
        assert_eq!(c.amqp.max_payload_size, 100);
        assert!(!c.amqp.authentication_required);
        assert!(Config::load(None, Vec::new(), &["amqp.nope=1".to_owned()]).is_err());
        Ok(())
    }

    #[test]
    fn worker_threads_default_to_one_per_cpu_and_refuse_zero() -> anyhow::Result<()> {
        assert_eq!(Config::load(None, Vec::new(), &[])?.worker_threads, None);
        let c = Config::load(None, Vec::new(), &["worker_threads=1".to_owned()])?;
        assert_eq!(c.worker_threads.map(NonZeroUsize::get), Some(1));
        assert!(Config::load(None, Vec::new(), &["worker_threads=0".to_owned()]).is_err());
        Ok(())
    }

    #[test]
    fn unknown_settings_are_refused() {
        let err = Config::load(None, vec![("FERRY_NOPE".to_owned(), "1".to_owned())], &[]);
        assert!(err.is_err());
        let err = Config::load(None, Vec::new(), &["http".to_owned()]);
        assert!(err.is_err());
    }
}
