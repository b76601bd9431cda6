//! `/v1/credentials` handlers: the whole credential set of a device, as an array.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::Value;

use super::{ApiResult, found, if_match, json_body, no_content, parse_id};
use crate::Registry;

/// `GET /v1/credentials/{tenantId}/{deviceId}`: confidential secret members are left out.
pub(super) async fn read(
    State(r): State<Registry>,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult {
    let set = r
        .read_credentials(&parse_id(&tenant)?, &parse_id(&id)?)
        .await?;
    Ok(found(&set.version, Value::Array(set.value)))
}

/// `PUT /v1/credentials/{tenantId}/{deviceId}`: replaces the set (patch semantics for secret ids).
pub(super) async fn update(
    State(r): State<Registry>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (tenant, id) = (parse_id(&tenant)?, parse_id(&id)?);
    let body = json_body(body, None)?;
    let version = r
        .update_credentials(&tenant, &id, body, if_match(&headers))
        .await?;
    Ok(no_content(Some(&version)))
}
