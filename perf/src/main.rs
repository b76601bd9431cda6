//! The `ferry-perf` command: runs one scenario, prints the summary, writes JSON and the plot.

mod cli;

use anyhow::Context;
use clap::Parser;

/// The load generator's own cost counts against the machine it measures: mimalloc keeps it small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PERF_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_new("warn,fe2o3_amqp=error"))
                .context("invalid PERF_LOG filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(cli.threads))
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    if matches!(cli.scenario, cli::ScenarioCommand::Setup) {
        let provisioning = cli.to_provisioning()?;
        runtime.block_on(ferry_perf::setup::provision(&provisioning))?;
        eprintln!(
            "tenant {} with {} devices provisioned",
            provisioning.tenant, provisioning.devices
        );
        return Ok(());
    }
    if let Some(issuance) = cli.to_issuance()? {
        let result = runtime.block_on(ferry_perf::issuance::run(&issuance))?;
        print!("{}", ferry_perf::issuance::table(&result));
        if let Some(path) = &cli.json {
            ferry_perf::report::write_json(&result, path)?;
            eprintln!("results written to {}", path.display());
        }
        return Ok(());
    }
    let config = cli.to_run_config()?;
    let result = runtime.block_on(ferry_perf::run(&config))?;
    print!("{}", ferry_perf::report::table(&result));
    if let Some(path) = &cli.json {
        ferry_perf::report::write_json(&result, path)?;
        eprintln!("results written to {}", path.display());
    }
    if let Some(path) = &cli.plot {
        ferry_perf::plot::write_svg(&result, path)?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}
