//! Handling one request: route, authenticate, read parameters and body, forward, answer.
//!
//! Every refusal is answered with its status and a short plain-text reason, and logged once with
//! the tenant and device as far as they are known. Payloads and passwords are never logged.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::memo::RegistryGeneration;
use ferry_adapter_core::tls::TlsPeer;
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice, Upload};
use ferry_registry_client::{DeviceId, TenantId};
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};

use crate::error::RequestError;
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

/// Answers one request of `connection`. Never fails: refusals are responses.
pub(crate) async fn handle(
    req: Request<Incoming>,
    connection: Arc<PerConnection>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut who = Who::default();
    let (parts, body) = req.into_parts();
    match upload(&parts, body, &connection, &mut who).await {
        Ok(()) => Ok(status_only(StatusCode::ACCEPTED)),
        Err(e) => {
            let status = e.status();
            tracing::info!(
                tenant = who.tenant(),
                device = who.device(),
                user = who.user(),
                method = %parts.method,
                path = parts.uri.path(),
                status = status.as_u16(),
                reason = %e,
                "request refused"
            );
            Ok(refusal(&e, status))
        }
    }
}

fn status_only(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn refusal(error: &RequestError, status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "{}\n",
        error.client_message()
    ))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Hono\""),
        );
    }
    if let RequestError::MethodNotAllowed { allowed } = error {
        headers.insert(ALLOW, HeaderValue::from_static(allowed));
    }
    response
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
    headers: &http::HeaderMap,
    connection: &PerConnection,
    who: &mut Who,
) -> Result<Option<Arc<AuthenticatedDevice>>, RequestError> {
    let (shared, memo) = (&*connection.shared, &connection.memo.auth);
    let authorization = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    if let Some(authorization) = authorization
        && let Some(device) = memo.recall(|last| **last == *authorization)
    {
        return Ok(Some(device));
    }
    let generation = memo.generation();
    let peer = connection.peer.as_ref().filter(|p| p.has_certificate());
    let device = match (BasicCredentials::from_headers(headers)?, peer) {
        (Some(credentials), _) => {
            let device = Arc::new(authenticate(shared, credentials, who).await?);
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
            let device = Arc::new(authenticate_certificate(shared, peer, who).await?);
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

async fn upload(
    parts: &http::request::Parts,
    body: Incoming,
    connection: &PerConnection,
    who: &mut Who,
) -> Result<(), RequestError> {
    let shared = &*connection.shared;
    let route = Route::parse(&parts.method, parts.uri.path())?;
    if let Target::Device { device, .. } = &route.target {
        who.device = Some(device.clone());
    }
    let sender = sender(&parts.headers, connection, who).await?;
    who.sender.clone_from(&sender);
    let (sender, tenant, device) = identify(route.target, sender, shared, who)?;
    let params = Params::parse(route.endpoint, &parts.headers, parts.uri.query())?;
    let payload = read_body(body, shared.max_payload_size, shared.body_timeout).await?;
    let upload = Upload {
        endpoint: route.endpoint,
        qos: params.qos,
        content_type: params.content_type,
        ttl: params.ttl,
        ttd: params.ttd,
        orig_address: parts.uri.path().to_owned(),
        retain: false,
        payload,
    };
    shared
        .ctx
        .forwarder
        .forward_with(
            &connection.memo.forward,
            sender.as_deref(),
            &tenant,
            &device,
            upload,
        )
        .await?;
    Ok(())
}

/// Reads at most `max` bytes of body (one more proves it is too large), within `timeout`.
async fn read_body(body: Incoming, max: usize, timeout: Duration) -> Result<Bytes, RequestError> {
    let too_large = RequestError::PayloadTooLarge { max };
    if body.size_hint().lower() > max as u64 {
        return Err(too_large);
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| RequestError::Body("timed out".to_owned()))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large),
        Err(e) => Err(RequestError::Body(e.to_string())),
    }
}
