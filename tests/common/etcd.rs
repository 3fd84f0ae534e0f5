//! A real etcd (Debian's `etcd-server`, driven with `etcdctl` from
//! `etcd-client`) with one or three members for cluster tests: free ports,
//! data in a temp dir, health waited for; members can be killed (-9),
//! restarted on their data, and the leader found. Every member is killed
//! on drop, also when the test panics.
//!
//! By default the members listen on loopback in this process's namespace;
//! [`EtcdOptions`] puts them on another address inside a network namespace
//! (run through `ip netns exec`), so that other namespaces reach them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where and how many.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    pub members: usize,
    /// The address every member listens on (peer and client ports differ).
    pub host: IpAddr,
    /// The network namespace the members run in (`ip netns exec`); none: this one.
    pub netns: Option<String>,
}

impl EtcdOptions {
    pub fn loopback(members: usize) -> Self {
        Self {
            members,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
        }
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster; all members are killed on drop.
pub struct Etcd {
    opts: EtcdOptions,
    members: Vec<Member>,
    initial_cluster: String,
    dir: tempfile::TempDir,
}

/// How long a member may take to become healthy (elections included).
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

impl Etcd {
    /// `members` (1 or 3) on 127.0.0.1, healthy when this returns.
    pub fn start(members: usize) -> Self {
        Self::start_with(EtcdOptions::loopback(members))
    }

    pub fn start_with(opts: EtcdOptions) -> Self {
        assert!(opts.members >= 1, "an etcd cluster needs a member");
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..opts.members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, url(opts.host, m.peer_port)))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Self {
            opts,
            members,
            initial_cluster,
            dir,
        };
        for i in 0..etcd.members.len() {
            etcd.spawn(i);
        }
        etcd.wait_healthy(HEALTHY_WITHIN);
        etcd
    }

    /// The client URL of every member, dead or alive, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        url(self.opts.host, self.members[i].client_port)
    }

    /// The client ports (what a partition from etcd drops).
    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client_port).collect()
    }

    pub fn host(&self) -> IpAddr {
        self.opts.host
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        let m = &mut self.members[i];
        match m.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                m.child = None;
                false
            }
            None => false,
        }
    }

    /// `kill -9` member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir (it rejoins the cluster) and
    /// waits until the whole cluster answers healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(HEALTHY_WITHIN);
    }

    /// Waits until every running member reports healthy; panics with the
    /// members' logs after `limit`.
    pub fn wait_healthy(&mut self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let live = self.live();
            let ok = !live.is_empty()
                && self
                    .etcdctl_at(&live, &["endpoint", "health"])
                    .status
                    .success();
            if ok {
                return;
            }
            for i in 0..self.members.len() {
                if self.members[i].child.is_some() && !self.is_running(i) {
                    panic!("etcd member {i} exited:\n{}", self.logs());
                }
            }
            if t0.elapsed() > limit {
                panic!("etcd not healthy within {limit:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the current leader among the running members, as they
    /// report it (`etcdctl endpoint status -w json`); None if none agrees.
    pub fn leader(&mut self) -> Option<usize> {
        let live = self.live();
        let out = self.etcdctl_at(&live, &["endpoint", "status", "-w", "json"]);
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        all.as_array()?.iter().find_map(|s| {
            let st = &s["Status"];
            let me = st["header"]["member_id"].as_u64()?;
            (me != 0 && st["leader"].as_u64() == Some(me))
                .then(|| self.index_of(s["Endpoint"].as_str()?))
                .flatten()
        })
    }

    /// Waits for a leader among the running members.
    pub fn wait_leader(&mut self, limit: Duration) -> usize {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(
                t0.elapsed() < limit,
                "no etcd leader within {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl ARGS` against the running members.
    pub fn etcdctl(&mut self, args: &[&str]) -> Output {
        let live = self.live();
        self.etcdctl_at(&live, args)
    }

    /// `put key value`; true when etcd committed it.
    pub fn put(&mut self, key: &str, value: &str) -> bool {
        self.etcdctl(&["put", key, value]).status.success()
    }

    /// The value of `key`, None when absent (or no quorum answered).
    pub fn get(&mut self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        let text = String::from_utf8_lossy(&out.stdout);
        (out.status.success() && !text.is_empty()).then(|| text.trim_end().to_owned())
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<_> = text.lines().rev().take(15).collect();
                let tail: Vec<_> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", m.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn live(&mut self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    fn index_of(&self, endpoint: &str) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.endpoint(i) == endpoint)
    }

    /// `etcdctl ARGS` against the given members only.
    pub fn etcdctl_at(&self, members: &[usize], args: &[&str]) -> Output {
        let endpoints: Vec<_> = members.iter().map(|&i| self.endpoint(i)).collect();
        self.command("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--dial-timeout=1s", "--command-timeout=2s"])
            .args(args)
            .output()
            .expect("etcdctl is needed (apt-get install -y etcd-client)")
    }

    fn command(&self, prog: &str) -> Command {
        match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, prog]);
                c
            }
            None => Command::new(prog),
        }
    }

    fn spawn(&mut self, i: usize) {
        let host = self.opts.host;
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log");
        let (client, peer) = (url(host, m.client_port), url(host, m.peer_port));
        let child = self
            .command("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token(self.dir.path())])
            // Fast elections: a killed leader is replaced within about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd is needed (apt-get install -y etcd-server)");
        self.members[i].child = Some(child);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn url(host: IpAddr, port: u16) -> String {
    format!("http://{}", std::net::SocketAddr::new(host, port))
}

/// A cluster token unique to this cluster: members of two clusters never
/// talk to each other even if a port is reused.
fn token(dir: &std::path::Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vpcbox-test".into())
}

/// A free loopback TCP port, never the same one twice in this process.
fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}
