//! Handling one request: route, authenticate, read parameters and body, forward, answer.
//!
//! Every refusal is answered with its status and a short plain-text reason, and logged once with
//! the tenant and device as far as they are known. Payloads and passwords are never logged.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::tls::TlsPeer;
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice, Upload};
use ferry_registry_client::{DeviceId, TenantId};
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};

use crate::error::RequestError;
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
}

/// Tenant and device of a request, as far as they are known, for the log line of a refusal.
#[derive(Default)]
struct Who {
    tenant: Option<TenantId>,
    device: Option<DeviceId>,
    user: Option<String>,
}

/// Answers one request. Never fails: refusals are responses.
///
/// `peer` is the connection's TLS client certificate, if the client presented one.
pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: Option<Arc<TlsPeer>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut who = Who::default();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match upload(req, &shared, peer.as_deref(), &mut who).await {
        Ok(()) => Ok(status_only(StatusCode::ACCEPTED)),
        Err(e) => {
            let status = e.status();
            tracing::info!(
                tenant = who.tenant.as_ref().map_or("-", TenantId::as_str),
                device = who.device.as_ref().map_or("-", DeviceId::as_str),
                user = who.user.as_deref().unwrap_or("-"),
                %method,
                path,
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
    who.user = Some(credentials.username.chars().take(128).collect());
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
    who.tenant = Some(device.tenant_id.clone());
    who.device = Some(device.device_id.clone());
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
    who.user = Some(device.auth_id.chars().take(128).collect());
    who.tenant = Some(device.tenant_id.clone());
    who.device = Some(device.device_id.clone());
    Ok(device)
}

/// Who sends, and for which device: authenticates where credentials are given or required.
/// Basic credentials win over a client certificate; without either the request is anonymous.
async fn identify(
    target: Target,
    credentials: Option<BasicCredentials>,
    peer: Option<&TlsPeer>,
    shared: &Shared,
    who: &mut Who,
) -> Result<(Option<AuthenticatedDevice>, TenantId, DeviceId), RequestError> {
    if let Target::Device { device, .. } = &target {
        who.device = Some(device.clone());
    }
    let sender = match (credentials, peer.filter(|p| p.has_certificate())) {
        (Some(credentials), _) => Some(authenticate(shared, credentials, who).await?),
        (None, Some(peer)) => Some(authenticate_certificate(shared, peer, who).await?),
        (None, None) => None,
    };
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
    req: Request<Incoming>,
    shared: &Shared,
    peer: Option<&TlsPeer>,
    who: &mut Who,
) -> Result<(), RequestError> {
    let (parts, body) = req.into_parts();
    let route = Route::parse(&parts.method, parts.uri.path())?;
    let credentials = BasicCredentials::from_headers(&parts.headers)?;
    let (sender, tenant, device) = identify(route.target, credentials, peer, shared, who).await?;
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
        .forward(sender.as_ref(), &tenant, &device, upload)
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
