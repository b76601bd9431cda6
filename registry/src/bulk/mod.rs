//! Bulk pre-connect provisioning (`/v1/provisioning/{tenant}/bulk`): one CSV or JSON-lines file
//! creates many devices with their credentials. Every row succeeds or fails on its own, with its
//! row number and a reason; the file runs as a job whose status can be read while it runs.
//!
//! Rows are checked on the blocking pool (certificate parsing, password hashing) and written in
//! batches of [`BATCH`] rows per store transaction, each row inside its own savepoint.
//! Passwords are stored as salted SHA-512 (a Hono `hashed-password` format): bcrypt at a safe cost
//! would take minutes for ten thousand rows. Set bcrypt hashes later through the credentials API
//! where that matters.

pub mod rows;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use ferry_registry_client::{DeviceId, RegistryChange, TenantId};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::Registry;
use crate::error::ManageError;
use crate::model::{credentials, device, new_id, tenant};
use crate::store::{CredentialRecord, DeviceRecord};
use rows::{Numbered, Row};

/// Rows per store transaction.
pub const BATCH: usize = 500;
/// Up to this many devices created in one batch are announced one by one.
const PER_DEVICE_CHANGES: usize = 16;
/// Finished jobs kept for their status endpoint.
const KEPT_JOBS: usize = 100;

/// The progress and outcome of one bulk job.
#[derive(Clone, Debug, Default)]
pub(crate) struct JobStatus {
    tenant: Option<TenantId>,
    total: usize,
    processed: usize,
    created: usize,
    failures: Vec<(usize, String)>,
    done: bool,
}

impl JobStatus {
    /// The status document.
    pub(crate) fn to_json(&self, id: &str) -> Value {
        json!({
            "id": id,
            "status": if self.done { "done" } else { "running" },
            "total": self.total,
            "processed": self.processed,
            "created": self.created,
            "failed": self.failures.len(),
            "failures": self.failures.iter().map(|(row, reason)| json!({"row": row, "reason": reason})).collect::<Vec<_>>(),
        })
    }
}

/// A job's shared status.
type Job = Arc<Mutex<JobStatus>>;

/// Jobs by id, and their ids oldest first.
#[derive(Default)]
pub(crate) struct Jobs(Mutex<(HashMap<String, Job>, VecDeque<String>)>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Jobs {
    fn add(&self, id: &str, job: Job) {
        let mut jobs = lock(&self.0);
        jobs.0.insert(id.to_owned(), job);
        jobs.1.push_back(id.to_owned());
        while jobs.1.len() > KEPT_JOBS {
            let Some(oldest) = jobs.1.front().cloned() else {
                break;
            };
            if jobs.0.get(&oldest).is_some_and(|j| !lock(j).done) {
                break;
            }
            jobs.1.pop_front();
            jobs.0.remove(&oldest);
        }
    }

    fn get(&self, id: &str) -> Option<Job> {
        lock(&self.0).0.get(id).cloned()
    }
}

/// The format of a bulk file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

fn salted_sha512(password: &str) -> Result<Value, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "no randomness".to_owned())?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    ctx.update(&salt);
    ctx.update(password.as_bytes());
    Ok(json!({
        "pwd-hash": STANDARD.encode(ctx.finish()),
        "salt": STANDARD.encode(salt),
        "hash-function": "sha-512",
    }))
}

/// Turns one row into the device and its credentials (CPU only; no store access).
fn prepare_row(row: Row) -> Result<(DeviceRecord, Vec<CredentialRecord>), String> {
    let id = DeviceId::parse(&row.device_id).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    if let Some(pem) = &row.certificate {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("certificate: {e}"))?;
        entries.push(json!({"type": "x509-cert", "secrets": [{"cert": STANDARD.encode(der)}]}));
    }
    if let Some(password) = &row.password {
        entries.push(json!({"type": "hashed-password", "auth-id": id.as_str(), "secrets": [salted_sha512(password)?]}));
    }
    if let Some(psk) = &row.psk {
        entries.push(json!({"type": "psk", "auth-id": id.as_str(), "secrets": [{"key": psk}]}));
    }
    if entries.is_empty() {
        return Err("the row has no certificate, password or psk".to_owned());
    }
    let credentials =
        credentials::prepare(Value::Array(entries), &[], 4).map_err(|e| e.to_string())?;
    let doc = device::prepare(json!({}), None, None, Utc::now()).map_err(|e| e.to_string())?;
    Ok((DeviceRecord { id, doc }, credentials))
}

impl Registry {
    /// Parses `body` and starts a job creating its rows in `tenant`; returns the job id and the
    /// task, which ends when the job is done.
    pub(crate) async fn start_bulk(
        &self,
        tenant: &TenantId,
        format: Format,
        body: String,
    ) -> Result<(String, tokio::task::JoinHandle<()>), ManageError> {
        let tenant_doc = self
            .store()
            .get_tenant(tenant)
            .await?
            .ok_or(ManageError::NotFound)?
            .value
            .doc;
        let parsed = tokio::task::spawn_blocking(move || match format {
            Format::Csv => rows::parse_csv(&body),
            Format::JsonLines => Ok(rows::parse_json_lines(&body)),
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?
        .map_err(|e| ManageError::BadRequest(e.0))?;
        let id = new_id();
        let job = Arc::new(Mutex::new(JobStatus {
            tenant: Some(tenant.clone()),
            total: parsed.len(),
            ..JobStatus::default()
        }));
        self.inner.jobs.add(&id, Arc::clone(&job));
        tracing::info!(%tenant, job = %id, rows = parsed.len(), "bulk provisioning started");
        let registry = self.clone();
        let tenant = tenant.clone();
        let max_devices = tenant::max_devices(&tenant_doc);
        let task = tokio::spawn(async move {
            registry.run_bulk(&tenant, parsed, max_devices, &job).await;
            let mut status = lock(&job);
            status.done = true;
            tracing::info!(%tenant, created = status.created, failed = status.failures.len(), "bulk provisioning finished");
        });
        Ok((id, task))
    }

    async fn run_bulk(
        &self,
        tenant: &TenantId,
        rows: Vec<Numbered>,
        max_devices: Option<u64>,
        job: &Mutex<JobStatus>,
    ) {
        let mut rows = rows.into_iter();
        loop {
            let batch: Vec<Numbered> = rows.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                return;
            }
            let count = batch.len();
            let prepared = match tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|(n, row)| (n, row.and_then(prepare_row)))
                    .collect::<Vec<_>>()
            })
            .await
            {
                Ok(prepared) => prepared,
                Err(e) => {
                    lock(job).failures.push((0, format!("internal error: {e}")));
                    return;
                }
            };
            let mut numbers = Vec::new();
            let mut records = Vec::new();
            let mut failures = Vec::new();
            for (n, outcome) in prepared {
                match outcome {
                    Ok(record) => {
                        numbers.push(n);
                        records.push(record);
                    }
                    Err(reason) => failures.push((n, reason)),
                }
            }
            let ids: Vec<DeviceId> = records.iter().map(|(d, _)| d.id.clone()).collect();
            let outcomes = match self
                .store()
                .create_devices(tenant, records, max_devices)
                .await
            {
                Ok(outcomes) => outcomes,
                Err(e) => numbers.iter().map(|_| Err(e.clone())).collect::<Vec<_>>(),
            };
            let mut created = Vec::new();
            for ((n, id), outcome) in numbers.into_iter().zip(ids).zip(outcomes) {
                match outcome {
                    Ok(_) => created.push(id),
                    Err(e) => failures.push((n, ManageError::from(e).to_string())),
                }
            }
            // Caches may hold "not found" for the new devices. Many devices at once are
            // announced as one tenant change (a few cache scans instead of one per device).
            let changes: Vec<RegistryChange> = if created.len() > PER_DEVICE_CHANGES {
                vec![RegistryChange::Tenant {
                    tenant_id: tenant.clone(),
                }]
            } else {
                created
                    .iter()
                    .map(|d| RegistryChange::Device {
                        tenant_id: tenant.clone(),
                        device_id: d.clone(),
                    })
                    .collect()
            };
            self.notify(&changes);
            let mut status = lock(job);
            status.processed += count;
            status.created += created.len();
            failures.sort_by_key(|(n, _)| *n);
            status.failures.extend(failures);
        }
    }

    /// The status of a bulk job of `tenant`.
    pub(crate) fn bulk_status(&self, tenant: &TenantId, id: &str) -> Option<JobStatus> {
        let job = self.inner.jobs.get(id)?;
        let status = lock(&job).clone();
        (status.tenant.as_ref() == Some(tenant)).then_some(status)
    }
}
