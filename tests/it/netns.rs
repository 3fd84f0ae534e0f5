//! Network namespaces and veth pairs for tests that run real clients.
//! Names are unique per process and test; everything is removed on drop,
//! also when the test panics. Needs root: [`require_root`] fails the test
//! with a clear message unless `VPCBOX_SKIP_NETNS=1` says to skip.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique tag (interface names are limited to 15 bytes).
pub fn tag() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// True when the test may run. Not root: panics, unless
/// `VPCBOX_SKIP_NETNS=1`, in which case it says so and returns false.
pub fn require_root(test: &str) -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        });
    if uid.as_deref() == Some("0") {
        return true;
    }
    if std::env::var("VPCBOX_SKIP_NETNS").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root for network namespaces (VPCBOX_SKIP_NETNS=1)");
        return false;
    }
    panic!("{test} needs root (network namespaces, veth, port 67); run as root or set VPCBOX_SKIP_NETNS=1 to skip it explicitly");
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(prog: &str, args: &[&str]) -> Output {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        Self::with_prefix("vbx")
    }

    /// A namespace named `<prefix>-<tag>` (a prefix per task keeps the
    /// namespaces of tests that run at once apart).
    pub fn with_prefix(prefix: &str) -> Self {
        let name = format!("{prefix}-{}", tag());
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS…`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// A command run inside the namespace (`ip netns exec NS PROG`).
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Spawns `prog args` inside the namespace; killed when the guard drops.
    pub fn spawn(&self, prog: &str, args: &[&str]) -> Proc {
        let child = self
            .command(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        Proc { child: Some(child) }
    }

    /// Runs `f` on a new thread that has entered this namespace (sockets it
    /// and its child threads create live in the namespace).
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name);
            f()
        })
    }

    /// Moves the calling thread into this namespace (for scoped threads;
    /// never call it on a test's own thread).
    pub fn enter(&self) {
        enter(&self.name);
    }
}

/// setns(2) of the calling thread into the named namespace.
#[allow(unsafe_code)]
fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns(2) on a valid namespace fd affects only this thread.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left in the namespace (never this one: only a helper
        // thread of ours ever enters it).
        let me = std::process::id().to_string();
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter(|p| *p != me)
            {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair from `a` (named `a_if`) to `b` (named `b_if`), both up. It
/// disappears with either namespace.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    sh(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    );
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Option<Child>,
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-s", sig, &c.id().to_string()])
                .status();
        }
    }

    /// Waits for it to exit; returns its combined output.
    pub fn wait(mut self) -> (bool, String) {
        let Some(c) = self.child.take() else {
            return (false, String::new());
        };
        let out = c.wait_with_output().expect("wait");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
