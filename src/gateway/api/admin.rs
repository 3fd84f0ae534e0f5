//! The admin API: the per-client table (read from the latest snapshot) and
//! the isolation set. Every endpoint here needs the bearer token.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::context::{ApiContext, Req};
use super::error::ApiError;
use super::response::Resp;
use super::wire::{created, json_body, no_content, ok, Query};
use crate::client::ClientKey;
use crate::isolation::IsolationEntry;
use crate::stats::{ClientRow, DropReason};

/// Where isolations made through the API are said to come from.
pub const SOURCE: &str = "api";

#[derive(Debug, Serialize)]
pub(super) struct ClientView {
    /// `None` for the "others" row.
    client: Option<String>,
    state: &'static str,
    rate_1s: f64,
    rate_10s: f64,
    served_rate_1s: f64,
    requests: u64,
    served: u64,
    drops: u64,
    drops_by_reason: BTreeMap<&'static str, u64>,
    pending: i64,
}

/// `isolated` if the operator cut the client off; `limited` if quotas have
/// refused it and it is now sending faster than it is being answered (by
/// at least 1/s, so the skew between the two windows does not flicker);
/// else `ok`.
fn state_of(ctx: &ApiContext, row: &ClientRow) -> &'static str {
    if row
        .client
        .as_ref()
        .is_some_and(|c| ctx.isolation.is_isolated(c))
    {
        return "isolated";
    }
    let limited = row
        .drops_by_reason
        .iter()
        .any(|(r, n)| matches!(r, DropReason::RateLimited | DropReason::GlobalRate) && *n > 0);
    if limited && row.rate_1s - row.served_rate_1s >= 1.0 {
        "limited"
    } else {
        "ok"
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// One row as the API shows it.
pub(super) fn view(ctx: &ApiContext, r: &ClientRow) -> ClientView {
    ClientView {
        client: r.client.as_ref().map(ToString::to_string),
        state: state_of(ctx, r),
        rate_1s: finite(r.rate_1s),
        rate_10s: finite(r.rate_10s),
        served_rate_1s: finite(r.served_rate_1s),
        requests: r.requests,
        served: r.served,
        drops: r.drops,
        drops_by_reason: r
            .drops_by_reason
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect(),
        pending: r.pending,
    }
}

/// Top clients, busiest first (as published), the "others" row last.
pub fn clients(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    let q = Query::parse(req.query.as_deref())?;
    let limit = super::ipam::limit(&q, usize::MAX)?;
    let snap = ctx.snapshots.borrow().clone();
    let rows: Vec<ClientView> = snap
        .clients
        .iter()
        .take(limit)
        .map(|r| view(ctx, r))
        .collect();
    let taken_at = snap
        .taken_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ok(&serde_json::json!({ "taken_at": taken_at, "clients": rows }))
}

pub fn isolations(ctx: &ApiContext) -> Result<Resp, ApiError> {
    ok(&serde_json::json!({
        "isolations": ctx.isolation.entries(),
        "events": ctx.isolation.events(),
    }))
}

#[derive(Deserialize)]
struct IsolateBody {
    client: ClientKey,
    /// Who asks, for the change log: `api` (default) or `cli`.
    #[serde(default)]
    source: Option<String>,
}

fn publish_count(ctx: &ApiContext) {
    let n = u64::try_from(ctx.isolation.len()).unwrap_or(u64::MAX);
    ctx.stats.isolated_clients.store(n, Ordering::Relaxed);
}

/// Runs an isolation-set change (it fsyncs) on a blocking thread, never on
/// the gateway's. Cancel-safe: dropped, the change still completes whole.
async fn off_thread<T: Send + 'static>(
    ctx: &ApiContext,
    change: impl FnOnce(&crate::isolation::IsolationSet) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let set = ctx.isolation.clone();
    tokio::task::spawn_blocking(move || change(&set))
        .await
        .map_err(|e| ApiError::Internal(format!("isolation change failed: {e}")))
}

/// 201 with the new entry; 200 with the existing one if already isolated.
/// Durable before it answers.
pub async fn isolate(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    let body: IsolateBody = json_body(&req.body)?;
    let source = match body.source.as_deref() {
        None | Some("api") => SOURCE,
        Some("cli") => "cli",
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "source: '{other}' is not one of api, cli"
            )))
        }
    };
    let client = body.client.clone();
    let fresh = off_thread(ctx, move |set| set.isolate(&client, source)).await??;
    publish_count(ctx);
    let entry: Option<IsolationEntry> = ctx.isolation.entry(&body.client);
    match (fresh, entry) {
        (true, Some(e)) => created(&e),
        (false, Some(e)) => ok(&e),
        // Released by someone else in between: report what we did.
        (_, None) => created(&IsolationEntry {
            client: body.client,
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            source: source.to_owned(),
        }),
    }
}

pub async fn release(ctx: &ApiContext, client: &str) -> Result<Resp, ApiError> {
    let key: ClientKey = client
        .parse()
        .map_err(|e: crate::client::ParseClientKeyError| ApiError::Invalid(e.to_string()))?;
    let k = key.clone();
    if !off_thread(ctx, move |set| set.release(&k, SOURCE)).await?? {
        return Err(ApiError::NotIsolated(key.to_string()));
    }
    publish_count(ctx);
    no_content()
}
