//! Search: `pageSize` (default 30, 1..=200), `pageOffset`, repeatable `filterJson`
//! `{"field": "/json/pointer", "op": "eq", "value": ...}` (all must match; strings support `*`
//! and `?`; an array field matches if any element does), repeatable `sortJson`
//! `{"field", "direction": "asc|desc"}`. The result is `{"total", "result"}`; 404 if empty.
//!
//! Filtering and sorting run in memory over the tenant's documents: simple and exact, and
//! fine for registries of tens of thousands of devices.

use std::cmp::Ordering;
use std::collections::HashSet;

use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, bad_request};
use crate::error::ManageError;

const DEFAULT_PAGE_SIZE: usize = 30;
const MAX_PAGE_SIZE: usize = 200;
/// Longest string filter value: wildcard matching costs pattern length × value length.
const MAX_PATTERN: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    field: String,
    #[serde(default = "eq")]
    op: String,
    value: Value,
}

fn eq() -> String {
    "eq".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sort {
    field: String,
    #[serde(default)]
    direction: Direction,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Direction {
    #[default]
    Asc,
    Desc,
}

/// Parsed search query parameters.
#[derive(Debug)]
pub(super) struct SearchParams {
    page_size: usize,
    page_offset: usize,
    filters: Vec<Filter>,
    sorts: Vec<Sort>,
    /// `isGateway` (devices only).
    pub is_gateway: Option<bool>,
}

fn pointer(field: &str) -> Result<(), ApiError> {
    if field.is_empty() || field.starts_with('/') {
        Ok(())
    } else {
        Err(bad_request(format!("{field:?} is not a JSON pointer")))
    }
}

impl SearchParams {
    /// Parses the raw query string; 400 for malformed values.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut p = SearchParams {
            page_size: DEFAULT_PAGE_SIZE,
            page_offset: 0,
            filters: Vec::new(),
            sorts: Vec::new(),
            is_gateway: None,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "pageSize" => {
                    p.page_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                        .ok_or_else(|| {
                            bad_request(format!("pageSize must be 1..={MAX_PAGE_SIZE}"))
                        })?;
                }
                "pageOffset" => {
                    p.page_offset = value
                        .parse()
                        .map_err(|_| bad_request("pageOffset must be a non-negative integer"))?;
                }
                "filterJson" => {
                    let f: Filter = serde_json::from_str(&value)
                        .map_err(|e| bad_request(format!("invalid filterJson: {e}")))?;
                    if f.value.as_str().is_some_and(|v| v.len() > MAX_PATTERN) {
                        return Err(bad_request(format!(
                            "filterJson values are limited to {MAX_PATTERN} bytes"
                        )));
                    }
                    if f.op != "eq" {
                        return Err(bad_request("filterJson op must be \"eq\""));
                    }
                    pointer(&f.field)?;
                    p.filters.push(f);
                }
                "sortJson" => {
                    let s: Sort = serde_json::from_str(&value)
                        .map_err(|e| bad_request(format!("invalid sortJson: {e}")))?;
                    pointer(&s.field)?;
                    p.sorts.push(s);
                }
                "isGateway" => {
                    p.is_gateway = Some(
                        value
                            .parse()
                            .map_err(|_| bad_request("isGateway must be true or false"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// `*` matches any run of characters, `?` exactly one.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // dp[j]: pattern[..i] matches text[..j].
    let mut dp = vec![false; t.len() + 1];
    dp[0] = true;
    for pc in p {
        let mut next = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            next[j] = match pc {
                '*' => dp[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && dp[j - 1],
                c => j > 0 && dp[j - 1] && t[j - 1] == c,
            };
        }
        dp = next;
    }
    dp[t.len()]
}

fn matches(value: &Value, expected: &Value) -> bool {
    match (value, expected) {
        (Value::Array(items), _) if !expected.is_array() => {
            items.iter().any(|v| matches(v, expected))
        }
        (Value::String(s), Value::String(p)) => wildcard(p, s),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => value == expected,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Filters, sorts and pages `items`; 404 if nothing matches.
pub(super) fn respond(params: &SearchParams, mut items: Vec<Value>) -> Result<Response, ApiError> {
    items.retain(|item| {
        params
            .filters
            .iter()
            .all(|f| item.pointer(&f.field).is_some_and(|v| matches(v, &f.value)))
    });
    if items.is_empty() {
        return Err(ApiError::Manage(ManageError::NotFound));
    }
    items.sort_by(|a, b| {
        params.sorts.iter().fold(Ordering::Equal, |acc, s| {
            acc.then_with(|| {
                let o = compare(a.pointer(&s.field), b.pointer(&s.field));
                if s.direction == Direction::Desc {
                    o.reverse()
                } else {
                    o
                }
            })
        })
    });
    let total = items.len();
    let result: Vec<Value> = items
        .into_iter()
        .skip(params.page_offset)
        .take(params.page_size)
        .collect();
    Ok(axum::Json(json!({ "total": total, "result": result })).into_response())
}

/// Ids of the devices that act as gateways: named in another device's `via`, member of a
/// gateway group (`memberOf`), or allowed to auto-provision devices (`authorities`).
pub(super) fn gateway_ids(devices: &[Value]) -> HashSet<String> {
    let strings = |d: &Value, key: &str| -> Vec<String> {
        d.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let via: HashSet<String> = devices.iter().flat_map(|d| strings(d, "via")).collect();
    devices
        .iter()
        .filter_map(|d| {
            let id = d.get("id")?.as_str()?;
            let gateway = via.contains(id)
                || !strings(d, "memberOf").is_empty()
                || strings(d, "authorities")
                    .iter()
                    .any(|a| a == "auto-provisioning-enabled");
            gateway.then(|| id.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("dev-*", "dev-1"));
        assert!(wildcard("dev-?", "dev-1"));
        assert!(!wildcard("dev-?", "dev-12"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b", "ac"));
        assert!(wildcard("ü?", "üx"));
    }
}
