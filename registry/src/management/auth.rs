//! HTTP Basic authentication of Management API users (when any are configured).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::Registry;

/// The authenticated Management API user (`None` when no users are configured).
#[derive(Clone, Debug)]
pub(crate) struct AuthUser(pub Option<String>);

/// Checks Basic credentials against the configured users; 401 with `WWW-Authenticate` otherwise.
pub(crate) async fn authenticate(
    State(registry): State<Registry>,
    mut req: Request,
    next: Next,
) -> Response {
    let users = &registry.config().users;
    if users.is_empty() {
        req.extensions_mut().insert(AuthUser(None));
        return next.run(req).await;
    }
    let credentials = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let user = credentials.and_then(|c| {
        let (name, password) = c.split_once(':')?;
        users
            .iter()
            .find(|u| {
                u.name == name && constant_time_eq(u.password.as_bytes(), password.as_bytes())
            })
            .map(|u| u.name.clone())
    });
    match user {
        Some(name) => {
            req.extensions_mut().insert(AuthUser(Some(name)));
            next.run(req).await
        }
        None => {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "authentication required"})),
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Ferry Device Registry\""),
            );
            resp
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
