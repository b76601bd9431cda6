//! `/v1/tenants` handlers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use ferry_registry_client::TenantId;
use serde_json::{Map, Value};

use super::{ApiResult, created, found, if_match, json_body, no_content, parse_id, search as s};
use crate::Registry;

fn empty() -> Option<Value> {
    Some(Value::Object(Map::new()))
}

async fn create_with(
    registry: Registry,
    id: Option<TenantId>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = json_body(body, empty())?;
    let c = registry.create_tenant(id, body).await?;
    Ok(created(
        format!("/v1/tenants/{}", c.id),
        c.id.as_str(),
        &c.version,
    ))
}

/// `POST /v1/tenants`: create with a generated id.
pub(super) async fn create_generated(
    State(r): State<Registry>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    create_with(r, None, body).await
}

/// `POST /v1/tenants/{tenantId}`.
pub(super) async fn create(
    State(r): State<Registry>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = parse_id(&id)?;
    create_with(r, Some(id), body).await
}

/// `GET /v1/tenants/{tenantId}`.
pub(super) async fn read(State(r): State<Registry>, Path(id): Path<String>) -> ApiResult {
    let t = r.read_tenant(&parse_id(&id)?).await?;
    Ok(found(&t.version, Value::Object(t.value)))
}

/// `PUT /v1/tenants/{tenantId}`.
pub(super) async fn update(
    State(r): State<Registry>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let body = json_body(body, empty())?;
    let version = r.update_tenant(&id, body, if_match(&headers)).await?;
    Ok(no_content(Some(&version)))
}

/// `DELETE /v1/tenants/{tenantId}`.
pub(super) async fn delete(
    State(r): State<Registry>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    r.delete_tenant(&parse_id(&id)?, if_match(&headers)).await?;
    Ok(no_content(None))
}

/// `GET /v1/tenants?pageSize&pageOffset&filterJson&sortJson`.
pub(super) async fn search(State(r): State<Registry>, RawQuery(query): RawQuery) -> ApiResult {
    let params = s::SearchParams::parse(query.as_deref())?;
    let all = r.all_tenants().await?;
    s::respond(&params, all)
}
