//! A throwaway etcd for this module's tests: one member on loopback ports
//! in a temp dir, killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestEtcd {
    child: Option<Child>,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl TestEtcd {
    /// Starts a member on two free loopback ports; if it exits before it
    /// is healthy (a port taken between the pick and its bind, by another
    /// test), again on two others.
    pub fn start() -> Self {
        for _ in 0..3 {
            if let Some(etcd) = Self::try_start() {
                return etcd;
            }
        }
        panic!("etcd did not start (three tries)");
    }

    fn try_start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server) must be installed");
        let mut etcd = Self {
            child: Some(child),
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !etcd.healthy() {
            let exited = etcd
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return None;
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(etcd)
    }

    fn healthy(&self) -> bool {
        Command::new("etcdctl")
            .args(["--endpoints", &self.url, "endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `etcdctl get` of `key` (prefix if `prefix`): the output lines.
    pub fn get(&self, key: &str, prefix: bool) -> Vec<String> {
        let mut cmd = Command::new("etcdctl");
        cmd.args(["--endpoints", &self.url, "get", key])
            .env("ETCDCTL_API", "3");
        if prefix {
            cmd.arg("--prefix");
        }
        let out = cmd.output().expect("etcdctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A two-worker runtime, as a node's tests run it.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
