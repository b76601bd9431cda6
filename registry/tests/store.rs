//! The SQLite store: reopening, database-enforced uniqueness under concurrency, atomic
//! device-with-credentials creation (what auto-provisioning relies on).

use std::error::Error;
use std::sync::Arc;

use ferry_registry::store::sqlite::SqliteStore;
use ferry_registry::store::{CredentialRecord, DeviceRecord, Store, StoreError, TenantRecord};
use ferry_registry_client::{CredentialType, DeviceId, TenantId};
use serde_json::{Map, Value, json};

type TestResult = Result<(), Box<dyn Error>>;

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn tenant(id: &str) -> Result<TenantRecord, Box<dyn Error>> {
    Ok(TenantRecord {
        id: TenantId::parse(id)?,
        alias: None,
        ca_subjects: vec![format!("CN={id} CA")],
        trust_anchor_group: None,
        doc: map(json!({"enabled": true})),
    })
}

fn device(id: &str) -> Result<DeviceRecord, Box<dyn Error>> {
    Ok(DeviceRecord {
        id: DeviceId::parse(id)?,
        doc: Map::new(),
    })
}

fn x509(auth_id: &str) -> CredentialRecord {
    CredentialRecord {
        credential_type: CredentialType::X509Cert,
        auth_id: auth_id.to_owned(),
        doc: map(json!({"type": "x509-cert", "auth-id": auth_id, "secrets": [{}]})),
    }
}

#[tokio::test]
async fn data_survives_reopening_and_migrations_run_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a/b/registry.db");
    {
        let store = SqliteStore::open(&path)?;
        store.create_tenant(tenant("t")?).await?;
    }
    let store = SqliteStore::open(&path)?;
    let t = store
        .get_tenant(&TenantId::parse("t")?)
        .await?
        .ok_or("tenant lost")?;
    assert_eq!(t.value.ca_subjects, vec!["CN=t CA".to_owned()]);
    let by_ca = store.find_tenants_by_ca("CN=t CA").await?;
    assert_eq!(by_ca.len(), 1, "ca index lost");
    assert_eq!(by_ca[0].value.id.as_str(), "t");
    drop(store);
    // A database written by a newer Ferry is refused rather than misread.
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])?;
    drop(conn);
    assert!(SqliteStore::open(&path).is_err());
    Ok(())
}

#[tokio::test]
async fn concurrent_creates_of_one_device_make_exactly_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("r.db"))?);
    store.create_tenant(tenant("t")?).await?;
    let t = TenantId::parse("t")?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, t) = (Arc::clone(&store), t.clone());
        let d = device(if i % 2 == 0 { "same" } else { "also-same" })?;
        tasks.push(tokio::spawn(async move {
            store
                .create_device(&t, d, vec![x509("CN=one cert")], None)
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(ok, 1, "one certificate, one device");
    assert_eq!(store.list_devices(&t).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn device_and_credentials_are_created_atomically() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("r.db"))?;
    store.create_tenant(tenant("t")?).await?;
    let t = TenantId::parse("t")?;
    store
        .create_device(&t, device("d1")?, vec![x509("CN=dup")], None)
        .await?;
    let err = store
        .create_device(&t, device("d2")?, vec![x509("CN=dup")], None)
        .await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert!(
        store
            .get_device(&t, &DeviceId::parse("d2")?)
            .await?
            .is_none(),
        "rolled back"
    );
    let (owner, _) = store
        .find_credentials(&t, CredentialType::X509Cert, "CN=dup")
        .await?
        .ok_or("credential lost")?;
    assert_eq!(owner.as_str(), "d1");
    let err = store
        .create_device(&TenantId::parse("none")?, device("d")?, vec![], None)
        .await;
    assert_eq!(err, Err(StoreError::NotFound));
    Ok(())
}

#[tokio::test]
async fn a_version_2_database_keeps_its_ca_subjects_and_groups_after_migrating() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("registry.db");
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(include_str!("../migrations/0001_init.sql"))?;
        conn.execute_batch(include_str!("../migrations/0002_tenant_cas.sql"))?;
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES (1), (2);
             INSERT INTO tenants (id, version, doc)
                 VALUES ('old', 'v1', '{\"trust-anchor-group\": \"g\"}');
             INSERT INTO tenant_ca_subjects (subject_dn, tenant_id) VALUES ('CN=Old CA', 'old');",
        )?;
    }
    let store = SqliteStore::open(&path)?;
    let found = store.find_tenants_by_ca("CN=Old CA").await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].value.trust_anchor_group.as_deref(), Some("g"));
    // The migrated row carries the group: a tenant of the same group may share the DN.
    let mut shared = tenant("new")?;
    shared.ca_subjects = vec!["CN=Old CA".to_owned()];
    shared.trust_anchor_group = Some("g".to_owned());
    store.create_tenant(shared.clone()).await?;
    shared.id = TenantId::parse("other")?;
    shared.trust_anchor_group = None;
    assert!(matches!(
        store.create_tenant(shared).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.find_tenants_by_ca("CN=Old CA").await?.len(), 2);
    Ok(())
}
