//! Test doubles of the device registry and the northbound (feature `test-util`).
//!
//! [`FakeRegistry`] keeps tenants, credentials and registrations in memory and answers like Hono's
//! registry: unknown tenant or device → 404, a gateway that is unknown or not in the device's `via`
//! → 403. [`FakeNorthbound`] records what it was sent and can be told to fail or to take its time.
//! They exist for unit tests and adapter tests while the real registry is built elsewhere; the
//! product never enables this module.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_registry_client::{
    CacheDirective, CredentialType, CredentialsApi, CredentialsObject, DeviceId, RegistrationApi,
    RegistrationAssertion, RegistryError, Response, Secret, TenantApi, TenantId, TenantObject,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::message::DownstreamMessage;
use crate::northbound::{Northbound, NorthboundError, Sending};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Parses a tenant from Hono's JSON form, e.g. `json!({"tenant-id": "t1"})`.
pub fn tenant(json: Value) -> Result<TenantObject, serde_json::Error> {
    serde_json::from_value(json)
}

/// A salted SHA-256 `hashed-password` secret for `password`, as Hono stores it.
pub fn sha256_secret(password: &str) -> Secret {
    let salt = b"ferry-test-salt";
    let hash = Sha256::new()
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    Secret {
        pwd_hash: Some(STANDARD.encode(hash)),
        hash_function: Some("sha-256".to_owned()),
        salt: Some(STANDARD.encode(salt)),
        enabled: true,
        ..Secret::default()
    }
}

#[derive(Default)]
struct State {
    tenants: HashMap<TenantId, TenantObject>,
    credentials: HashMap<(TenantId, String), CredentialsObject>,
    devices: HashMap<(TenantId, DeviceId), RegistrationAssertion>,
    contexts: Vec<Map<String, Value>>,
    unavailable: bool,
    cache: Option<CacheDirective>,
    calls: usize,
}

impl State {
    /// A 200 answer with the configured cache directive.
    fn ok<T>(&self, value: T) -> Response<T> {
        Response::ok(value, self.cache.unwrap_or(CacheDirective::NoCache))
    }
}

/// An in-memory registry answering like Hono's.
#[derive(Default)]
pub struct FakeRegistry {
    state: Mutex<State>,
}

impl FakeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a tenant.
    pub fn add_tenant(&self, tenant: TenantObject) {
        lock(&self.state)
            .tenants
            .insert(tenant.tenant_id.clone(), tenant);
    }

    /// Adds or replaces an enabled device with its assertion (`via`, `defaults`).
    pub fn add_device(&self, tenant_id: &TenantId, assertion: RegistrationAssertion) {
        lock(&self.state)
            .devices
            .insert((tenant_id.clone(), assertion.device_id.clone()), assertion);
    }

    /// Adds a device with no `via` and no defaults.
    pub fn add_plain_device(&self, tenant_id: &TenantId, device_id: &DeviceId) {
        self.add_device(
            tenant_id,
            RegistrationAssertion {
                device_id: device_id.clone(),
                via: Vec::new(),
                defaults: Map::new(),
                extra: Map::new(),
            },
        );
    }

    /// Removes a device (it then asserts as unknown, like a disabled one).
    pub fn remove_device(&self, tenant_id: &TenantId, device_id: &DeviceId) {
        lock(&self.state)
            .devices
            .remove(&(tenant_id.clone(), device_id.clone()));
    }

    /// Adds or replaces credentials.
    pub fn add_credentials(&self, tenant_id: &TenantId, credentials: CredentialsObject) {
        lock(&self.state).credentials.insert(
            (tenant_id.clone(), credentials.auth_id.clone()),
            credentials,
        );
    }

    /// Adds a device with `hashed-password` credentials (`auth_id`, salted SHA-256 of `password`).
    pub fn add_password_device(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        auth_id: &str,
        password: &str,
    ) {
        self.add_plain_device(tenant_id, device_id);
        self.add_credentials(
            tenant_id,
            CredentialsObject {
                device_id: device_id.clone(),
                credential_type: CredentialType::HashedPassword,
                auth_id: auth_id.to_owned(),
                enabled: true,
                secrets: vec![sha256_secret(password)],
                ext: Map::new(),
            },
        );
    }

    /// The client contexts of every credentials lookup so far.
    pub fn credential_contexts(&self) -> Vec<Map<String, Value>> {
        lock(&self.state).contexts.clone()
    }

    /// While set, every call fails with [`RegistryError::Unavailable`].
    pub fn set_unavailable(&self, unavailable: bool) {
        lock(&self.state).unavailable = unavailable;
    }

    /// The cache directive of every answer (default `no-cache`).
    pub fn set_cache_directive(&self, cache: CacheDirective) {
        lock(&self.state).cache = Some(cache);
    }

    /// Calls answered so far (tenants, credentials and registrations together).
    pub fn calls(&self) -> usize {
        lock(&self.state).calls
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, RegistryError> {
        let mut state = lock(&self.state);
        state.calls += 1;
        if state.unavailable {
            return Err(RegistryError::Unavailable(
                "fake registry is down".to_owned(),
            ));
        }
        Ok(state)
    }
}

#[async_trait]
impl TenantApi for FakeRegistry {
    async fn get_tenant(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Response<TenantObject>, RegistryError> {
        let state = self.state()?;
        state
            .tenants
            .get(tenant_id)
            .cloned()
            .map(|v| state.ok(v))
            .ok_or(RegistryError::NotFound)
    }

    async fn get_tenant_by_ca(
        &self,
        subject_dn: &str,
    ) -> Result<Response<TenantObject>, RegistryError> {
        let state = self.state()?;
        let mut trusting = state
            .tenants
            .values()
            .filter(|t| t.trusted_ca.iter().any(|ca| ca.subject_dn == subject_dn));
        match (trusting.next(), trusting.next()) {
            // Several tenants share the CA (a trust anchor group): ambiguous, as in Hono.
            (Some(t), None) => Ok(state.ok(t.clone())),
            _ => Err(RegistryError::NotFound),
        }
    }
}

#[async_trait]
impl CredentialsApi for FakeRegistry {
    async fn get_credentials(
        &self,
        tenant_id: &TenantId,
        credential_type: CredentialType,
        auth_id: &str,
        client_context: &Map<String, Value>,
    ) -> Result<Response<CredentialsObject>, RegistryError> {
        let mut state = self.state()?;
        state.contexts.push(client_context.clone());
        state
            .credentials
            .get(&(tenant_id.clone(), auth_id.to_owned()))
            .filter(|c| c.credential_type == credential_type)
            .cloned()
            .map(|v| state.ok(v))
            .ok_or(RegistryError::NotFound)
    }
}

#[async_trait]
impl RegistrationApi for FakeRegistry {
    async fn assert_registration(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        gateway_id: Option<&DeviceId>,
    ) -> Result<Response<RegistrationAssertion>, RegistryError> {
        let state = self.state()?;
        if !state.tenants.contains_key(tenant_id) {
            return Err(RegistryError::NotFound);
        }
        let assertion = state
            .devices
            .get(&(tenant_id.clone(), device_id.clone()))
            .ok_or(RegistryError::NotFound)?;
        if let Some(gateway) = gateway_id {
            if !state
                .devices
                .contains_key(&(tenant_id.clone(), gateway.clone()))
            {
                return Err(RegistryError::Forbidden("gateway unknown".to_owned()));
            }
            if !assertion.via.contains(gateway) {
                return Err(RegistryError::Forbidden(
                    "gateway not in the device's via".to_owned(),
                ));
            }
        }
        Ok(state.ok(assertion.clone()))
    }
}

/// How [`FakeNorthbound`] fails while told to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// [`NorthboundError::NoConsumer`].
    NoConsumer,
    /// [`NorthboundError::Rejected`].
    Rejected,
    /// [`NorthboundError::Unavailable`].
    Unavailable,
    /// [`NorthboundError::Storage`].
    Storage,
}

/// A northbound that records every message it takes.
#[derive(Default)]
pub struct FakeNorthbound {
    sent: Mutex<Vec<DownstreamMessage>>,
    failure: Mutex<Option<Failure>>,
    delay: Mutex<Option<Duration>>,
}

impl FakeNorthbound {
    /// A northbound that accepts everything at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// While set, every send fails this way.
    pub fn set_failure(&self, failure: Option<Failure>) {
        *lock(&self.failure) = failure;
    }

    /// Every send waits this long before answering.
    pub fn set_delay(&self, delay: Option<Duration>) {
        *lock(&self.delay) = delay;
    }

    /// The messages taken so far.
    pub fn sent(&self) -> Vec<DownstreamMessage> {
        lock(&self.sent).clone()
    }
}

impl Northbound for FakeNorthbound {
    fn send(&self, message: DownstreamMessage) -> Sending<'_> {
        Sending::waiting(async move {
            let delay = *lock(&self.delay);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let failure = *lock(&self.failure);
            let why = "fake northbound told to fail".to_owned();
            match failure {
                None => {
                    lock(&self.sent).push(message);
                    Ok(())
                }
                Some(Failure::NoConsumer) => Err(NorthboundError::NoConsumer(why)),
                Some(Failure::Rejected) => Err(NorthboundError::Rejected(why)),
                Some(Failure::Unavailable) => Err(NorthboundError::Unavailable(why)),
                Some(Failure::Storage) => Err(NorthboundError::Storage(why)),
            }
        })
    }
}
