//! Tenant rows: the document, its alias and the CA subject DNs it trusts.
//!
//! A CA subject DN may be trusted by several tenants only if they all share one non-empty
//! trust anchor group: [`write_ca_subjects`] checks that inside the writing transaction (the one
//! SQLite connection serializes writers, so the check cannot race).

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
    let doc = to_map(&doc)?;
    Ok(Some(Versioned {
        version,
        value: TenantRecord {
            id: id.parse().map_err(backend)?,
            alias,
            ca_subjects,
            trust_anchor_group: TenantRecord::anchor_group_of(&doc),
            doc,
        },
    }))
}

/// The tenants whose ids `sql` selects (one column) with `params`.
fn read_selected(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Versioned<TenantRecord>>, StoreError> {
    let ids = {
        let mut stmt = tx.prepare_cached(sql).map_err(backend)?;
        stmt.query_map(params, |r| r.get::<_, String>(0))
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

/// Every tenant trusting a CA with `subject_dn`.
pub(super) fn by_ca(
    tx: &Transaction<'_>,
    subject_dn: &str,
) -> Result<Vec<Versioned<TenantRecord>>, StoreError> {
    read_selected(
        tx,
        "SELECT tenant_id FROM tenant_ca_subjects WHERE subject_dn = ?1 ORDER BY tenant_id",
        [subject_dn],
    )
}

fn write_ca_subjects(tx: &Transaction<'_>, tenant: &TenantRecord) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM tenant_ca_subjects WHERE tenant_id = ?1",
        [tenant.id.as_str()],
    )
    .map_err(backend)?;
    let group = tenant.trust_anchor_group.as_deref().unwrap_or_default();
    for dn in &tenant.ca_subjects {
        // Another tenant with this DN outside our (non-empty) group makes it ambiguous.
        let clash: Option<String> = tx
            .query_row(
                "SELECT tenant_id FROM tenant_ca_subjects WHERE subject_dn = ?1 \
                 AND tenant_id <> ?2 AND (?3 = '' OR trust_anchor_group <> ?3) LIMIT 1",
                params![dn, tenant.id.as_str(), group],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        if let Some(other) = clash {
            return Err(StoreError::Conflict(format!(
                "the trusted CA subject DN {dn} is already used by tenant {other}, which is not \
                 in the same trust anchor group"
            )));
        }
        tx.execute(
            "INSERT INTO tenant_ca_subjects (subject_dn, tenant_id, trust_anchor_group) \
             VALUES (?1, ?2, ?3)",
            params![dn, tenant.id.as_str(), group],
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
    read_selected(tx, "SELECT id FROM tenants ORDER BY id", [])
}
