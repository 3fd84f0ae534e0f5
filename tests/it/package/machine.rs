//! Guards for what the package tests change on the machine: a machine-wide
//! lock, the installed package (purged on drop), network namespaces (deleted
//! on drop). Each undoes itself on drop, so a panic leaves the machine clean.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::run;

const LOCK_FILE: &str = "/run/lock/vpcbox-package-test.lock";

/// Held while a test installs the package for real: `flock` in a child that
/// keeps the lock until it is killed (on drop).
pub struct MachineLock {
    child: Child,
}

impl MachineLock {
    pub fn take() -> Self {
        let mut child = Command::new("flock")
            .args(["--exclusive", "--timeout", "300", LOCK_FILE])
            .args(["-c", "echo locked; exec cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flock");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("flock stdout");
        BufReader::new(stdout).read_line(&mut line).expect("flock");
        assert_eq!(line.trim(), "locked", "no lock on {LOCK_FILE}");
        Self { child }
    }
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dpkg`, retried while another dpkg or apt holds its lock.
fn dpkg(args: &[&str]) -> Output {
    let t0 = Instant::now();
    loop {
        let out = Command::new("dpkg").args(args).output().expect("dpkg");
        let locked = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !locked || t0.elapsed() > Duration::from_secs(120) {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The package installed on this machine; purged on drop.
pub struct Installed {
    purged: bool,
}

impl Installed {
    pub fn install(deb: &Path) -> Self {
        // A run that died before its drop may have left it installed.
        let _ = dpkg(&["--purge", "vpcbox"]);
        let out = dpkg(&["-i", deb.to_str().expect("utf-8 path")]);
        let me = Self { purged: false };
        assert!(
            out.status.success(),
            "dpkg -i failed (are systemd and udhcpc installed? scripts/test does it):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        me
    }

    fn id(flag: &str) -> u32 {
        let out = run(Command::new("id").args([flag, "vpcbox"]));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    }

    pub fn uid(&self) -> u32 {
        Self::id("-u")
    }

    pub fn gid(&self) -> u32 {
        Self::id("-g")
    }

    pub fn purge(mut self) {
        self.purged = true;
        let out = dpkg(&["--purge", "vpcbox"]);
        assert!(
            out.status.success(),
            "dpkg --purge: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let _ = dpkg(&["--purge", "vpcbox"]);
        }
    }
}

/// A network namespace with its loopback up; deleted (with its veths) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        let name = format!("vpcbox-pkg-{}-{role}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// A veth pair: `mine` here with `addr`, `theirs` in `other`; both up.
    pub fn veth_to(&self, other: &Netns, mine: &str, addr: &str, theirs: &str) {
        self.ip(&[
            "link",
            "add",
            mine,
            "type",
            "veth",
            "peer",
            "name",
            theirs,
            "netns",
            &other.name,
        ]);
        self.ip(&["addr", "add", addr, "dev", mine]);
        self.ip(&["link", "set", mine, "up"]);
        other.ip(&["link", "set", theirs, "up"]);
    }

    /// Runs busybox `udhcpc` on `iface` here (5 DISCOVERs, 1 s apart) and
    /// returns the address it was bound to, if any.
    pub fn udhcpc(&self, iface: &str, dir: &Path) -> Option<String> {
        let result = dir.join("lease");
        let script = dir.join("udhcpc.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > '{}'\nexit 0\n",
                result.display()
            ),
        )
        .expect("write udhcpc script");
        run(Command::new("chmod").arg("755").arg(&script));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout", "20", "udhcpc"])
            .args([
                "-i", iface, "-f", "-q", "-n", "-t", "5", "-T", "1", "-A", "1", "-s",
            ])
            .arg(&script)
            .output()
            .expect("udhcpc (package udhcpc)");
        eprintln!("udhcpc: {}", String::from_utf8_lossy(&out.stderr));
        let ip = std::fs::read_to_string(&result).ok()?;
        Some(ip.trim().to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
