//! The `issuance` scenario: how fast the Management API's provisioning extension works.
//!
//! 1. A tenant CA is created (`POST /v1/provisioning/{tenant}/cas`; the Ferry needs
//!    `registry.ca_encryption_key`), then `certificates` device certificates are issued from CSRs
//!    one after the other (`POST …/cas/{id}/certificates`), each timed from request to answer.
//!    Keys and CSRs are made before the clock starts.
//! 2. A bulk file of `bulk_rows` devices with certificates (from the harness's CA) is submitted
//!    (`POST /v1/provisioning/{tenant}/bulk?wait=true`) and timed from submit until the job is done.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::PerfError;
use crate::pki::{self, Pki};
use crate::procfs::Machine;
use crate::setup::{self, Api, Credential, Provisioning, SetupError};
use crate::stats::{Percentiles, histogram};

/// What to measure, and where.
#[derive(Clone, Debug)]
pub struct IssuanceConfig {
    /// Base URL of the Management API.
    pub management: String,
    /// Basic-auth user of the Management API, if it requires one.
    pub credentials: Option<(String, String)>,
    /// The tenant (created if missing; it trusts the harness's CA and gains one CA per run).
    pub tenant: String,
    /// Certificates to issue from CSRs, one after the other (0: skip).
    pub certificates: usize,
    /// Rows of the bulk file (0: skip).
    pub bulk_rows: usize,
    /// The harness's PKI (bulk rows carry its certificates).
    pub pki: Arc<Pki>,
}

/// The bulk job's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BulkResult {
    /// Rows submitted.
    pub rows: usize,
    /// Devices the job created.
    pub created: u64,
    /// Rows that failed.
    pub failed: u64,
    /// Seconds from submitting the file until the job was done.
    pub seconds: f64,
}

/// Everything the `issuance` scenario measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssuanceResult {
    /// The tenant.
    pub tenant: String,
    /// Certificates asked for.
    pub certificates: usize,
    /// Certificates issued (201).
    pub issued: u64,
    /// Request-to-answer latency of each issuance.
    pub issue: Percentiles,
    /// Failed issuances by kind.
    pub errors: BTreeMap<String, u64>,
    /// The bulk job, if one ran.
    pub bulk: Option<BulkResult>,
    /// Where it ran.
    pub machine: Machine,
}

/// Runs the scenario.
pub async fn run(c: &IssuanceConfig) -> Result<IssuanceResult, PerfError> {
    setup::provision(&Provisioning {
        management: c.management.clone(),
        credentials: c.credentials.clone(),
        tenant: c.tenant.clone(),
        devices: 0,
        credential: Credential::X509(c.pki.clone()),
    })
    .await?;
    let api = Api::new(&c.management, c.credentials.clone());
    let run = rand::random::<u32>();
    let (issued, issue, errors) = issue_certificates(c, &api, run).await?;
    let bulk = if c.bulk_rows > 0 {
        Some(bulk(c, &api, run).await?)
    } else {
        None
    };
    Ok(IssuanceResult {
        tenant: c.tenant.clone(),
        certificates: c.certificates,
        issued,
        issue,
        errors,
        bulk,
        machine: Machine::current(),
    })
}

/// Makes keys and certificates off the runtime (CPU work).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, pki::PkiError> + Send + 'static,
) -> Result<T, PerfError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PerfError::Config(format!("certificate generation: {e}")))?
        .map_err(|e| PerfError::Config(e.to_string()))
}

async fn issue_certificates(
    c: &IssuanceConfig,
    api: &Api,
    run: u32,
) -> Result<(u64, Percentiles, BTreeMap<String, u64>), PerfError> {
    if c.certificates == 0 {
        return Ok((0, Percentiles::default(), BTreeMap::new()));
    }
    let ca = api
        .call_json(
            format!("create a CA for tenant {}", c.tenant),
            api.request(
                reqwest::Method::POST,
                &format!("/provisioning/{}/cas", c.tenant),
            )
            .json(&json!({"common-name": format!("ferry-perf issuing CA {run:08x}")})),
            &[201],
        )
        .await?;
    let Some(ca_id) = ca.get("id").and_then(Value::as_str) else {
        return Err(SetupError::Unexpected {
            what: "create a CA".to_owned(),
            body: ca.to_string(),
        }
        .into());
    };
    let count = c.certificates;
    let csrs = blocking(move || {
        (0..count)
            .map(|i| pki::csr(&format!("issued-{run:08x}-{i:05}")))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let path = format!("/provisioning/{}/cas/{ca_id}/certificates", c.tenant);
    let mut latencies = histogram();
    let mut errors = BTreeMap::new();
    for csr in csrs {
        let request = api
            .request(reqwest::Method::POST, &path)
            .json(&json!({"csr": csr, "validity-days": 30}));
        let t0 = Instant::now();
        match api.call_response("issue".to_owned(), request, &[201]).await {
            Ok(response) => {
                // The certificate is part of the answer: read it before stopping the clock.
                let _ = response.bytes().await;
                crate::stats::record_since(&mut latencies, t0);
            }
            Err(SetupError::Refused { status, .. }) => {
                *errors.entry(format!("http {status}")).or_insert(0) += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((latencies.len(), Percentiles::of(&latencies), errors))
}

async fn bulk(c: &IssuanceConfig, api: &Api, run: u32) -> Result<BulkResult, PerfError> {
    let rows = c.bulk_rows;
    let pki = c.pki.clone();
    let csv = blocking(move || {
        let mut csv = String::from("device-id,certificate\n");
        for i in 0..rows {
            let id = format!("bulk-{run:08x}-{i:05}");
            let cert = pki.fresh(&id)?;
            let _ = writeln!(csv, "{id},\"{}\"", cert.cert_pem());
        }
        Ok(csv)
    })
    .await?;
    let request = api
        .request(
            reqwest::Method::POST,
            &format!("/provisioning/{}/bulk?wait=true", c.tenant),
        )
        .header(reqwest::header::CONTENT_TYPE, "text/csv")
        .body(csv);
    let t0 = Instant::now();
    let status = api
        .call_json("run a bulk job".to_owned(), request, &[200])
        .await?;
    let seconds = t0.elapsed().as_secs_f64();
    let count = |key: &str| status.get(key).and_then(Value::as_u64);
    match (count("created"), count("failed")) {
        (Some(created), Some(failed)) => Ok(BulkResult {
            rows,
            created,
            failed,
            seconds,
        }),
        _ => Err(SetupError::Unexpected {
            what: "bulk job status".to_owned(),
            body: status.to_string(),
        }
        .into()),
    }
}

/// The summary printed at the end.
pub fn table(r: &IssuanceResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "issuance for tenant {}", r.tenant);
    let _ = writeln!(
        out,
        "  certificates  {} of {} issued from CSRs, one after the other",
        r.issued, r.certificates
    );
    let p = &r.issue;
    let _ = writeln!(
        out,
        "  issue latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
    );
    for (kind, n) in &r.errors {
        let _ = writeln!(out, "  error         {n:>12}  {kind}");
    }
    if let Some(b) = &r.bulk {
        let _ = writeln!(
            out,
            "  bulk          {} rows: {} created, {} failed in {:.2} s ({:.0} rows/s)",
            b.rows,
            b.created,
            b.failed,
            b.seconds,
            b.rows as f64 / b.seconds.max(1e-6)
        );
    }
    let _ = writeln!(
        out,
        "  machine       {} CPUs, {}, load average {:.2}",
        r.machine.nproc, r.machine.cpu_model, r.machine.load_average
    );
    out
}
