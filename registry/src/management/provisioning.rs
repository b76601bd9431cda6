//! `/v1/provisioning` handlers: tenant-managed CAs and device certificates, ownership codes and
//! claims (Ferry's extension of the Management API; docs/provisioning.md).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Map, Value};

use super::{ApiResult, json_body, no_content, parse_id};
use crate::Registry;

fn created(location: String, body: Map<String, Value>) -> ApiResult {
    let mut resp = (StatusCode::CREATED, Json(Value::Object(body))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `POST /v1/provisioning/{tenantId}/cas`: create (or import) a tenant CA.
pub(super) async fn create_ca(
    State(r): State<Registry>,
    Path(tenant): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = parse_id(&tenant)?;
    let body = json_body(body, Some(Value::Object(Map::new())))?;
    let ca = r.create_tenant_ca(&tenant, body).await?;
    let id = ca.get("id").and_then(Value::as_str).unwrap_or_default();
    created(format!("/v1/provisioning/{tenant}/cas/{id}"), ca)
}

/// `GET /v1/provisioning/{tenantId}/cas/{caId}`: the CA certificate.
pub(super) async fn read_ca(
    State(r): State<Registry>,
    Path((tenant, ca)): Path<(String, String)>,
) -> ApiResult {
    let tenant = parse_id(&tenant)?;
    let ca = r.read_tenant_ca(&tenant, &ca).await?;
    Ok(Json(Value::Object(ca)).into_response())
}

/// `POST /v1/provisioning/{tenantId}/cas/{caId}/certificates`: issue a device certificate.
pub(super) async fn issue(
    State(r): State<Registry>,
    Path((tenant, ca)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = parse_id(&tenant)?;
    let body = json_body(body, None)?;
    let cert = r.issue_device_certificate(&tenant, &ca, body).await?;
    created(format!("/v1/provisioning/{tenant}/cas/{ca}"), cert)
}

/// `PUT /v1/provisioning/{tenantId}/ownership-codes`: set the ownership code of certificates
/// with a subject DN (for certificates Ferry did not issue).
pub(super) async fn set_ownership_code(
    State(r): State<Registry>,
    Path(tenant): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = parse_id(&tenant)?;
    let body = json_body(body, None)?;
    r.register_ownership_code(&tenant, body).await?;
    Ok(no_content(None))
}

/// `POST /v1/provisioning/{tenantId}/claims`: claim an unclaimed device with its ownership code.
pub(super) async fn claim(
    State(r): State<Registry>,
    Path(tenant): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = parse_id(&tenant)?;
    let body = json_body(body, None)?;
    r.claim_device(&tenant, body).await?;
    Ok(no_content(None))
}
