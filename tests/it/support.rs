//! Shared helpers: running the binary, temp dirs, waiting for ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vpcbox"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn vpcbox(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run vpcbox")
}

/// A free TCP/UDP port on loopback (racy by nature, good enough for tests),
/// never the same one twice in this process: the second of two servers
/// handed one port would be refused.
/// Writes an admin token file private to its owner (vpcbox refuses one
/// that its group or others can read).
pub fn write_token(path: &Path, token: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()).unwrap();
}

pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = s.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A config for tests: high free ports, data in `dir`, anything else from `extra`.
pub fn write_config(dir: &Path, extra: &str) -> (PathBuf, u16, u16) {
    let (dhcp, http) = (free_port(), free_port());
    let text = format!(
        r#"[storage]
path = "{data}"

[dhcp]
listen = "127.0.0.1:{dhcp}"
server_id = "10.0.0.1"

[gateway]
listen = "127.0.0.1:{http}"
admin_token_file = "{data}/admin.token"

[process]
shutdown_grace = "5s"
{extra}"#,
        data = dir.join("data").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (path, dhcp, http)
}

/// A running `vpcbox run --headless`, killed on drop.
pub struct Running {
    pub child: Child,
}

impl Running {
    pub fn start(config: &Path) -> Self {
        let child = Command::new(bin())
            .args(["run", "--headless", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vpcbox");
        Self { child }
    }

    /// Waits until `/readyz` on `http` answers 200: the store is open,
    /// the signal handlers are installed and every socket is bound. A
    /// debug build on a loaded machine can take seconds to get there.
    pub fn wait_ready(&mut self, http: u16) {
        let mut exited = false;
        let ready = eventually(Duration::from_secs(60), || {
            exited = self.child.try_wait().is_ok_and(|s| s.is_some());
            exited || http_status(http, "/readyz") == 200
        });
        if !ready || exited {
            let _ = self.child.kill();
            panic!("not ready (exited: {exited}): {}", self.stderr());
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for exit, at most `limit`; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on its own connection, with `token` as bearer if
/// given; (status, body), or (0, "") if nothing answers within `timeout`.
pub fn http_request(
    to: std::net::SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(timeout));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut buf).is_err() {
        return (0, String::new());
    }
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// The status of `GET path` on 127.0.0.1:`port`; 0 without an answer.
pub fn http_status(port: u16, path: &str) -> u16 {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    http_request(to, None, "GET", path, "", Duration::from_secs(5)).0
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}
