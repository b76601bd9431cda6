//! The `ferry` command: runs the gateway, or talks to a running one.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ferry::{Config, Gateway};

/// mimalloc instead of glibc's malloc: the message path allocates small, short-lived buffers on
/// two worker threads, where it needs about half the CPU (docs/perf.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ferry: a multi-protocol IoT device gateway speaking Eclipse Hono's APIs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (registry database, event store, generated certificates).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Override one setting, e.g. `--set http.bind=0.0.0.0:8080` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    settings: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything: registry, Management API, adapters and northbound (the default).
    Run,
    /// Print every telemetry message and event of a tenant as it arrives.
    Consume {
        /// The tenant whose messages to print.
        #[arg(long)]
        tenant: String,
        /// Address of the northbound AMQP 1.0 endpoint.
        #[arg(long, default_value = "127.0.0.1:15672")]
        northbound: SocketAddr,
        /// Application user (SASL PLAIN); anonymous when absent.
        #[arg(long, env = "FERRY_CONSUMER_USER")]
        user: Option<String>,
        /// Password of the application user.
        #[arg(long, env = "FERRY_CONSUMER_PASSWORD")]
        password: Option<String>,
    },
    /// Make a demo CA and device certificates in files (see docs/provisioning.md).
    Pki {
        /// Directory for the files.
        #[arg(long, default_value = "pki")]
        out: PathBuf,
        /// Number of device certificates.
        #[arg(long, default_value_t = 3)]
        devices: u32,
        /// Common name of the CA.
        #[arg(long, default_value = "Ferry Demo CA")]
        ca_name: String,
        /// Device names are PREFIX-1, PREFIX-2, ...
        #[arg(long, default_value = "device")]
        prefix: String,
    },
    /// Upload a bulk provisioning file (.csv or .jsonl) and follow the job to its end.
    Provision {
        /// The tenant to create the devices in.
        #[arg(long)]
        tenant: String,
        /// The file.
        file: PathBuf,
        /// Management API base URL.
        #[arg(long, default_value = "http://127.0.0.1:28080")]
        management: String,
        /// Management API user (HTTP Basic).
        #[arg(long, env = "FERRY_MANAGEMENT_USER")]
        user: Option<String>,
        /// Password of the Management API user.
        #[arg(long, env = "FERRY_MANAGEMENT_PASSWORD")]
        password: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_new("info"))
                .context("invalid FERRY_LOG filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    // Everything uses ring explicitly; installing it as the default too keeps any library that
    // asks for the process default on the same provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let mut settings = cli.settings;
            if let Some(dir) = cli.data_dir {
                settings.insert(0, format!("data_dir={:?}", dir.display().to_string()));
            }
            let config = Config::load(cli.config.as_deref(), std::env::vars(), &settings)?;
            runtime(config.worker_threads)?.block_on(run(config))
        }
        Command::Consume {
            tenant,
            northbound,
            user,
            password,
        } => {
            let credentials = user.map(|u| (u, password.unwrap_or_default()));
            runtime(None)?.block_on(ferry::consume::run(northbound, &tenant, credentials))
        }
        Command::Pki {
            out,
            devices,
            ca_name,
            prefix,
        } => {
            let written = ferry::pki::run(&out, &ca_name, &prefix, devices)?;
            println!(
                "Wrote {} and {} device certificates to {}; tenant.json trusts the CA \
                 (auto-provisioning on), devices.csv is ready for `ferry provision`.",
                written.ca_cert.display(),
                written.devices.len(),
                out.display()
            );
            Ok(())
        }
        Command::Provision {
            tenant,
            file,
            management,
            user,
            password,
        } => {
            let target = ferry::provision::Target {
                base: management,
                user: user.map(|u| (u, password.unwrap_or_default())),
            };
            let summary =
                runtime(None)?.block_on(ferry::provision::run(&target, &tenant, &file, true))?;
            ferry::provision::print(&summary);
            Ok(())
        }
    }
}

/// The async runtime: `workers` threads, or one per CPU. One worker is the thread that starts
/// the runtime itself (tokio's current-thread scheduler: no work stealing, no cross-thread
/// wake-ups).
fn runtime(workers: Option<NonZeroUsize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers.map(NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn run(config: Config) -> anyhow::Result<()> {
    let gateway = Gateway::start(config).await?;
    let a = gateway.addresses();
    println!("Ferry is running. Listeners:");
    for (name, address) in a.listeners() {
        println!("  {name:<50} {address}");
    }
    println!();
    println!("Send a first message:");
    println!(
        "  curl -X POST http://{}/v1/tenants/my-tenant\n  curl -X POST http://{}/v1/devices/my-tenant/dev1\n  \
         curl -X PUT -H 'content-type: application/json' http://{}/v1/credentials/my-tenant/dev1 \\\n    \
         -d '[{{\"type\":\"hashed-password\",\"auth-id\":\"dev1\",\"secrets\":[{{\"pwd-plain\":\"secret\"}}]}}]'\n  \
         cargo run --release -- consume --tenant my-tenant     # in a second terminal\n  \
         curl -u dev1@my-tenant:secret -H 'content-type: text/plain' -d hello {}/telemetry",
        a.management,
        a.management,
        a.management,
        a.http
            .map(|h| format!("http://{h}"))
            .or(a.https.map(|h| format!("https://{h}")))
            .unwrap_or_default()
    );
    gateway.run_until(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
