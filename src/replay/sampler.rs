//! Every 100 ms: the target's RSS, pending requests and overload state from
//! `/metrics` (and VmRSS from `/proc` when the replay spawned it), a health
//! probe (`GET /healthz`, 1 s timeout, on its own HTTP/1.1 connection), and
//! the load generators' rates. With a spawned target it also enforces the
//! RSS cap: past it, the target is killed and the run ends as a failure.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::phases::{Recorder, KINDS};
use super::report::Sample;

pub const INTERVAL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

type H1Client = Client<HttpConnector, Empty<Bytes>>;
type Probes = mpsc::UnboundedSender<(usize, bool, Option<Scrape>)>;

pub struct Sampler {
    /// `http://host:port` of the target.
    pub base: String,
    /// The spawned target's pid.
    pub pid: Option<u32>,
    pub rss_cap: u64,
}

/// Numbers read from `/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scrape {
    pub rss: Option<u64>,
    pub pending: Option<f64>,
    pub overload: Option<f64>,
}

/// Reads the three series the replay needs from Prometheus text.
pub fn parse_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        match name {
            "vpcbox_memory_rss_bytes" => s.rss = Some(v as u64),
            "vpcbox_gateway_pending" => *s.pending.get_or_insert(0.0) += v,
            "vpcbox_overload_state" => s.overload = Some(v),
            _ => {}
        }
    }
    s
}

/// (VmRSS bytes, is a zombie) from `/proc/PID/status` text.
pub fn parse_status(text: &str) -> (Option<u64>, bool) {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or("")
    };
    let rss = field("VmRSS:")
        .split_whitespace()
        .next()
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    (rss, field("State:").starts_with('Z'))
}

impl Sampler {
    /// Samples until `cancel`; returns the timeline and, if the target died
    /// or was killed, why. A fatal event also cancels `abort`.
    pub async fn run(
        self,
        rec: Arc<Recorder>,
        cancel: CancellationToken,
        abort: CancellationToken,
    ) -> (Vec<Sample>, Option<String>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = Vec::new();
        let (mut probes, mut results) = (Vec::new(), Vec::new());
        let mut latest = Scrape::default();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last_t, mut last) = (rec.elapsed().as_secs_f64(), rec.totals());
        let fatal = loop {
            tokio::select! {
                () = cancel.cancelled() => break None,
                _ = tick.tick() => {}
            }
            // The probes run on their own, so a slow target (the point of
            // the exercise) cannot stretch the 100 ms RSS sampling; their
            // results are joined to this sample's index afterwards.
            probes.push(tokio::spawn(probe(
                self.base.clone(),
                out.len(),
                tx.clone(),
            )));
            while let Ok(result) = rx.try_recv() {
                if let Some(s) = &result.2 {
                    latest = s.clone();
                }
                results.push(result);
            }
            let (proc_rss, zombie) = self.proc_status();
            let (t, totals) = (rec.elapsed().as_secs_f64(), rec.totals());
            let dt = (t - last_t).max(1e-3);
            let mut rates = [[0.0; 2]; KINDS];
            for ((r, now), before) in rates.iter_mut().zip(&totals).zip(&last) {
                for j in 0..2 {
                    r[j] = now[j].saturating_sub(before[j]) as f64 / dt;
                }
            }
            (last_t, last) = (t, totals);
            out.push(Sample {
                t,
                phase: rec.phase(),
                rss: proc_rss,
                pending: None,
                overload: None,
                health_ok: false,
                rates,
            });
            if let Some(fatal) = self.fatal(proc_rss.or(latest.rss), zombie) {
                abort.cancel();
                break Some(fatal);
            }
        };
        drop(tx);
        for p in probes {
            let _ = p.await; // each ends within its 1 s timeout
        }
        while let Some(result) = rx.recv().await {
            results.push(result);
        }
        for (i, ok, scrape) in results {
            if let Some(s) = out.get_mut(i) {
                s.health_ok = ok;
                let scrape = scrape.unwrap_or_default();
                s.rss = s.rss.or(scrape.rss);
                (s.pending, s.overload) = (scrape.pending, scrape.overload);
            }
        }
        (out, fatal)
    }

    fn proc_status(&self) -> (Option<u64>, bool) {
        self.pid
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .map_or((None, false), |t| parse_status(&t))
    }

    fn fatal(&self, rss: Option<u64>, zombie: bool) -> Option<String> {
        if zombie {
            return Some("target exited during the replay".into());
        }
        let rss = rss.filter(|r| *r > self.rss_cap)?;
        let Some(pid) = self.pid else {
            // Not ours to kill: stop the load instead.
            return Some(format!(
                "RSS passed the cap ({} MiB > {} MiB); load stopped",
                rss >> 20,
                self.rss_cap >> 20
            ));
        };
        // Kill at once: a few more 100 ms of unbounded growth is what the
        // cap is there to prevent. `kill` keeps this crate free of unsafe.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        Some(format!(
            "killed at the RSS cap ({} MiB > {} MiB)",
            rss >> 20,
            self.rss_cap >> 20
        ))
    }
}

/// One health probe and one `/metrics` scrape, each on its own HTTP/1.1
/// connection pool; reports (sample index, healthy, scrape).
async fn probe(base: String, i: usize, tx: Probes) {
    let (metrics, health) = (h1_client(&base), h1_client(&base));
    let (scrape, ok) = tokio::join!(
        get(&metrics, format!("{base}/metrics")),
        get(&health, format!("{base}/healthz")),
    );
    let _ = tx.send((i, ok.is_some(), scrape.map(|t| parse_metrics(&t))));
}

/// The prober is a client of its own (its own loopback source address on a
/// loopback target), as an operator's monitoring would be: the load
/// generators' per-client quotas and connection caps are not its to share.
fn h1_client(base: &str) -> H1Client {
    let mut conn = HttpConnector::new();
    if base.contains("://127.") || base.contains("://localhost") {
        conn.set_local_address(Some(std::net::IpAddr::V4(PROBE_SOURCE)));
    }
    Client::builder(TokioExecutor::new()).build(conn)
}

/// Source address of the health and metrics probes on a loopback target.
const PROBE_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 254);

/// GET with a 1 s timeout; the body on a 2xx.
async fn get(client: &H1Client, url: String) -> Option<String> {
    let req = http::Request::get(url).body(Empty::new()).ok()?;
    let fetch = async {
        let resp = client.request(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(PROBE_TIMEOUT, fetch)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_and_pending_summed() {
        let text = "# HELP vpcbox_memory_rss_bytes RSS\n\
                    # TYPE vpcbox_memory_rss_bytes gauge\n\
                    vpcbox_memory_rss_bytes 52428800\n\
                    vpcbox_gateway_pending{route=\"api\"} 3\n\
                    vpcbox_gateway_pending{route=\"replay_slow\"} 1000\n\
                    vpcbox_gateway_pending_total 99\n\
                    vpcbox_overload_state 2\n\
                    vpcbox_dhcp_packets_total{type=\"discover\",result=\"ok\"} 7\n";
        let s = parse_metrics(text);
        assert_eq!(s.rss, Some(52_428_800));
        assert_eq!(s.pending, Some(1003.0));
        assert_eq!(s.overload, Some(2.0));
        assert_eq!(parse_metrics(""), Scrape::default());
    }

    #[test]
    fn past_the_cap_a_spawned_target_is_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let s = Sampler {
            base: String::new(),
            pid: Some(child.id()),
            rss_cap: 1 << 20,
        };
        assert_eq!(s.fatal(Some(1 << 20), false), None);
        let why = s.fatal(Some(3 << 20), false).unwrap();
        assert_eq!(why, "killed at the RSS cap (3 MiB > 1 MiB)");
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert_eq!(
            s.fatal(None, true).unwrap(),
            "target exited during the replay"
        );
    }

    #[test]
    fn proc_status_rss_and_zombies() {
        let t = "Name:\tvpcbox\nState:\tS (sleeping)\nVmRSS:\t   20480 kB\n";
        assert_eq!(parse_status(t), (Some(20 << 20), false));
        assert_eq!(parse_status("State:\tZ (zombie)\n"), (None, true));
    }
}
