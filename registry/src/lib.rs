//! Ferry's device registry: tenants, devices and credentials in a [`store::Store`] (SQLite by
//! default), Hono's HTTP Management API ([`Registry::management_api`]), and Hono's Tenant,
//! Credentials and Device Registration service APIs, implemented in-process on [`Registry`]
//! (the `registry-client` traits).
//!
//! Auto-provisioning by certificate and by gateway (hono-api.md §13) happens inside the service
//! APIs; provisioning notifications go to a [`ProvisioningNotifier`] set with
//! [`Registry::set_provisioning_notifier`]. Devices of a CA with `claim-required` are
//! provisioned unclaimed and wait for their owner's claim (module `claim`).
//!
//! Every committed change is reported synchronously to the registered
//! [`ChangeListener`]s before the Management API answers, so caches drop stale entries at once.
//!
//! ```no_run
//! use std::path::Path;
//! use ferry_registry::{Registry, RegistryConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Creates `data/` and the database file if needed, and applies migrations.
//! let registry = Registry::open(Path::new("data/registry.db"), RegistryConfig::default())?;
//! // Serve this (already under `/v1`) with `axum::serve` on the Management API port.
//! let _router: axum::Router = registry.management_api();
//! // Adapters use `registry` (or `Cached::new(registry.clone(), ..)`) through the
//! // `TenantApi`, `CredentialsApi` and `RegistrationApi` traits; register the cache with
//! // `registry.add_change_listener(cache.clone())` so it drops changed entries at once.
//! # Ok(()) }
//! ```

mod bulk;
mod ca;
mod claim;
pub mod config;
pub mod error;
mod management;
mod model;
mod ops;
pub mod password;
mod provisioning;
mod service;
pub mod store;

use std::path::Path;
use std::sync::{Arc, RwLock};

use ferry_registry_client::{ChangeListener, RegistryChange};

pub use ca::pki;
pub use config::{ClaimLimits, EncryptionKey, ManagementUser, RegistryConfig};
pub use error::{ManageError, RegistryOpenError};
pub use provisioning::{
    AUTO_PROVISIONING_AUTHORITY, NotifyError, PROVISIONING_NOTIFICATION, ProvisioningNotice,
    ProvisioningNotifier,
};
pub use store::{Store, StoreError};

/// The device registry: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: RegistryConfig,
    listeners: RwLock<Vec<Arc<dyn ChangeListener>>>,
    notifier: RwLock<Option<Arc<dyn ProvisioningNotifier>>>,
    in_flight: provisioning::InFlight,
    jobs: bulk::Jobs,
    claims: claim::Limits,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (creating file and parent directory if needed) the SQLite registry at `path`.
    pub fn open(path: &Path, config: RegistryConfig) -> Result<Registry, RegistryOpenError> {
        config.validate().map_err(RegistryOpenError::Config)?;
        let store = store::sqlite::SqliteStore::open(path)?;
        Ok(Self::with_store(Arc::new(store), config))
    }

    /// A registry over any store (configuration is taken as valid).
    pub fn with_store(store: Arc<dyn Store>, config: RegistryConfig) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                store,
                listeners: RwLock::new(Vec::new()),
                notifier: RwLock::new(None),
                in_flight: provisioning::InFlight::default(),
                jobs: bulk::Jobs::default(),
                claims: claim::Limits::new(&config.claim_limits),
                config,
            }),
        }
    }

    /// Registers a listener told about every committed change.
    pub fn add_change_listener(&self, listener: Arc<dyn ChangeListener>) {
        if let Ok(mut listeners) = self.inner.listeners.write() {
            listeners.push(listener);
        }
    }

    /// The Management API (`/v1/...`) as an axum router.
    pub fn management_api(&self) -> axum::Router {
        management::router(self.clone())
    }

    /// The configuration in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    fn notify(&self, changes: &[RegistryChange]) {
        let listeners = match self.inner.listeners.read() {
            Ok(l) => l.clone(),
            Err(_) => return,
        };
        for change in changes {
            tracing::debug!(?change, "registry changed");
            for listener in &listeners {
                listener.registry_changed(change);
            }
        }
    }
}
