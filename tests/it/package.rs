//! The Debian package (packaging/, `[package.metadata.deb]`): built with
//! cargo-deb from the debug binary `cargo test` already built (no release
//! build), inspected, installed into a scratch root, then installed for real,
//! run the way `vpcbox.service` runs it (user `vpcbox`, only
//! CAP_NET_BIND_SERVICE and CAP_NET_RAW, no-new-privs) inside network
//! namespaces, asked for a lease by `udhcpc`, and purged.
//!
//! Everything past the file listing needs root (CI is root); as another user
//! those tests fail, unless `VPCBOX_SKIP_NETNS=1` skips them (and says
//! SKIPPED). Tests that install
//! the package for real take a machine-wide lock, so two test runs on one
//! machine do not install and purge under each other.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{bin, eventually, repo};

mod machine;

use machine::{Installed, MachineLock, Netns};

/// CAP_NET_BIND_SERVICE (10) | CAP_NET_RAW (13), as /proc/PID/status prints them.
const UNIT_CAPS: &str = "0000000000002400";
const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    text(&run(Command::new("id").arg("-u"))).trim() == "0"
}

/// True when `test` may not run: not root and `VPCBOX_SKIP_NETNS=1` (the
/// explicit opt-out of every root-only test), which it says loudly. Not
/// root without it: the test fails, so a run that checked nothing cannot
/// pass.
fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    if std::env::var("VPCBOX_SKIP_NETNS").as_deref() == Ok("1") {
        eprintln!("SKIPPED package test {test}: needs root (VPCBOX_SKIP_NETNS=1)");
        return true;
    }
    panic!(
        "package test {test} needs root (dpkg installs, network namespaces); \
         run as root, as scripts/test does in CI, or set VPCBOX_SKIP_NETNS=1 to skip it explicitly"
    );
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The .deb, built once per test process from `target/debug/vpcbox`:
/// `cargo deb --profile dev --no-build` packages the binary this very
/// `cargo test` built (stripped, fast compression: about a second).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let have = Command::new(cargo())
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            eprintln!("cargo-deb missing: installing it (scripts/test normally does)");
            run(Command::new(cargo()).args([
                "install",
                "cargo-deb",
                "--version",
                CARGO_DEB_VERSION,
                "--locked",
            ]));
        }
        let out_dir = bin().parent().expect("target/debug").join("deb-test");
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).expect("mkdir deb-test");
        let out = run(Command::new(cargo())
            .current_dir(repo())
            .args([
                "deb",
                "--profile",
                "dev",
                "--no-build",
                "--fast",
                "--strip",
                "--no-dbgsym",
            ])
            .args(["--quiet", "--output"])
            .arg(&out_dir));
        let path = PathBuf::from(text(&out).trim().lines().last().unwrap_or(""));
        assert!(path.is_file(), "cargo deb printed no .deb: {}", text(&out));
        path
    })
}

fn dpkg_deb(args: &[&str]) -> String {
    text(&run(Command::new("dpkg-deb").args(args).arg(deb())))
}

#[test]
fn packaged_config_is_valid_and_production_ready() {
    let cfg = repo().join("packaging/config.toml");
    let out = run(Command::new(bin()).arg("check").arg("--config").arg(&cfg));
    let resolved = text(&out);
    for want in [
        r#"listen = "0.0.0.0:67""#,
        r#"path = "/var/lib/vpcbox""#,
        r#"admin_token_file = "/etc/vpcbox/admin.token""#,
        r#"listen = "127.0.0.1:8080""#,
        "reservation = []",
    ] {
        assert!(resolved.contains(want), "no {want} in:\n{resolved}");
    }
}

#[test]
fn deb_lists_the_binary_conffile_unit_sysusers_and_man_page() {
    let files = dpkg_deb(&["-c"]);
    for path in [
        "./usr/bin/vpcbox",
        "./etc/vpcbox/config.toml",
        "./usr/lib/systemd/system/vpcbox.service",
        "./usr/lib/sysusers.d/vpcbox.conf",
        "./usr/share/man/man1/vpcbox.1.gz",
    ] {
        assert!(
            files.lines().any(|l| l.ends_with(path)),
            "{path} missing from:\n{files}"
        );
    }
    let info = dpkg_deb(&["-I"]);
    assert!(info.contains("Package: vpcbox"), "{info}");
    assert!(
        info.contains("systemd | systemd-standalone-sysusers"),
        "{info}"
    );
    let conffiles = text(&run(Command::new("dpkg-deb")
        .args(["-I"])
        .arg(deb())
        .arg("conffiles")));
    assert_eq!(conffiles.trim(), "/etc/vpcbox/config.toml");
    let postinst = text(&run(Command::new("dpkg-deb")
        .args(["-I"])
        .arg(deb())
        .arg("postinst")));
    assert!(postinst.contains("systemd-sysusers"), "{postinst}");
    assert!(postinst.contains("deb-systemd-helper enable vpcbox.service"));
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "enabled, never started at install:\n{postinst}"
    );
}

#[test]
fn deb_installs_into_a_scratch_root_and_purges_cleanly() {
    if skip_unless_root("scratch root") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").expect("status");
    let dpkg = |args: &[&str]| {
        // --force-depends: the scratch root has no libc6 or systemd package.
        run(Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args))
    };
    dpkg(&["-i", deb().to_str().expect("utf-8 path")]);

    let passwd = std::fs::read_to_string(r.join("etc/passwd")).expect("passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("vpcbox:"))
        .unwrap_or_else(|| panic!("no user vpcbox in {passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields[5..], ["/var/lib/vpcbox", "/usr/sbin/nologin"]);
    let uid: u32 = fields[2].parse().expect("uid");
    let group = std::fs::read_to_string(r.join("etc/group")).expect("group");
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("vpcbox:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no group vpcbox in {group}"));

    let conf = std::fs::read(r.join("etc/vpcbox/config.toml")).expect("conffile");
    assert_eq!(
        conf,
        std::fs::read(repo().join("packaging/config.toml")).expect("src")
    );
    let unit = r.join("usr/lib/systemd/system/vpcbox.service");
    assert_eq!(
        std::fs::read(&unit).expect("unit"),
        std::fs::read(repo().join("packaging/vpcbox.service")).expect("src")
    );
    let wants = r.join("etc/systemd/system/multi-user.target.wants/vpcbox.service");
    assert!(wants.is_symlink(), "unit not enabled in the scratch root");
    assert_token(&r.join("etc/vpcbox/admin.token"), uid, gid);
    let state = std::fs::metadata(r.join("var/lib/vpcbox")).expect("state dir");
    assert_eq!((state.gid(), state.mode() & 0o777), (gid, 0o750));

    dpkg(&["--purge", "vpcbox"]);
    for gone in ["etc/vpcbox", "var/lib/vpcbox", "usr/bin/vpcbox"] {
        assert!(!r.join(gone).exists(), "{gone} left after purge");
    }
    assert!(!wants.exists(), "enable symlink left after purge");
}

/// 0600 vpcbox:vpcbox (vpcbox refuses a token others can read), 32 random
/// bytes in base64 and a newline.
fn assert_token(path: &Path, uid: u32, gid: u32) {
    let meta = std::fs::metadata(path).expect("admin token");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
        (uid, gid, 0o600),
        "token owner/mode"
    );
    let token = std::fs::read_to_string(path).expect("read token");
    assert_eq!(token.trim_end().len(), 44, "token {token:?}");
    assert!(token.ends_with('\n'));
}

/// `vpcbox run --headless`, started exactly as the unit starts it, in `ns`.
struct AsTheUnit {
    child: Child,
}

impl AsTheUnit {
    fn start(ns: &Netns, config: &Path) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "setpriv"])
            .args([
                "--reuid=vpcbox",
                "--regid=vpcbox",
                "--init-groups",
                "--no-new-privs",
            ])
            .arg("--inh-caps=-all,+net_bind_service,+net_raw")
            .arg("--ambient-caps=-all,+net_bind_service,+net_raw")
            .arg("--bounding-set=-all,+net_bind_service,+net_raw")
            .args(["/usr/bin/vpcbox", "run", "--headless", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec setpriv vpcbox");
        Self { child }
    }

    /// `ip` and `setpriv` exec, so the child's pid becomes vpcbox's.
    fn status(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default()
    }

    fn field(status: &str, name: &str) -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    }

    /// Waits until vpcbox itself runs as `uid` and checks its credentials.
    fn assert_confined(&mut self, uid: u32) {
        let uid = uid.to_string();
        // setpriv changes uid before it drops capabilities and execs, so
        // wait for the exec (the name turns to vpcbox), not just the uid.
        let ok = eventually(Duration::from_secs(5), || {
            let status = self.status();
            Self::field(&status, "Name") == "vpcbox" && Self::field(&status, "Uid") == uid
        });
        assert!(ok, "never ran as vpcbox: {}", self.stderr_now());
        let status = self.status();
        for (field, want) in [
            ("CapEff", UNIT_CAPS),
            ("CapPrm", UNIT_CAPS),
            ("CapBnd", UNIT_CAPS),
            ("CapAmb", UNIT_CAPS),
            ("NoNewPrivs", "1"),
            ("Gid", uid.as_str()),
        ] {
            assert_eq!(Self::field(&status, field), want, "{field} in\n{status}");
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn stderr_now(&mut self) -> String {
        if self.alive() {
            let _ = self.child.kill();
        }
        self.stop_output()
    }

    fn stop_output(&mut self) -> String {
        use std::io::Read;
        let _ = self.child.wait();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM; the exit code, waiting at most the unit's TimeoutStopSec.
    fn terminate(&mut self) -> Option<i32> {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for AsTheUnit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn deb_installs_for_real_and_the_conffile_runs_as_the_unit_would() {
    if skip_unless_root("real install") {
        return;
    }
    let _lock = MachineLock::take();
    let pkg = Installed::install(deb());

    run(Command::new("/usr/bin/vpcbox").args(["check", "--config", "/etc/vpcbox/config.toml"]));
    let (uid, gid) = (pkg.uid(), pkg.gid());
    assert_token(Path::new("/etc/vpcbox/admin.token"), uid, gid);
    let state = std::fs::metadata("/var/lib/vpcbox").expect("state dir");
    assert_eq!((state.uid(), state.mode() & 0o777), (uid, 0o750));
    verify_unit();

    // The packaged config itself, as the unit runs it: binds 0.0.0.0:67 and
    // 127.0.0.1:8080 (in a namespace of its own), reads the token, opens the store.
    let ns = Netns::new("conf");
    let mut vb = AsTheUnit::start(&ns, Path::new("/etc/vpcbox/config.toml"));
    vb.assert_confined(uid);
    std::thread::sleep(Duration::from_millis(700));
    assert!(vb.alive(), "exited early: {}", vb.stderr_now());
    assert_eq!(vb.terminate(), Some(0), "{}", vb.stop_output());
    drop(vb);
    assert_store_written_by(Path::new("/var/lib/vpcbox"), uid);

    pkg.purge();
    for gone in ["/etc/vpcbox", "/var/lib/vpcbox", "/usr/bin/vpcbox"] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    let status = Command::new("dpkg")
        .args(["-s", "vpcbox"])
        .output()
        .expect("dpkg -s");
    assert!(!status.status.success(), "vpcbox still known to dpkg");
    // Kept on purge, as Debian policy asks of system users.
    run(Command::new("getent").args(["passwd", "vpcbox"]));
}

/// The store in `dir` exists and every file in it belongs to `uid`.
fn assert_store_written_by(dir: &Path, uid: u32) {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read state dir")
        .map(|e| e.expect("dir entry"))
        .collect();
    assert!(!entries.is_empty(), "no store written in {}", dir.display());
    for e in entries {
        let owner = e.metadata().expect("metadata").uid();
        assert_eq!(owner, uid, "{} not owned by vpcbox", e.path().display());
    }
}

/// `systemd-analyze verify` on the installed unit (binary and man page in place).
fn verify_unit() {
    let have_man = Command::new("man").arg("--version").output().is_ok();
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if !have_man {
        cmd.arg("--man=no");
    }
    cmd.arg("/usr/lib/systemd/system/vpcbox.service");
    let out = cmd
        .output()
        .expect("systemd-analyze (package systemd; scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "verify: {stderr}"
    );
}

/// The server's config for the lease test: a subnet on the veth in `ns`.
fn lease_config(dir: &Path, iface: &str) -> PathBuf {
    let text = format!(
        r#"[storage]
path = "/var/lib/vpcbox"

[dhcp]
listen = "0.0.0.0:67"
interfaces = ["{iface}"]
server_id = "10.77.0.1"

[[subnet]]
id = "pkgtest"
cidr = "10.77.0.0/24"
pools = ["10.77.0.100-10.77.0.149"]
gateway = "10.77.0.1"
dns = ["10.77.0.1"]
lease_time = "10m"

[gateway]
listen = "127.0.0.1:8080"
admin_token_file = "/etc/vpcbox/admin.token"

[process]
shutdown_grace = "2s"
"#
    );
    let path = dir.join("lease.toml");
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

#[test]
fn packaged_binary_leases_an_address_to_udhcpc_on_port_67() {
    if skip_unless_root("lease") {
        return;
    }
    let _lock = MachineLock::take();
    let pkg = Installed::install(deb());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = lease_config(dir.path(), "vb0");
    run(Command::new("/usr/bin/vpcbox")
        .arg("check")
        .arg("--config")
        .arg(&config));

    let srv = Netns::new("srv");
    let cli = Netns::new("cli");
    srv.veth_to(&cli, "vb0", "10.77.0.1/24", "vb1");
    let mut vb = AsTheUnit::start(&srv, &config);
    vb.assert_confined(pkg.uid());

    let lease = cli.udhcpc("vb1", dir.path());
    assert!(vb.alive(), "server died: {}", vb.stderr_now());
    let Some(ip) = lease else {
        panic!("udhcpc got no lease; server log:\n{}", vb.stderr_now());
    };
    let last: u8 = ip
        .strip_prefix("10.77.0.")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("lease {ip} outside 10.77.0.0/24"));
    assert!((100..=149).contains(&last), "lease {ip} outside the pool");
    assert_eq!(vb.terminate(), Some(0), "{}", vb.stop_output());
    drop(vb);
    pkg.purge();
}
