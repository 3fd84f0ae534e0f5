//! `vpcbox clients | isolate ID | release ID | leases | subnets | status`: thin
//! clients of the HTTP API for headless boxes. Aligned tables by default,
//! the API's own JSON with `--json`.
//!
//! Exit codes: 0 ok; 64 bad input or an API refusal (unknown subnet, not
//! isolated…); 69 vpcbox is not running or not answering at `--api`;
//! 77 (EX_NOPERM) the admin token is missing, unreadable or refused.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::client::ClientKey;
use crate::config::Config;
use crate::exit::{self, Exit};

/// The token is missing, unreadable or refused (sysexits EX_NOPERM).
pub const NOPERM: i32 = 77;
/// Per request: connect, answer and body.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (10,000 leases are ~2 MiB).
const MAX_ANSWER: usize = 32 << 20;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminOpts {
    /// API base URL (default: http:// + the config's gateway.listen)
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Admin token file (default: the config's gateway.admin_token_file)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Busiest clients: rates, drops, pending work and state
    Clients {
        /// Show at most this many rows
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Cut a client off (mac:…, id:…, ip:…, or a bare MAC or IP); survives restarts
    Isolate {
        client: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Undo an isolation
    Release {
        client: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Leases, in address order
    Leases {
        /// Only this subnet
        #[arg(long)]
        subnet: Option<String>,
        /// Only this state (offered, bound, released, expired, declined)
        #[arg(long)]
        state: Option<String>,
        /// At most this many (default 1000); fetched a page at a time
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Subnets with pool usage
    Subnets {
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// One screen: health, overload, memory by owner, top clients, pending work, isolations
    Status {
        #[command(flatten)]
        opts: AdminOpts,
    },
}

impl AdminCommand {
    fn opts(&self) -> &AdminOpts {
        match self {
            Self::Clients { opts, .. }
            | Self::Isolate { opts, .. }
            | Self::Release { opts, .. }
            | Self::Leases { opts, .. }
            | Self::Subnets { opts }
            | Self::Status { opts } => opts,
        }
    }

    /// Admin commands must send the token; IPAM reads send it if readable.
    fn needs_token(&self) -> bool {
        matches!(
            self,
            Self::Clients { .. }
                | Self::Isolate { .. }
                | Self::Release { .. }
                | Self::Status { .. }
        )
    }
}

/// Runs one admin command, printing to stdout.
pub fn run(cmd: AdminCommand, cfg: &Config) -> Result<(), Exit> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Exit::software(format!("cannot start the runtime: {e}")))?;
    let text = rt.block_on(execute(&cmd, cfg))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Exit::software(format!("stdout: {e}")))
}

/// Runs one admin command; returns what it prints.
pub async fn execute(cmd: &AdminCommand, cfg: &Config) -> Result<String, Exit> {
    let opts = cmd.opts();
    let target = Target {
        base: base_url(opts, cfg)?,
        token: token(opts, cfg, cmd.needs_token())?,
    };
    match cmd {
        AdminCommand::Clients { limit, .. } => {
            let q = limit.map(|n| format!("?limit={n}")).unwrap_or_default();
            let body = target
                .call(Method::GET, &format!("/v1/clients{q}"), None)
                .await?;
            render(opts, &body, render::clients)
        }
        AdminCommand::Isolate { client, .. } => {
            let key = client_key(client)?;
            let req = serde_json::json!({ "client": key.to_string(), "source": "cli" });
            let (status, body) = target
                .send(Method::POST, "/v1/isolations", Some(req))
                .await?;
            let fresh = status == StatusCode::CREATED;
            render(opts, &body, |v| render::isolated(v, fresh))
        }
        AdminCommand::Release { client, .. } => {
            let key = client_key(client)?;
            let path = format!("/v1/isolations/{}", encode(&key.to_string()));
            target.call(Method::DELETE, &path, None).await?;
            let done = serde_json::json!({ "client": key.to_string(), "released": true });
            render(opts, done.to_string().as_bytes(), |_| {
                Ok(format!("released {key}\n"))
            })
        }
        AdminCommand::Leases {
            subnet,
            state,
            limit,
            ..
        } => {
            let mut q = Vec::new();
            subnet
                .iter()
                .for_each(|s| q.push(format!("subnet={}", encode(s))));
            state
                .iter()
                .for_each(|s| q.push(format!("state={}", encode(s))));
            let want = limit.unwrap_or(LEASE_PAGE);
            let body = all_leases(&target, &q, want).await?;
            render(opts, &body, |v| render::leases(v, SystemTime::now()))
        }
        AdminCommand::Subnets { .. } => {
            let body = target.call(Method::GET, "/v1/subnets", None).await?;
            render(opts, &body, render::subnets)
        }
        AdminCommand::Status { .. } => {
            let body = target.call(Method::GET, "/v1/status", None).await?;
            render(opts, &body, |b| status::render(b, SystemTime::now()))
        }
    }
}

/// Leases asked for per request when following `next_cursor`.
const LEASE_PAGE: usize = 1000;

/// Up to `want` leases, following `next_cursor` page by page; answers in the
/// API's shape (`leases`, `truncated`, `next_cursor`) for all of them.
async fn all_leases(target: &Target, query: &[String], want: usize) -> Result<Vec<u8>, Exit> {
    let unexpected = |e: String| Exit::software(format!("unexpected answer from vpcbox: {e}"));
    let mut leases: Vec<serde_json::Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.to_vec();
        q.push(format!(
            "limit={}",
            (want - leases.len()).clamp(1, LEASE_PAGE)
        ));
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", encode(c)));
        }
        let body = target
            .call(Method::GET, &format!("/v1/leases?{}", q.join("&")), None)
            .await?;
        let mut page: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| unexpected(e.to_string()))?;
        match page.get_mut("leases").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(more)) => leases.extend(more),
            _ => return Err(unexpected("no leases array".into())),
        }
        let next = page
            .get("next_cursor")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        if next.is_some() && next == cursor {
            return Err(unexpected("next_cursor does not advance".into()));
        }
        if next.is_none() || leases.len() >= want {
            leases.truncate(want);
            let out = serde_json::json!({
                "leases": leases,
                "truncated": next.is_some(),
                "next_cursor": next,
            });
            return Ok(out.to_string().into_bytes());
        }
        cursor = next;
    }
}

/// `--json`: the API's bytes as they came; else the table.
fn render(
    opts: &AdminOpts,
    body: &[u8],
    table: impl FnOnce(&[u8]) -> Result<String, serde_json::Error>,
) -> Result<String, Exit> {
    if opts.json {
        let mut s = String::from_utf8_lossy(body).trim_end().to_owned();
        s.push('\n');
        return Ok(s);
    }
    table(body).map_err(|e| Exit::software(format!("unexpected answer from vpcbox: {e}")))
}

/// `mac:…`, `id:…`, `ip:…`, or a bare MAC or IP address.
pub fn client_key(s: &str) -> Result<ClientKey, Exit> {
    s.parse()
        .or_else(|e| {
            crate::client::parse_mac(s)
                .map(ClientKey::Mac)
                .or_else(|| s.parse().ok().map(ClientKey::Ip))
                .ok_or(e)
        })
        .map_err(Exit::usage)
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `--api`, else `http://` + `gateway.listen` (a wildcard address becomes
/// loopback of the same family).
fn base_url(opts: &AdminOpts, cfg: &Config) -> Result<String, Exit> {
    if let Some(api) = &opts.api {
        let api = api.trim_end_matches('/');
        if !api.starts_with("http://") {
            return Err(Exit::usage(format!(
                "--api: '{api}' must be an http:// url (the admin cli speaks plain http)"
            )));
        }
        return Ok(api.to_owned());
    }
    let addr = crate::net::loopback_if_unspecified(cfg.gateway.listen);
    Ok(format!("http://{addr}"))
}

/// The token from `--token-file` or `gateway.admin_token_file`.
fn token(opts: &AdminOpts, cfg: &Config, required: bool) -> Result<Option<String>, Exit> {
    let path = opts
        .token_file
        .clone()
        .unwrap_or_else(|| cfg.gateway.admin_token_file.clone());
    let noperm = |why: String| Exit {
        code: NOPERM,
        message: format!("admin token file '{}' {why}", path.display()),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) if required => Err(noperm("is empty".into())),
        Err(e) if required => Err(noperm(format!("cannot be read: {e}"))),
        _ => Ok(None),
    }
}

struct Target {
    base: String,
    token: Option<String>,
}

impl Target {
    /// Sends a request; a non-2xx answer becomes the matching exit.
    async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> Result<Bytes, Exit> {
        self.send(method, path, json).await.map(|(_, b)| b)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), Exit> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::USER_AGENT, "vpcbox-cli");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if json.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = json.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let req = req
            .body(Full::new(body))
            .map_err(|e| Exit::usage(format!("--api: '{}' is not a usable url: {e}", self.base)))?;
        let slow = || {
            Exit::unavailable(format!(
                "vpcbox at {} did not answer within {TIMEOUT:?}",
                self.base
            ))
        };
        let res = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .map_err(|_| slow())?
            .map_err(|e| self.unreachable(&e))?;
        let status = res.status();
        let bytes =
            tokio::time::timeout(TIMEOUT, Limited::new(res.into_body(), MAX_ANSWER).collect())
                .await
                .map_err(|_| slow())?
                .map_err(|e| {
                    Exit::unavailable(format!("reading the answer from {}: {e}", self.base))
                })?
                .to_bytes();
        if status.is_success() {
            return Ok((status, bytes));
        }
        Err(refusal(status, &bytes))
    }

    fn unreachable(&self, e: &hyper_util::client::legacy::Error) -> Exit {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return Exit::unavailable(match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        format!(
                            "vpcbox is not running at {} (connection refused)",
                            self.base
                        )
                    }
                    _ => format!("cannot reach vpcbox at {} ({io})", self.base),
                });
            }
            source = s.source();
        }
        Exit::unavailable(format!("cannot reach vpcbox at {} ({e})", self.base))
    }
}

/// The exit for a non-2xx answer, with the API's own message.
fn refusal(status: StatusCode, body: &[u8]) -> Exit {
    #[derive(Deserialize)]
    struct Wire {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    if status == StatusCode::UNAUTHORIZED {
        return Exit {
            code: NOPERM,
            message: "the admin token was refused (401)".into(),
        };
    }
    let message = serde_json::from_slice::<Wire>(body)
        .map(|w| w.error.message)
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_lowercase());
    let code = match status.as_u16() {
        400..=499 if status != StatusCode::TOO_MANY_REQUESTS => exit::USAGE,
        500 => exit::SOFTWARE,
        _ => exit::UNAVAILABLE,
    };
    Exit {
        code,
        message: format!("{message} ({})", status.as_u16()),
    }
}

/// Unix seconds to a relative time: `in 59m 3s`, `3m ago`.
fn relative(at: u64, now: SystemTime) -> String {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let d = |s: u64| humantime::format_duration(Duration::from_secs(s)).to_string();
    match at.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", d(at - now)),
        std::cmp::Ordering::Equal => "now".into(),
        std::cmp::Ordering::Less => format!("{} ago", d(now - at)),
    }
}

mod render;
mod status;
