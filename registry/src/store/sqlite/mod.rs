//! The SQLite [`Store`]: one file in WAL mode, one connection owned by a database thread.
//!
//! Every operation is a closure run in its own transaction on that thread, one after the other:
//! callers queue as tasks and the thread takes the next closure as soon as it committed the last,
//! so a storm of first connections neither parks blocking threads on a lock nor waits for task
//! hand-offs between transactions.
//!
//! Migrations live in `registry/migrations/*.sql`, are compiled in, and are applied at open in
//! order; `schema_version` records the last one applied.

use std::path::Path;

use async_trait::async_trait;
use ferry_registry_client::{CredentialType, DeviceId, TenantId};
use rusqlite::{Connection, ErrorCode, Transaction};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

mod devices;
mod tenants;

use super::{
    CredentialRecord, DeviceRecord, Expected, Store, StoreError, TenantCaRecord, TenantRecord,
    Versioned,
};

/// Compiled-in migrations, in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_init.sql"),
    include_str!("../../../migrations/0002_tenant_cas.sql"),
    include_str!("../../../migrations/0003_claims_and_anchor_groups.sql"),
];

/// Closures waiting for the database thread; a full queue makes callers wait.
const QUEUE: usize = 1024;

/// One closure for the database thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// SQLite storage. Clones share the database thread, which ends with the last clone.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Maps constraint violations to `Conflict` with a text naming what is duplicated.
fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e
        && f.code == ErrorCode::ConstraintViolation
    {
        let what = if msg.contains("tenants.alias") {
            "the alias is already used by another tenant"
        } else if msg.contains("credentials") {
            "a credential with this type and auth-id already exists"
        } else if msg.contains("devices") {
            "a device with this id already exists"
        } else if msg.contains("tenants") {
            "a tenant with this id already exists"
        } else {
            "constraint violated"
        };
        return StoreError::Conflict(what.to_owned());
    }
    backend(e)
}

fn new_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn to_map(text: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text).map_err(backend)
}

fn check_version(current: Option<String>, expected: &Expected) -> Result<(), StoreError> {
    let current = current.ok_or(StoreError::NotFound)?;
    match expected {
        Some(e) if *e != current => Err(StoreError::PreconditionFailed),
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its parent directory, and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let mut conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        migrate(&mut conn)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("ferry-registry-db".to_owned())
            .spawn(move || serve(conn, queue))
            .map_err(backend)?;
        Ok(Self { jobs })
    }

    /// Runs `f` in a transaction on the database thread.
    async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = conn.transaction().map_err(backend).and_then(|tx| {
                let out = f(&tx)?;
                tx.commit().map_err(map_err)?;
                Ok(out)
            });
            let _ = reply.send(outcome);
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| backend("the database thread has stopped"))?;
        answer
            .await
            .map_err(|_| backend("the database operation did not complete"))?
    }
}

/// The database thread: runs queued closures until every [`SqliteStore`] clone is gone. A closure
/// that panics loses only its own answer (its caller sees an error); the thread goes on.
fn serve(mut conn: Connection, mut queue: mpsc::Receiver<Job>) {
    while let Some(job) = queue.blocking_recv() {
        let run = std::panic::AssertUnwindSafe(|| job(&mut conn));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!(
                "a registry database operation panicked; its transaction was rolled back"
            );
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")
        .map_err(backend)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if usize::try_from(current).unwrap_or(usize::MAX) > MIGRATIONS.len() {
        return Err(backend(format!(
            "database schema version {current} is newer than this Ferry knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i + 1).map_err(backend)?;
        if version > current {
            tx.execute_batch(sql).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )
            .map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, tenant: TenantRecord) -> Result<String, StoreError> {
        self.tx(move |tx| tenants::create(tx, &tenant)).await
    }

    async fn get_tenant(
        &self,
        id: &TenantId,
    ) -> Result<Option<Versioned<TenantRecord>>, StoreError> {
        let id = id.to_string();
        self.tx(move |tx| tenants::read(tx, "id = ?1", &id)).await
    }

    async fn find_tenant_by_alias(
        &self,
        alias: &str,
    ) -> Result<Option<Versioned<TenantRecord>>, StoreError> {
        let alias = alias.to_owned();
        self.tx(move |tx| tenants::read(tx, "alias = ?1", &alias))
            .await
    }

    async fn find_tenants_by_ca(
        &self,
        subject_dn: &str,
    ) -> Result<Vec<Versioned<TenantRecord>>, StoreError> {
        let dn = subject_dn.to_owned();
        self.tx(move |tx| tenants::by_ca(tx, &dn)).await
    }

    async fn update_tenant(
        &self,
        tenant: TenantRecord,
        expected: Expected,
    ) -> Result<String, StoreError> {
        self.tx(move |tx| tenants::update(tx, &tenant, &expected))
            .await
    }

    async fn delete_tenant(&self, id: &TenantId, expected: Expected) -> Result<(), StoreError> {
        let id = id.to_string();
        self.tx(move |tx| tenants::delete(tx, &id, &expected)).await
    }

    async fn list_tenants(&self) -> Result<Vec<Versioned<TenantRecord>>, StoreError> {
        self.tx(tenants::list).await
    }

    async fn create_device(
        &self,
        tenant: &TenantId,
        device: DeviceRecord,
        credentials: Vec<CredentialRecord>,
        max_devices: Option<u64>,
    ) -> Result<String, StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| devices::create(tx, &t, &device, &credentials, max_devices))
            .await
    }

    async fn get_device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<Versioned<DeviceRecord>>, StoreError> {
        let (t, d) = (tenant.to_string(), device.clone());
        self.tx(move |tx| devices::read(tx, &t, &d)).await
    }

    async fn update_device(
        &self,
        tenant: &TenantId,
        device: DeviceRecord,
        expected: Expected,
    ) -> Result<String, StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| devices::update(tx, &t, &device, &expected))
            .await
    }

    async fn delete_device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        expected: Expected,
    ) -> Result<(), StoreError> {
        let (t, d) = (tenant.to_string(), device.to_string());
        self.tx(move |tx| devices::delete(tx, &t, &d, &expected))
            .await
    }

    async fn delete_all_devices(&self, tenant: &TenantId) -> Result<(), StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| devices::delete_all(tx, &t)).await
    }

    async fn list_devices(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<Versioned<DeviceRecord>>, StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| devices::list(tx, &t)).await
    }

    async fn group_members(
        &self,
        tenant: &TenantId,
        groups: &[String],
    ) -> Result<Vec<DeviceId>, StoreError> {
        let (t, groups) = (tenant.to_string(), Value::from(groups.to_vec()).to_string());
        self.tx(move |tx| devices::group_members(tx, &t, &groups))
            .await
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<Versioned<Vec<CredentialRecord>>>, StoreError> {
        let (t, d) = (tenant.to_string(), device.to_string());
        self.tx(move |tx| devices::read_credentials(tx, &t, &d))
            .await
    }

    async fn set_credentials(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        credentials: Vec<CredentialRecord>,
        expected: Expected,
    ) -> Result<String, StoreError> {
        let (t, d) = (tenant.to_string(), device.to_string());
        self.tx(move |tx| devices::set_credentials(tx, &t, &d, &credentials, &expected))
            .await
    }

    async fn find_credentials(
        &self,
        tenant: &TenantId,
        credential_type: CredentialType,
        auth_id: &str,
    ) -> Result<Option<(DeviceId, CredentialRecord)>, StoreError> {
        let (t, a) = (tenant.to_string(), auth_id.to_owned());
        self.tx(move |tx| devices::find_credentials(tx, &t, credential_type, &a))
            .await
    }

    async fn put_tenant_ca(&self, tenant: &TenantId, ca: TenantCaRecord) -> Result<(), StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| {
            if !tenants::exists(tx, &t)? {
                return Err(StoreError::NotFound);
            }
            tx.execute(
                "INSERT INTO tenant_cas (tenant_id, ca_id, cert, sealed_key) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![t, ca.id, ca.cert, ca.sealed_key],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_tenant_ca(
        &self,
        tenant: &TenantId,
        ca_id: &str,
    ) -> Result<Option<TenantCaRecord>, StoreError> {
        let (t, id) = (tenant.to_string(), ca_id.to_owned());
        self.tx(move |tx| {
            use rusqlite::OptionalExtension;
            tx.query_row(
                "SELECT ca_id, cert, sealed_key FROM tenant_cas WHERE tenant_id = ?1 AND ca_id = ?2",
                [&t, &id],
                |r| {
                    Ok(TenantCaRecord {
                        id: r.get(0)?,
                        cert: r.get(1)?,
                        sealed_key: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn set_ownership_code(
        &self,
        tenant: &TenantId,
        subject_dn: &str,
        code_hash: &str,
    ) -> Result<(), StoreError> {
        let (t, dn, hash) = (
            tenant.to_string(),
            subject_dn.to_owned(),
            code_hash.to_owned(),
        );
        self.tx(move |tx| {
            if !tenants::exists(tx, &t)? {
                return Err(StoreError::NotFound);
            }
            tx.execute(
                "INSERT INTO ownership_codes (tenant_id, subject_dn, code_hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id, subject_dn) DO UPDATE SET code_hash = excluded.code_hash",
                [&t, &dn, &hash],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_ownership_code(
        &self,
        tenant: &TenantId,
        subject_dn: &str,
    ) -> Result<Option<String>, StoreError> {
        let (t, dn) = (tenant.to_string(), subject_dn.to_owned());
        self.tx(move |tx| {
            use rusqlite::OptionalExtension;
            tx.query_row(
                "SELECT code_hash FROM ownership_codes WHERE tenant_id = ?1 AND subject_dn = ?2",
                [&t, &dn],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn create_devices(
        &self,
        tenant: &TenantId,
        rows: Vec<(DeviceRecord, Vec<CredentialRecord>)>,
        max_devices: Option<u64>,
    ) -> Result<Vec<Result<String, StoreError>>, StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| {
            let mut out = Vec::with_capacity(rows.len());
            for (device, credentials) in &rows {
                tx.execute_batch("SAVEPOINT bulk_row").map_err(backend)?;
                match devices::create(tx, &t, device, credentials, max_devices) {
                    Ok(version) => {
                        tx.execute_batch("RELEASE bulk_row").map_err(backend)?;
                        out.push(Ok(version));
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO bulk_row; RELEASE bulk_row")
                            .map_err(backend)?;
                        out.push(Err(e));
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_operation_fails_alone_and_the_store_goes_on()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("r.db"))?;
        let panicked: Result<(), StoreError> = store
            .tx(|tx| {
                tx.execute("CREATE TABLE scratch (x INTEGER)", [])
                    .map_err(backend)?;
                panic!("boom");
            })
            .await;
        assert!(matches!(panicked, Err(StoreError::Backend(_))));
        // The panicking transaction was rolled back, and the thread serves the next one.
        let tables: i64 = store
            .tx(|tx| {
                tx.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'scratch'",
                    [],
                    |row| row.get(0),
                )
                .map_err(backend)
            })
            .await?;
        assert_eq!(tables, 0);
        Ok(())
    }
}
