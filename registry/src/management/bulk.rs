//! `/v1/provisioning/{tenant}/bulk` handlers: start a bulk provisioning job, read its status.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use super::error::{ApiError, bad_request};
use super::{ApiResult, parse_id};
use crate::Registry;
use crate::bulk::Format;
use crate::error::ManageError;

fn format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match kind.as_str() {
        "text/csv" => Ok(Format::Csv),
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
            Ok(Format::JsonLines)
        }
        _ => Err(bad_request(
            "content-type must be text/csv or application/x-ndjson",
        )),
    }
}

/// `POST /v1/provisioning/{tenantId}/bulk[?wait=true]`: 202 with the job (`Location` is its
/// status); with `wait=true`, 200 with the final status.
pub(super) async fn start(
    State(r): State<Registry>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = parse_id(&tenant)?;
    let format = format(&headers)?;
    let bytes = body.map_err(|e| ApiError::Body(e.status(), e.body_text()))?;
    let text =
        String::from_utf8(bytes.to_vec()).map_err(|_| bad_request("the file is not UTF-8"))?;
    let wait = query.as_deref().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "wait" && v == "true")
    });
    let (id, task) = r.start_bulk(&tenant, format, text).await?;
    let location = format!("/v1/provisioning/{tenant}/bulk/{id}");
    if wait {
        task.await
            .map_err(|e| ManageError::Internal(e.to_string()))?;
    }
    let status = r.bulk_status(&tenant, &id).ok_or(ManageError::NotFound)?;
    let code = if wait {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut resp = (code, Json(status.to_json(&id))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `GET /v1/provisioning/{tenantId}/bulk/{jobId}`: the job's progress and failures.
pub(super) async fn status(
    State(r): State<Registry>,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult {
    let tenant = parse_id(&tenant)?;
    let status = r.bulk_status(&tenant, &id).ok_or(ManageError::NotFound)?;
    Ok(Json(status.to_json(&id)).into_response())
}
