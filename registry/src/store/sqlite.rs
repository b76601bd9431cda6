//! The SQLite [`Store`]: one file in WAL mode, one connection used from `spawn_blocking`.
//!
//! Migrations live in `registry/migrations/*.sql`, are compiled in, and are applied at open in
//! order; `schema_version` records the last one applied.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferry_registry_client::{CredentialType, DeviceId, TenantId};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use serde_json::{Map, Value};

use super::{CredentialRecord, DeviceRecord, Expected, Store, StoreError, TenantRecord, Versioned};

/// Compiled-in migrations, in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/0001_init.sql")];

/// SQLite storage.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Maps constraint violations to `Conflict` with a text naming what is duplicated.
fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e
        && f.code == ErrorCode::ConstraintViolation
    {
        let what = if msg.contains("tenant_ca_subjects") {
            "the trusted CA subject DN is already used by another tenant"
        } else if msg.contains("tenants.alias") {
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
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` in a transaction on a blocking thread.
    async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| backend("database connection poisoned"))?;
            let tx = conn.transaction().map_err(backend)?;
            let out = f(&tx)?;
            tx.commit().map_err(map_err)?;
            Ok(out)
        })
        .await
        .map_err(backend)?
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

fn read_tenant(
    tx: &Transaction<'_>,
    clause: &str,
    key: &str,
) -> Result<Option<Versioned<TenantRecord>>, StoreError> {
    let sql = format!("SELECT id, version, alias, doc FROM tenants WHERE {clause}");
    let row = tx
        .query_row(&sql, [key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .optional()
        .map_err(backend)?;
    let Some((id, version, alias, doc)) = row else {
        return Ok(None);
    };
    let mut stmt = tx
        .prepare_cached("SELECT subject_dn FROM tenant_ca_subjects WHERE tenant_id = ?1")
        .map_err(backend)?;
    let ca_subjects = stmt
        .query_map([&id], |r| r.get(0))
        .map_err(backend)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(backend)?;
    Ok(Some(Versioned {
        version,
        value: TenantRecord {
            id: TenantId::parse(&id).map_err(backend)?,
            alias,
            ca_subjects,
            doc: to_map(&doc)?,
        },
    }))
}

fn write_ca_subjects(tx: &Transaction<'_>, tenant: &TenantRecord) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM tenant_ca_subjects WHERE tenant_id = ?1",
        [tenant.id.as_str()],
    )
    .map_err(backend)?;
    for dn in &tenant.ca_subjects {
        tx.execute(
            "INSERT INTO tenant_ca_subjects (subject_dn, tenant_id) VALUES (?1, ?2)",
            params![dn, tenant.id.as_str()],
        )
        .map_err(map_err)?;
    }
    Ok(())
}

fn insert_credentials(
    tx: &Transaction<'_>,
    tenant: &str,
    device: &str,
    credentials: &[CredentialRecord],
) -> Result<(), StoreError> {
    for c in credentials {
        tx.execute(
            "INSERT INTO credentials (tenant_id, device_id, type, auth_id, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant, device, c.credential_type.as_str(), c.auth_id, Value::Object(c.doc.clone()).to_string()],
        )
        .map_err(map_err)?;
    }
    Ok(())
}

fn credential_record(
    kind: &str,
    auth_id: String,
    doc: &str,
) -> Result<CredentialRecord, StoreError> {
    Ok(CredentialRecord {
        credential_type: CredentialType::parse(kind)
            .ok_or_else(|| backend(format!("stored unknown credential type {kind}")))?,
        auth_id,
        doc: to_map(doc)?,
    })
}

fn device_version(
    tx: &Transaction<'_>,
    t: &str,
    d: &str,
    column: &str,
) -> Result<Option<String>, StoreError> {
    let sql = format!("SELECT {column} FROM devices WHERE tenant_id = ?1 AND device_id = ?2");
    tx.query_row(&sql, [t, d], |r| r.get(0))
        .optional()
        .map_err(backend)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, tenant: TenantRecord) -> Result<String, StoreError> {
        self.tx(move |tx| {
            let version = new_version();
            tx.execute(
                "INSERT INTO tenants (id, version, alias, doc) VALUES (?1, ?2, ?3, ?4)",
                params![
                    tenant.id.as_str(),
                    version,
                    tenant.alias,
                    Value::Object(tenant.doc.clone()).to_string()
                ],
            )
            .map_err(map_err)?;
            write_ca_subjects(tx, &tenant)?;
            Ok(version)
        })
        .await
    }

    async fn get_tenant(
        &self,
        id: &TenantId,
    ) -> Result<Option<Versioned<TenantRecord>>, StoreError> {
        let id = id.to_string();
        self.tx(move |tx| read_tenant(tx, "id = ?1", &id)).await
    }

    async fn find_tenant_by_alias(
        &self,
        alias: &str,
    ) -> Result<Option<Versioned<TenantRecord>>, StoreError> {
        let alias = alias.to_owned();
        self.tx(move |tx| read_tenant(tx, "alias = ?1", &alias))
            .await
    }

    async fn find_tenant_by_ca(
        &self,
        subject_dn: &str,
    ) -> Result<Option<Versioned<TenantRecord>>, StoreError> {
        let dn = subject_dn.to_owned();
        self.tx(move |tx| {
            read_tenant(
                tx,
                "id = (SELECT tenant_id FROM tenant_ca_subjects WHERE subject_dn = ?1)",
                &dn,
            )
        })
        .await
    }

    async fn update_tenant(
        &self,
        tenant: TenantRecord,
        expected: Expected,
    ) -> Result<String, StoreError> {
        self.tx(move |tx| {
            let current = tx
                .query_row(
                    "SELECT version FROM tenants WHERE id = ?1",
                    [tenant.id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            check_version(current, &expected)?;
            let version = new_version();
            tx.execute(
                "UPDATE tenants SET version = ?2, alias = ?3, doc = ?4 WHERE id = ?1",
                params![
                    tenant.id.as_str(),
                    version,
                    tenant.alias,
                    Value::Object(tenant.doc.clone()).to_string()
                ],
            )
            .map_err(map_err)?;
            write_ca_subjects(tx, &tenant)?;
            Ok(version)
        })
        .await
    }

    async fn delete_tenant(&self, id: &TenantId, expected: Expected) -> Result<(), StoreError> {
        let id = id.to_string();
        self.tx(move |tx| {
            let current = tx
                .query_row("SELECT version FROM tenants WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)?;
            check_version(current, &expected)?;
            tx.execute("DELETE FROM tenants WHERE id = ?1", [&id])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<Versioned<TenantRecord>>, StoreError> {
        self.tx(|tx| {
            let ids = {
                let mut stmt = tx
                    .prepare("SELECT id FROM tenants ORDER BY id")
                    .map_err(backend)?;
                stmt.query_map([], |r| r.get::<_, String>(0))
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(read_tenant(tx, "id = ?1", &id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn create_device(
        &self,
        tenant: &TenantId,
        device: DeviceRecord,
        credentials: Vec<CredentialRecord>,
        max_devices: Option<u64>,
    ) -> Result<String, StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM tenants WHERE id = ?1", [&t], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            exists.ok_or(StoreError::NotFound)?;
            if let Some(max) = max_devices {
                let count: i64 = tx
                    .query_row("SELECT COUNT(*) FROM devices WHERE tenant_id = ?1", [&t], |r| r.get(0))
                    .map_err(backend)?;
                if u64::try_from(count).unwrap_or(u64::MAX) >= max {
                    return Err(StoreError::LimitExceeded(format!(
                        "the tenant's registration limit of {max} devices is reached"
                    )));
                }
            }
            let version = new_version();
            tx.execute(
                "INSERT INTO devices (tenant_id, device_id, version, credentials_version, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t, device.id.as_str(), version, new_version(), Value::Object(device.doc.clone()).to_string()],
            )
            .map_err(map_err)?;
            insert_credentials(tx, &t, device.id.as_str(), &credentials)?;
            Ok(version)
        })
        .await
    }

    async fn get_device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<Versioned<DeviceRecord>>, StoreError> {
        let (t, d) = (tenant.to_string(), device.clone());
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT version, doc FROM devices WHERE tenant_id = ?1 AND device_id = ?2",
                    [&t, d.as_str()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(backend)?;
            row.map(|(version, doc)| {
                Ok(Versioned {
                    version,
                    value: DeviceRecord {
                        id: d.clone(),
                        doc: to_map(&doc)?,
                    },
                })
            })
            .transpose()
        })
        .await
    }

    async fn update_device(
        &self,
        tenant: &TenantId,
        device: DeviceRecord,
        expected: Expected,
    ) -> Result<String, StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| {
            check_version(
                device_version(tx, &t, device.id.as_str(), "version")?,
                &expected,
            )?;
            let version = new_version();
            tx.execute(
                "UPDATE devices SET version = ?3, doc = ?4 WHERE tenant_id = ?1 AND device_id = ?2",
                params![
                    t,
                    device.id.as_str(),
                    version,
                    Value::Object(device.doc.clone()).to_string()
                ],
            )
            .map_err(map_err)?;
            Ok(version)
        })
        .await
    }

    async fn delete_device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        expected: Expected,
    ) -> Result<(), StoreError> {
        let (t, d) = (tenant.to_string(), device.to_string());
        self.tx(move |tx| {
            check_version(device_version(tx, &t, &d, "version")?, &expected)?;
            tx.execute(
                "DELETE FROM devices WHERE tenant_id = ?1 AND device_id = ?2",
                [&t, &d],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_all_devices(&self, tenant: &TenantId) -> Result<(), StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM tenants WHERE id = ?1", [&t], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            exists.ok_or(StoreError::NotFound)?;
            tx.execute("DELETE FROM devices WHERE tenant_id = ?1", [&t])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn list_devices(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<Versioned<DeviceRecord>>, StoreError> {
        let t = tenant.to_string();
        self.tx(move |tx| {
            let mut stmt = tx
                .prepare("SELECT device_id, version, doc FROM devices WHERE tenant_id = ?1 ORDER BY device_id")
                .map_err(backend)?;
            let rows = stmt
                .query_map([&t], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(id, version, doc)| {
                    Ok(Versioned {
                        version,
                        value: DeviceRecord { id: DeviceId::parse(&id).map_err(backend)?, doc: to_map(&doc)? },
                    })
                })
                .collect()
        })
        .await
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<Versioned<Vec<CredentialRecord>>>, StoreError> {
        let (t, d) = (tenant.to_string(), device.to_string());
        self.tx(move |tx| {
            let Some(version) = device_version(tx, &t, &d, "credentials_version")? else {
                return Ok(None);
            };
            let mut stmt = tx
                .prepare("SELECT type, auth_id, doc FROM credentials WHERE tenant_id = ?1 AND device_id = ?2 ORDER BY type, auth_id")
                .map_err(backend)?;
            let rows = stmt
                .query_map([&t, &d], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            let value = rows
                .into_iter()
                .map(|(kind, auth_id, doc)| credential_record(&kind, auth_id, &doc))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Versioned { version, value }))
        })
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
        self.tx(move |tx| {
            check_version(device_version(tx, &t, &d, "credentials_version")?, &expected)?;
            tx.execute("DELETE FROM credentials WHERE tenant_id = ?1 AND device_id = ?2", [&t, &d])
                .map_err(backend)?;
            insert_credentials(tx, &t, &d, &credentials)?;
            let version = new_version();
            tx.execute(
                "UPDATE devices SET credentials_version = ?3 WHERE tenant_id = ?1 AND device_id = ?2",
                params![t, d, version],
            )
            .map_err(backend)?;
            Ok(version)
        })
        .await
    }

    async fn find_credentials(
        &self,
        tenant: &TenantId,
        credential_type: CredentialType,
        auth_id: &str,
    ) -> Result<Option<(DeviceId, CredentialRecord)>, StoreError> {
        let (t, a) = (tenant.to_string(), auth_id.to_owned());
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT device_id, doc FROM credentials WHERE tenant_id = ?1 AND type = ?2 AND auth_id = ?3",
                    [&t, credential_type.as_str(), &a],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(backend)?;
            row.map(|(device, doc)| {
                Ok((
                    DeviceId::parse(&device).map_err(backend)?,
                    credential_record(credential_type.as_str(), a.clone(), &doc)?,
                ))
            })
            .transpose()
        })
        .await
    }
}
