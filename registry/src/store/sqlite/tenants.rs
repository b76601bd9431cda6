//! Tenant rows: the document, its alias and the CA subject DNs it owns.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::{backend, check_version, map_err, new_version, to_map};
use crate::store::{Expected, StoreError, TenantRecord, Versioned};

/// Reads the tenant selected by `clause` (with one parameter `?1`).
pub(super) fn read(
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
            id: id.parse().map_err(backend)?,
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

fn current_version(tx: &Transaction<'_>, id: &str) -> Result<Option<String>, StoreError> {
    tx.query_row("SELECT version FROM tenants WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()
    .map_err(backend)
}

/// Whether the tenant exists.
pub(super) fn exists(tx: &Transaction<'_>, id: &str) -> Result<bool, StoreError> {
    Ok(current_version(tx, id)?.is_some())
}

pub(super) fn create(tx: &Transaction<'_>, tenant: &TenantRecord) -> Result<String, StoreError> {
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
    write_ca_subjects(tx, tenant)?;
    Ok(version)
}

pub(super) fn update(
    tx: &Transaction<'_>,
    tenant: &TenantRecord,
    expected: &Expected,
) -> Result<String, StoreError> {
    check_version(current_version(tx, tenant.id.as_str())?, expected)?;
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
    write_ca_subjects(tx, tenant)?;
    Ok(version)
}

pub(super) fn delete(
    tx: &Transaction<'_>,
    id: &str,
    expected: &Expected,
) -> Result<(), StoreError> {
    check_version(current_version(tx, id)?, expected)?;
    tx.execute("DELETE FROM tenants WHERE id = ?1", [id])
        .map_err(backend)?;
    Ok(())
}

pub(super) fn list(tx: &Transaction<'_>) -> Result<Vec<Versioned<TenantRecord>>, StoreError> {
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
        out.extend(read(tx, "id = ?1", &id)?);
    }
    Ok(out)
}
