//! `--spawn`: runs `vpcbox run --headless --config <generated>` as a child,
//! waits for `/readyz`, and stops it at the end (SIGTERM, then SIGKILL).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};

/// A free port on 127.0.0.1 for both TCP and UDP (racy by nature; the
/// target reports a clear error if it lost the race).
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1")
}

/// A fresh directory for the spawned target's data and log.
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("vpcbox-replay-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Spawned {
    /// Starts the target; its stderr goes to `log`.
    pub fn start(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let err =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(["run", "--headless", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            // The log is a file: no colour codes in it (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the target exited at once")?;
        Ok(Self {
            child,
            pid,
            log: log.to_owned(),
        })
    }

    /// Polls `GET /readyz` until 200, the child exits, or `limit` passes.
    pub async fn wait_ready(&mut self, base: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the target exited ({status}) before it was ready: {}",
                    self.log_tail()
                );
            }
            if answers(base, "/readyz").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "the target was not ready within {limit:?} ({base}/readyz): {}",
            self.log_tail()
        )
    }

    /// SIGTERM, up to `grace` to drain, then SIGKILL. Returns the exit status text.
    pub async fn stop(&mut self, grace: Duration) -> String {
        if let Ok(Some(s)) = self.child.try_wait() {
            return s.to_string();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(s)) => s.to_string(),
            _ => {
                let _ = self.child.kill().await;
                "killed after the drain timeout".into()
            }
        }
    }

    /// The last lines of the target's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        if tail.is_empty() {
            format!("(empty log {})", self.log.display())
        } else {
            tail.join(" | ")
        }
    }
}

/// True when `GET base+path` answers 2xx within 1 s.
pub async fn answers(base: &str, path: &str) -> bool {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let Ok(req) = http::Request::get(format!("{base}{path}")).body(Empty::new()) else {
        return false;
    };
    let probe = tokio::time::timeout(Duration::from_secs(1), client.request(req)).await;
    matches!(probe, Ok(Ok(r)) if r.status().is_success())
}

/// Polls `GET /healthz` of a target the replay did not start, up to `limit`.
pub async fn wait_healthy(base: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if answers(base, "/healthz").await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("no target answers {base}/healthz (start one, or use --spawn)")
}
