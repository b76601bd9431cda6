//! The durable event store: SQLite in WAL mode with `synchronous=FULL`, owned by one thread.
//!
//! An event is acknowledged to the device only after its insert was committed, so a returned `Ok`
//! survives a crash. All database work runs on a dedicated thread; commands that arrive while a
//! transaction is being written are batched into the next one, so concurrent inserts share a
//! single fsync. Ids grow monotonically (`AUTOINCREMENT`), which gives the delivery order.

use std::path::Path;

use bytes::Bytes;
use ferry_adapter_core::DownstreamMessage;
use ferry_registry_client::TenantId;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

/// Most commands written in one transaction.
const MAX_BATCH: usize = 512;

/// The event store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    /// A stored event could not be (de)serialized.
    #[error("stored event is malformed: {0}")]
    Codec(#[from] serde_json::Error),
    /// The store holds its maximum number of events.
    #[error("the event store is full ({0} events)")]
    Full(u64),
    /// A transaction failed; the message names the cause.
    #[error("the event store transaction failed: {0}")]
    Transaction(String),
    /// The store thread has stopped.
    #[error("the event store is closed")]
    Closed,
}

/// An event read back from the store.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    /// Store id (delivery order).
    pub id: i64,
    /// The message-id assigned when the event was stored; kept across redeliveries.
    pub message_id: String,
    /// The event.
    pub message: DownstreamMessage,
}

enum Command {
    Insert {
        message: DownstreamMessage,
        message_id: String,
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
    Delete {
        ids: Vec<i64>,
    },
    Load {
        tenant: TenantId,
        after: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>,
    },
}

/// Cheap-to-clone handle to the store thread.
#[derive(Clone, Debug)]
pub(crate) struct EventStore {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Insert { .. } => "Insert",
            Command::Delete { .. } => "Delete",
            Command::Load { .. } => "Load",
        })
    }
}

impl EventStore {
    /// Opens (creating if needed) the store at `path` and starts its thread.
    pub(crate) fn open(path: &Path, max_events: u64) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 tenant TEXT NOT NULL,
                 message_id TEXT NOT NULL,
                 meta TEXT NOT NULL,
                 payload BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS events_by_tenant ON events (tenant, id);",
        )?;
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let worker = Worker {
            conn,
            count: u64::try_from(count).unwrap_or(0),
            max_events,
        };
        std::thread::Builder::new()
            .name("ferry-event-store".into())
            .spawn(move || worker.run(rx))?;
        Ok(Self { tx })
    }

    /// Stores an event durably and returns its id.
    pub(crate) async fn insert(
        &self,
        message: DownstreamMessage,
        message_id: String,
    ) -> Result<i64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Insert {
                message,
                message_id,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes delivered events (fire and forget: a lost delete means a redelivery).
    pub(crate) async fn delete(&self, ids: Vec<i64>) {
        if !ids.is_empty() && self.tx.send(Command::Delete { ids }).await.is_err() {
            tracing::warn!("event store closed: delivered events stay stored");
        }
    }

    /// Loads up to `limit` events of `tenant` with an id greater than `after`, oldest first.
    pub(crate) async fn load(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Load {
                tenant: tenant.clone(),
                after,
                limit,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// An insert waiting for its transaction: the event, its message-id, and where to answer.
type PendingInsert = (
    DownstreamMessage,
    String,
    oneshot::Sender<Result<i64, StoreError>>,
);

struct Worker {
    conn: Connection,
    count: u64,
    max_events: u64,
}

impl Worker {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
        tracing::debug!("event store thread stopped");
    }

    fn process(&mut self, batch: Vec<Command>) {
        let mut inserts = Vec::new();
        let mut deletes = Vec::new();
        let mut loads = Vec::new();
        for command in batch {
            match command {
                Command::Insert {
                    message,
                    message_id,
                    reply,
                } => inserts.push((message, message_id, reply)),
                Command::Delete { ids } => deletes.extend(ids),
                Command::Load {
                    tenant,
                    after,
                    limit,
                    reply,
                } => loads.push((tenant, after, limit, reply)),
            }
        }
        if !inserts.is_empty() || !deletes.is_empty() {
            self.write(inserts, deletes);
        }
        for (tenant, after, limit, reply) in loads {
            let _ = reply.send(self.load(&tenant, after, limit));
        }
    }

    fn write(&mut self, inserts: Vec<PendingInsert>, deletes: Vec<i64>) {
        let mut results = Vec::with_capacity(inserts.len());
        let outcome = (|| -> Result<(u64, u64), StoreError> {
            let tx = self.conn.transaction()?;
            let mut deleted = 0u64;
            {
                let mut delete = tx.prepare_cached("DELETE FROM events WHERE id = ?1")?;
                for id in &deletes {
                    deleted += delete.execute(params![id])? as u64;
                }
            }
            let mut room = (self.max_events + deleted).saturating_sub(self.count);
            let mut inserted = 0u64;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (tenant, message_id, meta, payload) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (message, message_id, reply) in inserts {
                    if room == 0 {
                        let _ = reply.send(Err(StoreError::Full(self.max_events)));
                        continue;
                    }
                    let mut meta = message.clone();
                    meta.payload = Bytes::new();
                    let row = serde_json::to_string(&meta).map_err(StoreError::from);
                    let row = row.and_then(|meta| {
                        insert
                            .execute(params![
                                message.tenant_id.as_str(),
                                message_id,
                                meta,
                                message.payload.as_ref()
                            ])
                            .map_err(StoreError::from)
                    });
                    match row {
                        Ok(_) => {
                            room -= 1;
                            inserted += 1;
                            results.push((reply, tx.last_insert_rowid()));
                        }
                        Err(error) => {
                            let _ = reply.send(Err(error));
                        }
                    }
                }
            }
            tx.commit()?;
            Ok((inserted, deleted))
        })();
        match outcome {
            Ok((inserted, deleted)) => {
                self.count = (self.count + inserted).saturating_sub(deleted);
                for (reply, id) in results {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(error) => {
                tracing::error!(%error, "event store transaction failed");
                for (reply, _) in results {
                    let _ = reply.send(Err(StoreError::Transaction(error.to_string())));
                }
            }
        }
    }

    fn load(
        &mut self,
        tenant: &TenantId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, message_id, meta, payload FROM events
             WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![tenant.as_str(), after, limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut events = Vec::new();
        for row in rows {
            let (id, message_id, meta, payload) = row?;
            match serde_json::from_str::<DownstreamMessage>(&meta) {
                Ok(mut message) => {
                    message.payload = Bytes::from(payload);
                    events.push(StoredEvent {
                        id,
                        message_id,
                        message,
                    });
                }
                Err(error) => {
                    // A row we cannot read would block the tenant's queue forever: drop it loudly.
                    tracing::error!(id, %error, "dropping malformed stored event");
                    self.conn
                        .execute("DELETE FROM events WHERE id = ?1", params![id])?;
                }
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use ferry_adapter_core::{Endpoint, Qos};
    use ferry_registry_client::DeviceId;

    fn event(tenant: &str, n: u8) -> Result<DownstreamMessage, Box<dyn std::error::Error>> {
        Ok(DownstreamMessage {
            tenant_id: TenantId::parse(tenant)?,
            device_id: DeviceId::parse("d")?,
            endpoint: Endpoint::Event,
            qos: Qos::AtLeastOnce,
            content_type: "application/octet-stream".into(),
            creation_time: 1,
            ttl_ms: None,
            ttd: None,
            orig_adapter: "hono-http".into(),
            orig_address: "/event".into(),
            properties: BTreeMap::new(),
            retain: false,
            payload: Bytes::from(vec![n]),
        })
    }

    #[tokio::test]
    async fn stores_loads_in_order_deletes_and_limits() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub/events.sqlite");
        let store = EventStore::open(&path, 3)?;
        let a = store.insert(event("t", 1)?, "m1".into()).await?;
        let b = store.insert(event("other", 2)?, "m2".into()).await?;
        let c = store.insert(event("t", 3)?, "m3".into()).await?;
        assert!(a < b && b < c);
        assert!(matches!(
            store.insert(event("t", 4)?, "m4".into()).await,
            Err(StoreError::Full(3))
        ));
        let loaded = store.load(&TenantId::parse("t")?, 0, 10).await?;
        let ids: Vec<i64> = loaded.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![a, c]);
        assert_eq!(loaded[1].message.payload.as_ref(), &[3]);
        assert_eq!(loaded[1].message_id, "m3");
        let after_first = store.load(&TenantId::parse("t")?, a, 10).await?;
        assert_eq!(after_first.len(), 1);
        store.delete(vec![a]).await;
        // Commands run in order: once this load answered, the delete is committed.
        assert_eq!(store.load(&TenantId::parse("t")?, 0, 10).await?.len(), 1);
        drop(store);

        let store = EventStore::open(&path, 3)?;
        let loaded = store.load(&TenantId::parse("t")?, 0, 10).await?;
        assert_eq!(loaded.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c]);
        store.insert(event("t", 5)?, "m5".into()).await?;
        Ok(())
    }
}
