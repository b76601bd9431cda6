//! Device rows and their credentials.

use ferry_registry_client::{CredentialType, DeviceId};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::{backend, check_version, map_err, new_version, tenants, to_map};
use crate::store::{CredentialRecord, DeviceRecord, Expected, StoreError, Versioned};

/// The device's `version` or `credentials_version`.
fn version(
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

fn insert_credentials(
    tx: &Transaction<'_>,
    t: &str,
    d: &str,
    credentials: &[CredentialRecord],
) -> Result<(), StoreError> {
    for c in credentials {
        tx.execute(
            "INSERT INTO credentials (tenant_id, device_id, type, auth_id, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t, d, c.credential_type.as_str(), c.auth_id, Value::Object(c.doc.clone()).to_string()],
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

pub(super) fn create(
    tx: &Transaction<'_>,
    t: &str,
    device: &DeviceRecord,
    credentials: &[CredentialRecord],
    max_devices: Option<u64>,
) -> Result<String, StoreError> {
    if !tenants::exists(tx, t)? {
        return Err(StoreError::NotFound);
    }
    if let Some(max) = max_devices {
        let count: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM devices WHERE tenant_id = ?1",
                [t],
                |r| r.get(0),
            )
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
    insert_credentials(tx, t, device.id.as_str(), credentials)?;
    Ok(version)
}

pub(super) fn read(
    tx: &Transaction<'_>,
    t: &str,
    d: &DeviceId,
) -> Result<Option<Versioned<DeviceRecord>>, StoreError> {
    let row = tx
        .query_row(
            "SELECT version, doc FROM devices WHERE tenant_id = ?1 AND device_id = ?2",
            [t, d.as_str()],
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
}

pub(super) fn update(
    tx: &Transaction<'_>,
    t: &str,
    device: &DeviceRecord,
    expected: &Expected,
) -> Result<String, StoreError> {
    check_version(version(tx, t, device.id.as_str(), "version")?, expected)?;
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
}

pub(super) fn delete(
    tx: &Transaction<'_>,
    t: &str,
    d: &str,
    expected: &Expected,
) -> Result<(), StoreError> {
    check_version(version(tx, t, d, "version")?, expected)?;
    tx.execute(
        "DELETE FROM devices WHERE tenant_id = ?1 AND device_id = ?2",
        [t, d],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn delete_all(tx: &Transaction<'_>, t: &str) -> Result<(), StoreError> {
    if !tenants::exists(tx, t)? {
        return Err(StoreError::NotFound);
    }
    tx.execute("DELETE FROM devices WHERE tenant_id = ?1", [t])
        .map_err(backend)?;
    Ok(())
}

pub(super) fn list(
    tx: &Transaction<'_>,
    t: &str,
) -> Result<Vec<Versioned<DeviceRecord>>, StoreError> {
    let mut stmt = tx
        .prepare(
            "SELECT device_id, version, doc FROM devices WHERE tenant_id = ?1 ORDER BY device_id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([t], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    rows.into_iter()
        .map(|(id, version, doc)| {
            Ok(Versioned {
                version,
                value: DeviceRecord {
                    id: DeviceId::parse(&id).map_err(backend)?,
                    doc: to_map(&doc)?,
                },
            })
        })
        .collect()
}

/// Members of any group in `groups` (a JSON array of strings), using SQLite's JSON functions.
pub(super) fn group_members(
    tx: &Transaction<'_>,
    t: &str,
    groups: &str,
) -> Result<Vec<DeviceId>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT DISTINCT d.device_id FROM devices d, json_each(d.doc, '$.memberOf') g \
             WHERE d.tenant_id = ?1 AND g.value IN (SELECT value FROM json_each(?2)) \
             ORDER BY d.device_id",
        )
        .map_err(backend)?;
    let ids = stmt
        .query_map([t, groups], |r| r.get::<_, String>(0))
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    ids.iter()
        .map(|id| DeviceId::parse(id).map_err(backend))
        .collect()
}

pub(super) fn read_credentials(
    tx: &Transaction<'_>,
    t: &str,
    d: &str,
) -> Result<Option<Versioned<Vec<CredentialRecord>>>, StoreError> {
    let Some(version) = version(tx, t, d, "credentials_version")? else {
        return Ok(None);
    };
    let mut stmt = tx
        .prepare("SELECT type, auth_id, doc FROM credentials WHERE tenant_id = ?1 AND device_id = ?2 ORDER BY type, auth_id")
        .map_err(backend)?;
    let rows = stmt
        .query_map([t, d], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    let value = rows
        .into_iter()
        .map(|(kind, auth_id, doc)| credential_record(&kind, auth_id, &doc))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Versioned { version, value }))
}

pub(super) fn set_credentials(
    tx: &Transaction<'_>,
    t: &str,
    d: &str,
    credentials: &[CredentialRecord],
    expected: &Expected,
) -> Result<String, StoreError> {
    check_version(version(tx, t, d, "credentials_version")?, expected)?;
    tx.execute(
        "DELETE FROM credentials WHERE tenant_id = ?1 AND device_id = ?2",
        [t, d],
    )
    .map_err(backend)?;
    insert_credentials(tx, t, d, credentials)?;
    let version = new_version();
    tx.execute(
        "UPDATE devices SET credentials_version = ?3 WHERE tenant_id = ?1 AND device_id = ?2",
        params![t, d, version],
    )
    .map_err(backend)?;
    Ok(version)
}

pub(super) fn find_credentials(
    tx: &Transaction<'_>,
    t: &str,
    kind: CredentialType,
    auth_id: &str,
) -> Result<Option<(DeviceId, CredentialRecord)>, StoreError> {
    let row = tx
        .query_row(
            "SELECT device_id, doc FROM credentials WHERE tenant_id = ?1 AND type = ?2 AND auth_id = ?3",
            [t, kind.as_str(), auth_id],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()
        .map_err(backend)?;
    row.map(|(device, doc)| {
        Ok((
            DeviceId::parse(&device).map_err(backend)?,
            credential_record(kind.as_str(), auth_id.to_owned(), &doc)?,
        ))
    })
    .transpose()
}
