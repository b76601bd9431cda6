//! `/v1/devices` handlers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use ferry_registry_client::{DeviceId, TenantId};
use serde_json::{Map, Value};

use super::auth::AuthUser;
use super::{ApiResult, created, found, if_match, json_body, no_content, parse_id, search as s};
use crate::Registry;

fn empty() -> Option<Value> {
    Some(Value::Object(Map::new()))
}

async fn create_with(
    registry: Registry,
    tenant: &str,
    id: Option<&str>,
    user: AuthUser,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant: TenantId = parse_id(tenant)?;
    let id: Option<DeviceId> = id.map(parse_id).transpose()?;
    let body = json_body(body, empty())?;
    let c = registry
        .create_device(&tenant, id, body, user.0.as_deref())
        .await?;
    Ok(created(
        format!("/v1/devices/{tenant}/{}", c.id),
        c.id.as_str(),
        &c.version,
    ))
}

/// `POST /v1/devices/{tenantId}`: create with a generated id.
pub(super) async fn create_generated(
    State(r): State<Registry>,
    Path(tenant): Path<String>,
    Extension(user): Extension<AuthUser>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    create_with(r, &tenant, None, user, body).await
}

/// `POST /v1/devices/{tenantId}/{deviceId}`.
pub(super) async fn create(
    State(r): State<Registry>,
    Path((tenant, id)): Path<(String, String)>,
    Extension(user): Extension<AuthUser>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    create_with(r, &tenant, Some(&id), user, body).await
}

/// `GET /v1/devices/{tenantId}/{deviceId}`.
pub(super) async fn read(
    State(r): State<Registry>,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult {
    let d = r.read_device(&parse_id(&tenant)?, &parse_id(&id)?).await?;
    Ok(found(&d.version, Value::Object(d.value)))
}

/// `PUT /v1/devices/{tenantId}/{deviceId}`.
pub(super) async fn update(
    State(r): State<Registry>,
    Path((tenant, id)): Path<(String, String)>,
    Extension(user): Extension<AuthUser>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (tenant, id) = (parse_id(&tenant)?, parse_id(&id)?);
    let body = json_body(body, empty())?;
    let version = r
        .update_device(&tenant, &id, body, if_match(&headers), user.0.as_deref())
        .await?;
    Ok(no_content(Some(&version)))
}

/// `DELETE /v1/devices/{tenantId}/{deviceId}`.
pub(super) async fn delete(
    State(r): State<Registry>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    r.delete_device(&parse_id(&tenant)?, &parse_id(&id)?, if_match(&headers))
        .await?;
    Ok(no_content(None))
}

/// `DELETE /v1/devices/{tenantId}`: every device of the tenant.
pub(super) async fn delete_all(State(r): State<Registry>, Path(tenant): Path<String>) -> ApiResult {
    r.delete_all_devices(&parse_id(&tenant)?).await?;
    Ok(no_content(None))
}

/// `GET /v1/devices/{tenantId}?pageSize&pageOffset&filterJson&sortJson&isGateway`.
pub(super) async fn search(
    State(r): State<Registry>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = s::SearchParams::parse(query.as_deref())?;
    let mut all = r.all_devices(&parse_id(&tenant)?).await?;
    if let Some(gateways) = params.is_gateway {
        let ids = s::gateway_ids(&all);
        all.retain(|d| {
            let id = d.get("id").and_then(Value::as_str).unwrap_or_default();
            ids.contains(id) == gateways
        });
    }
    s::respond(&params, all)
}
