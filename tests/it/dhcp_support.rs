//! DHCP test helpers: an in-process server on a real IPAM (temp sled dir),
//! client packets built with dhcproto, replies decoded with it.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption as O, MessageType as M};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vpcbox::config::{Config, SubnetConfig};
use vpcbox::dhcp::DhcpServer;
use vpcbox::ipam::{Ipam, ReservationSpec, SubnetSpec};
use vpcbox::isolation::IsolationSet;
use vpcbox::shared::Shared;
use vpcbox::stats::Stats;

use crate::netns::{tag, veth, Netns};

/// Config subnet → IPAM spec: the config's subnet is the IPAM's spec.
pub fn spec(s: &SubnetConfig) -> SubnetSpec {
    s.clone()
}

/// Opens the IPAM for `config` in its storage path and starts its committer.
pub fn open_ipam(
    config: &Config,
    stats: Arc<Stats>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Arc<Ipam> {
    let opts = vpcbox::app::store::ipam_options(config);
    let ipam = Ipam::open(&config.storage.path, opts, stats).expect("open ipam");
    let subnets: Vec<_> = config.subnets.iter().map(spec).collect();
    let res: Vec<_> = config
        .reservations
        .iter()
        .map(|r| ReservationSpec {
            subnet: r.subnet.clone(),
            client: r.client.clone(),
            ip: r.ip,
            hostname: r.hostname.clone(),
        })
        .collect();
    ipam.apply_config(&subnets, &res, std::time::SystemTime::now())
        .expect("apply config");
    ipam.spawn(tracker, cancel.clone());
    ipam
}

/// A DHCP server running in-process on its own runtime thread.
pub struct InProcess {
    pub shared: Shared,
    pub ipam: Arc<Ipam>,
    pub addrs: Vec<SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl InProcess {
    /// `config_text` is a whole config; `storage.path` is replaced by a temp dir.
    pub fn start(config_text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in(config_text, dir.path(), None);
        s._dir = Some(dir);
        s
    }

    /// Starts it with its data under `data`, inside `netns` if given.
    pub fn start_in(
        config_text: &str,
        data: &std::path::Path,
        netns: Option<&crate::netns::Netns>,
    ) -> Self {
        let mut config = Config::parse(config_text, "test").expect("config");
        config.storage.path = data.join("data");
        let stats = Stats::new(config.stats.tracked_clients);
        let shared = Shared::new(Arc::new(config), stats.clone(), IsolationSet::in_memory());
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let body = move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // The IPAM's committer outlives the DHCP server: its own token,
                // cancelled once the server has drained.
                let ipam_cancel = CancellationToken::new();
                let ipam = open_ipam(&sh.config, sh.stats.clone(), &sh.tracker, &ipam_cancel);
                let server = match DhcpServer::bind(&sh, ipam.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        ipam_cancel.cancel();
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok((ipam, server.local_addrs())));
                server.run().await;
                ipam_cancel.cancel();
                sh.tracker.close();
                sh.tracker.wait().await;
            });
        };
        let thread = match netns {
            Some(ns) => ns.thread(body),
            None => std::thread::spawn(body),
        };
        let (ipam, addrs) = rx.recv().expect("server thread").expect("bind");
        Self {
            shared,
            ipam,
            addrs,
            thread: Some(thread),
            _dir: None,
        }
    }

    pub fn stop(&mut self) {
        self.shared.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

pub fn mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [2, 0xaa, b[0], b[1], b[2], b[3]]
}

/// A client message built with dhcproto.
pub fn packet(
    kind: M,
    chaddr: [u8; 6],
    giaddr: Ipv4Addr,
    edit: impl FnOnce(&mut v4::Message),
) -> Vec<u8> {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut m = v4::Message::new_with_id(rand_xid(), u, u, u, giaddr, &chaddr);
    m.opts_mut().insert(O::MessageType(kind));
    edit(&mut m);
    m.to_vec().expect("encode")
}

fn rand_xid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn decode(b: &[u8]) -> v4::Message {
    v4::Message::decode(&mut Decoder::new(b)).expect("decode reply")
}

/// Sends `p` to `server` from `sock` and waits up to `limit` for a reply
/// with the same xid.
pub fn exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    p: &[u8],
    limit: Duration,
) -> Option<v4::Message> {
    sock.send_to(p, server).expect("send");
    let xid = decode(p).xid();
    let deadline = std::time::Instant::now() + limit;
    let mut buf = [0u8; 1500];
    while std::time::Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline - std::time::Instant::now() + Duration::from_millis(1),
        ))
        .ok()?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let m = decode(&buf[..n]);
                if m.xid() == xid {
                    return Some(m);
                }
            }
            Err(_) => return None,
        }
    }
    None
}

pub fn msg_type(m: &v4::Message) -> Option<M> {
    m.opts().msg_type()
}

/// Sends `packets` to `to` in one `sendmmsg` call, so they arrive back to
/// back (within microseconds): the first one's IPAM operation is still in
/// flight when the others reach the server.
pub fn send_burst(sock: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iovs: Vec<libc::iovec> = packets
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero msghdr is valid (no name, no control).
            #[allow(unsafe_code)]
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = &addr as *const libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: every header points at `addr` and one iovec over a packet,
    // all alive until the call returns.
    #[allow(unsafe_code)]
    let sent = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            0,
        )
    };
    assert_eq!(sent, packets.len() as libc::c_int, "sendmmsg");
}

/// Three namespaces on veths: clients on the server's own segment (`cli`,
/// no address — `srv` 10.90.0.1) and a relay segment (`srv` 10.92.0.1 —
/// `rel` 10.92.0.2, with the giaddr 10.91.0.1 routed from `srv` through it).
pub struct Topo {
    pub srv: Netns,
    pub cli: Netns,
    pub rel: Netns,
    pub srv_if: String,
    pub cli_if: String,
    /// The relay's end of the relay segment.
    pub rel_if: String,
    /// Config, data and client files of the test.
    pub dir: tempfile::TempDir,
}

pub fn topo() -> Topo {
    let t = tag();
    let (srv, cli, rel) = (Netns::new(), Netns::new(), Netns::new());
    let (srv_if, cli_if, srv_rel, rel_if) = (
        format!("vs{t}"),
        format!("vc{t}"),
        format!("vr{t}"),
        format!("vq{t}"),
    );
    veth(&srv, &srv_if, &cli, &cli_if);
    veth(&srv, &srv_rel, &rel, &rel_if);
    srv.ip(&["addr", "add", "10.90.0.1/24", "dev", &srv_if]);
    srv.ip(&["addr", "add", "10.92.0.1/24", "dev", &srv_rel]);
    srv.ip(&["route", "add", "10.91.0.0/16", "via", "10.92.0.2"]);
    rel.ip(&["addr", "add", "10.92.0.2/24", "dev", &rel_if]);
    rel.ip(&["addr", "add", "10.91.0.1/32", "dev", &rel_if]);
    Topo {
        srv,
        cli,
        rel,
        srv_if,
        cli_if,
        rel_if,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}
