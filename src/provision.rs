//! `ferry provision`: uploads a bulk provisioning file (CSV or JSON lines) to the Management API
//! and follows the job until it ends, then prints a summary of the failed rows.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// How a bulk job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows in the file.
    pub total: u64,
    /// Devices created.
    pub created: u64,
    /// Failed rows: row number and reason.
    pub failures: Vec<(u64, String)>,
}

/// Management API access: base URL (`http://127.0.0.1:28080`) and an optional Basic user.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL without `/v1`.
    pub base: String,
    /// User and password.
    pub user: Option<(String, String)>,
}

impl Target {
    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = client.request(method, format!("{}{path}", self.base.trim_end_matches('/')));
        match &self.user {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }
}

fn content_type(file: &Path) -> anyhow::Result<&'static str> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok("text/csv"),
        Some("jsonl" | "ndjson") => Ok("application/x-ndjson"),
        _ => bail!("{}: use a .csv, .jsonl or .ndjson file", file.display()),
    }
}

/// Uploads `file` for `tenant` and waits for the job, printing progress when `progress` is set.
pub async fn run(
    target: &Target,
    tenant: &str,
    file: &Path,
    progress: bool,
) -> anyhow::Result<Summary> {
    let kind = content_type(file)?;
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let response = target
        .request(
            &client,
            reqwest::Method::POST,
            &format!("/v1/provisioning/{tenant}/bulk"),
        )
        .header("content-type", kind)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the Management API at {}", target.base))?;
    if response.status() != reqwest::StatusCode::ACCEPTED {
        bail!(
            "upload refused: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("the answer has no job location")?;
    loop {
        let status: Value = target
            .request(&client, reqwest::Method::GET, &location)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let number = |key: &str| status[key].as_u64().unwrap_or(0);
        if progress {
            let (done, total) = (number("processed"), number("total").max(1));
            let width = 30 * done / total;
            eprint!(
                "\r[{}{}] {done}/{total} rows, {} failed",
                "#".repeat(usize::try_from(width).unwrap_or(0)),
                " ".repeat(usize::try_from(30 - width.min(30)).unwrap_or(0)),
                number("failed")
            );
            let _ = std::io::stderr().flush();
        }
        if status["status"] == "done" {
            if progress {
                eprintln!();
            }
            let failures = status["failures"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f["row"].as_u64().unwrap_or(0),
                        f["reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            return Ok(Summary {
                total: number("total"),
                created: number("created"),
                failures,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints a summary for people.
pub fn print(summary: &Summary) {
    println!(
        "{} rows: {} devices created, {} failed",
        summary.total,
        summary.created,
        summary.failures.len()
    );
    for (row, reason) in summary.failures.iter().take(50) {
        println!("  row {row}: {reason}");
    }
    if summary.failures.len() > 50 {
        println!("  ... and {} more", summary.failures.len() - 50);
    }
}
