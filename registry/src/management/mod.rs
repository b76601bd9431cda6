//! Hono's HTTP Management API (`/v1`, hono-api.md §12) as an axum router.
//!
//! Handlers parse ids, bodies and headers, call the operations in `crate::ops`, and map the
//! result: 201 with `Location`, `ETag` and `{"id"}`; 200 with `ETag`; 204 with the new `ETag`;
//! errors as `{"error": ...}` (see `error`). Ferry's own extension lives under `/v1/provisioning`
//! (tenant CAs and device certificates, bulk provisioning, ownership codes and claims).

mod auth;
mod bulk;
mod credentials;
mod devices;
mod error;
mod provisioning;
mod search;
mod tenants;

use axum::Json;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use serde_json::{Value, json};

use crate::Registry;
use error::{ApiError, bad_request};

/// The Management API router, nested under `/v1`.
pub(crate) fn router(registry: Registry) -> Router {
    let limit = registry.config().max_body_size;
    let bulk_limit = registry.config().max_bulk_body_size;
    let v1 = Router::new()
        .route(
            "/tenants",
            get(tenants::search).post(tenants::create_generated),
        )
        .route(
            "/tenants/{tenant_id}",
            get(tenants::read)
                .post(tenants::create)
                .put(tenants::update)
                .delete(tenants::delete),
        )
        .route(
            "/devices/{tenant_id}",
            get(devices::search)
                .post(devices::create_generated)
                .delete(devices::delete_all),
        )
        .route(
            "/devices/{tenant_id}/{device_id}",
            get(devices::read)
                .post(devices::create)
                .put(devices::update)
                .delete(devices::delete),
        )
        .route(
            "/credentials/{tenant_id}/{device_id}",
            get(credentials::read).put(credentials::update),
        )
        .route(
            "/provisioning/{tenant_id}/cas",
            axum::routing::post(provisioning::create_ca),
        )
        .route(
            "/provisioning/{tenant_id}/cas/{ca_id}",
            get(provisioning::read_ca),
        )
        .route(
            "/provisioning/{tenant_id}/cas/{ca_id}/certificates",
            axum::routing::post(provisioning::issue),
        )
        .route(
            "/provisioning/{tenant_id}/bulk",
            axum::routing::post(bulk::start).layer(DefaultBodyLimit::max(bulk_limit)),
        )
        .route("/provisioning/{tenant_id}/bulk/{job_id}", get(bulk::status))
        .route(
            "/provisioning/{tenant_id}/ownership-codes",
            axum::routing::put(provisioning::set_ownership_code),
        )
        .route(
            "/provisioning/{tenant_id}/claims",
            axum::routing::post(provisioning::claim),
        )
        .layer(middleware::from_fn_with_state(
            registry.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(registry);
    Router::new().nest("/v1", v1)
}

/// A handler's result.
type ApiResult = Result<Response, ApiError>;

/// Parses an id from the path (400 if invalid).
fn parse_id<T: std::str::FromStr<Err = ferry_registry_client::InvalidId>>(
    s: &str,
) -> Result<T, ApiError> {
    s.parse()
        .map_err(|e: ferry_registry_client::InvalidId| bad_request(e.to_string()))
}

/// Reads a JSON body; empty bodies become `empty` (if given). 413/400 as appropriate.
fn json_body(body: Result<Bytes, BytesRejection>, empty: Option<Value>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| ApiError::Body(e.status(), e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(empty) = empty
    {
        return Ok(empty);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Body(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

/// The `If-Match` version, without quotes or weak prefix; `None` for absent or `*`.
fn if_match(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::IF_MATCH)?.to_str().ok()?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
    (v != "*").then(|| v.to_owned())
}

fn etag(version: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// 201 with `Location`, `ETag` and `{"id": ...}`.
fn created(location: String, id: &str, version: &str) -> Response {
    let mut resp = (StatusCode::CREATED, Json(json!({ "id": id }))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

/// 200 with `ETag` and a JSON body.
fn found(version: &str, body: Value) -> Response {
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

/// 204, with the new `ETag` if there is one.
fn no_content(version: Option<&str>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = version {
        resp.headers_mut().insert(header::ETAG, etag(v));
    }
    resp
}
