//! Handling one request: [`prepare`] routes, authenticates and reads the parameters from the
//! head; once the connection has read the body, [`Pending::forward`] sends it northbound.
//!
//! Every refusal is a [`Refusal`]: logged once when made, with the client's address and the tenant
//! and device as far as they are known, and answered with its status and a short plain-text
//! reason. Payloads and passwords are never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::memo::RegistryGeneration;
use ferry_adapter_core::tls::TlsPeer;
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice, Endpoint, Upload};
use ferry_registry_client::{DeviceId, TenantId};
use http::StatusCode;

use crate::error::RequestError;
use crate::h1::head::Head;
use crate::h1::response::{PLAIN_TEXT, Response};
use crate::memo::ConnectionMemo;
use crate::request::{BasicCredentials, Params, Route, Target};

/// What every request handler of the adapter shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The device pipeline.
    pub(crate) ctx: AdapterContext,
    /// Largest accepted body.
    pub(crate) max_payload_size: usize,
    /// Longest time to receive a body.
    pub(crate) body_timeout: Duration,
    /// Whether the adapter requires credentials.
    pub(crate) authentication_required: bool,
    /// Committed registry changes, for the connections' memos.
    pub(crate) generation: Arc<RegistryGeneration>,
}

/// What every request of one connection shares.
#[derive(Debug)]
pub(crate) struct PerConnection {
    /// The adapter's shared state.
    pub(crate) shared: Arc<Shared>,
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// The connection's TLS client certificate, if the client presented one.
    pub(crate) peer: Option<TlsPeer>,
    /// What the connection remembers between requests.
    pub(crate) memo: ConnectionMemo,
}

/// Tenant, device and user of a request, as far as they are known, for the log line of a
/// refusal. Set fields beat what the sender says.
#[derive(Default)]
struct Who {
    tenant: Option<TenantId>,
    device: Option<DeviceId>,
    user: Option<String>,
    sender: Option<Arc<AuthenticatedDevice>>,
}

impl Who {
    fn tenant(&self) -> &str {
        let sender = self.sender.as_ref().map(|s| &s.tenant_id);
        self.tenant
            .as_ref()
            .or(sender)
            .map_or("-", TenantId::as_str)
    }

    fn device(&self) -> &str {
        let sender = self.sender.as_ref().map(|s| &s.device_id);
        self.device
            .as_ref()
            .or(sender)
            .map_or("-", DeviceId::as_str)
    }

    fn user(&self) -> String {
        let sender = self.sender.as_ref().map(|s| s.auth_id.as_str());
        self.user
            .as_deref()
            .or(sender)
            .map_or_else(|| "-".to_owned(), |u| u.chars().take(128).collect())
    }
}

/// A request whose head was accepted: who sends what for which device. Its body comes next.
pub(crate) struct Pending {
    who: Who,
    method: &'static str,
    /// The request path, the message's `orig_address`.
    path: String,
    endpoint: Endpoint,
    params: Params,
    sender: Option<Arc<AuthenticatedDevice>>,
    tenant: TenantId,
    device: DeviceId,
}

/// A refused request: logged when made, answered with its status and reason.
#[derive(Debug)]
pub(crate) struct Refusal {
    error: RequestError,
    status: StatusCode,
    /// The plain-text body.
    body: String,
}

impl Refusal {
    /// Logs the refusal of `method path` from `who`.
    fn log(error: RequestError, who: &Who, method: &str, path: &str, peer: SocketAddr) -> Self {
        let status = error.status();
        tracing::info!(
            %peer,
            tenant = who.tenant(),
            device = who.device(),
            user = who.user(),
            method,
            path,
            status = status.as_u16(),
            reason = %error,
            "request refused"
        );
        let body = format!("{}\n", error.client_message());
        Self {
            error,
            status,
            body,
        }
    }

    /// The response.
    pub(crate) fn response(&self) -> Response<'_> {
        const REALM: (&str, &str) = ("www-authenticate", "Basic realm=\"Hono\"");
        let headers: &'static [(&str, &str)] = match &self.error {
            _ if self.status == StatusCode::UNAUTHORIZED => &[PLAIN_TEXT, REALM],
            RequestError::MethodNotAllowed { allowed: "POST" } => &[PLAIN_TEXT, ("allow", "POST")],
            RequestError::MethodNotAllowed { .. } => &[PLAIN_TEXT, ("allow", "PUT")],
            _ => &[PLAIN_TEXT],
        };
        Response {
            status: self.status,
            headers,
            body: self.body.as_bytes(),
        }
    }
}

/// Routes, authenticates and reads the parameters of the request `head` on `connection`.
pub(crate) async fn prepare(
    head: &Head<'_>,
    connection: &PerConnection,
) -> Result<Pending, Refusal> {
    let mut who = Who::default();
    match accept_head(head, connection, &mut who).await {
        Ok(pending) => Ok(pending),
        Err(e) => Err(Refusal::log(
            e,
            &who,
            head.method,
            head.path,
            connection.addr,
        )),
    }
}

async fn accept_head(
    head: &Head<'_>,
    connection: &PerConnection,
    who: &mut Who,
) -> Result<Pending, RequestError> {
    let shared = &*connection.shared;
    let route = Route::parse(head.method, head.path)?;
    if let Target::Device { device, .. } = &route.target {
        who.device = Some(device.clone());
    }
    let method = match route.target {
        Target::Own => "POST",
        Target::Device { .. } => "PUT",
    };
    let sender = sender(head.fields.authorization, connection, who).await?;
    who.sender.clone_from(&sender);
    let (sender, tenant, device) = identify(route.target, sender, shared, who)?;
    let params = Params::parse(route.endpoint, &head.fields, head.query)?;
    Ok(Pending {
        who: std::mem::take(who),
        method,
        path: head.path.to_owned(),
        endpoint: route.endpoint,
        params,
        sender,
        tenant,
        device,
    })
}

impl Pending {
    /// Refuses the request after all (its body could not be read).
    pub(crate) fn refuse(&self, error: RequestError, connection: &PerConnection) -> Refusal {
        Refusal::log(error, &self.who, self.method, &self.path, connection.addr)
    }

    /// Forwards the request's message with `payload` northbound.
    pub(crate) async fn forward(
        self,
        payload: Bytes,
        connection: &PerConnection,
    ) -> Result<(), Refusal> {
        let Pending {
            who,
            method,
            path,
            endpoint,
            params,
            sender,
            tenant,
            device,
        } = self;
        let upload = Upload {
            endpoint,
            qos: params.qos,
            content_type: params.content_type,
            ttl: params.ttl,
            ttd: params.ttd,
            orig_address: path.clone(),
            retain: false,
            payload,
        };
        let forwarded = connection
            .shared
            .ctx
            .forwarder
            .forward_with(
                &connection.memo.forward,
                sender.as_deref(),
                &tenant,
                &device,
                upload,
            )
            .await;
        forwarded.map_err(|e| Refusal::log(e.into(), &who, method, &path, connection.addr))
    }
}

async fn authenticate(
    shared: &Shared,
    credentials: BasicCredentials,
    who: &mut Who,
) -> Result<AuthenticatedDevice, RequestError> {
    who.user = Some(credentials.username.clone());
    if who.tenant.is_none() {
        who.tenant = credentials
            .username
            .split_once('@')
            .and_then(|(_, tenant)| TenantId::parse(tenant).ok());
    }
    let device = shared
        .ctx
        .authenticator
        .authenticate_password(&credentials.username, &credentials.password)
        .await?;
    who.user = None;
    Ok(device)
}

/// Authenticates by the TLS client certificate of the connection.
async fn authenticate_certificate(
    shared: &Shared,
    peer: &TlsPeer,
    who: &mut Who,
) -> Result<AuthenticatedDevice, RequestError> {
    who.user = Some("(client certificate)".to_owned());
    let device = shared
        .ctx
        .authenticator
        .authenticate_x509(&peer.chain, peer.sni.as_deref())
        .await?;
    who.user = None;
    Ok(device)
}

/// Who sends: the device the connection's memo recalls for this `authorization`, else whoever
/// the credentials or the client certificate prove (remembered either way). Basic credentials
/// win over a client certificate; without either the request is anonymous.
async fn sender(
    authorization: Option<&[u8]>,
    connection: &PerConnection,
    who: &mut Who,
) -> Result<Option<Arc<AuthenticatedDevice>>, RequestError> {
    let (shared, memo) = (&*connection.shared, &connection.memo.auth);
    if let Some(authorization) = authorization
        && let Some(device) = memo.recall(|last| **last == *authorization)
    {
        return Ok(Some(device));
    }
    let generation = memo.generation();
    let peer = connection.peer.as_ref().filter(|p| p.has_certificate());
    let device = match (BasicCredentials::from_header(authorization)?, peer) {
        (Some(credentials), _) => {
            // Boxed: checks are rare (the memo answers), and their futures are large.
            let device = Arc::new(Box::pin(authenticate(shared, credentials, who)).await?);
            if let Some(authorization) = authorization {
                memo.remember(authorization.into(), Arc::clone(&device), generation);
            }
            device
        }
        (None, Some(peer)) => {
            let memo = &connection.memo.certificate;
            if let Some(device) = memo.recall(|()| true) {
                return Ok(Some(device));
            }
            let generation = memo.generation();
            let device = Arc::new(Box::pin(authenticate_certificate(shared, peer, who)).await?);
            memo.remember((), Arc::clone(&device), generation);
            device
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(device))
}

/// For which device `sender` (if anyone) sends to `target`.
fn identify(
    target: Target,
    sender: Option<Arc<AuthenticatedDevice>>,
    shared: &Shared,
    who: &mut Who,
) -> Result<(Option<Arc<AuthenticatedDevice>>, TenantId, DeviceId), RequestError> {
    match (target, sender) {
        (Target::Own, None) => Err(RequestError::MissingCredentials),
        (Target::Own, Some(sender)) => {
            let (tenant, device) = (sender.tenant_id.clone(), sender.device_id.clone());
            Ok((Some(sender), tenant, device))
        }
        (Target::Device { tenant, device }, Some(sender)) => {
            let tenant = tenant.unwrap_or_else(|| sender.tenant_id.clone());
            who.tenant = Some(tenant.clone());
            who.device = Some(device.clone());
            Ok((Some(sender), tenant, device))
        }
        (Target::Device { .. }, None) if shared.authentication_required => {
            Err(RequestError::MissingCredentials)
        }
        (Target::Device { tenant, device }, None) => {
            let tenant = tenant.ok_or(RequestError::TenantRequired)?;
            who.tenant = Some(tenant.clone());
            Ok((None, tenant, device))
        }
    }
}
