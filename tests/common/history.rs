//! A history of what clients were told (ACKs with their lease ends, NAKs,
//! their own releases and expiries), recorded on the clients' side, and a
//! checker that proves over it and a final dump of the store:
//! (a) no address held by two clients at overlapping times;
//! (b) no ACKed lease lost: every ACKed, unreleased, unexpired lease is in
//!     the dump, for its client, bound, running at least as long;
//! (c) a client's address is stable: it never gets another address, nor a
//!     NAK for its own, while its lease runs.
//!
//! Times are Unix seconds (f64), so that shell hook scripts (`date +%s.%N`)
//! and Rust clients write the same clock. A client computes its lease end
//! from when it *sent* the request (RFC 2131 §4.4.1), which is never later
//! than the server's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A DHCPACK or an API allocation: the client holds `ip` until `lease_end`.
    Ack {
        lease_end: f64,
    },
    Nak,
    /// The client gave the address back (DHCPRELEASE or API DELETE).
    Release,
    /// The client noticed its lease ran out.
    Expire,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub t: f64,
    /// Who answered (server id or node name); "-" for the client's own acts.
    pub node: String,
    /// The client key (`mac:…`).
    pub client: String,
    pub ip: Ipv4Addr,
    pub kind: Kind,
}

/// Unix time now, in seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Events from many threads (and hook-script logs), in one list.
#[derive(Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    pub fn record(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }

    pub fn ack(&self, node: &str, client: &str, ip: Ipv4Addr, lease_end: f64) {
        self.event(node, client, ip, Kind::Ack { lease_end });
    }

    pub fn event(&self, node: &str, client: &str, ip: Ipv4Addr, kind: Kind) {
        self.record(Event {
            t: now(),
            node: node.to_owned(),
            client: client.to_owned(),
            ip,
            kind,
        });
    }

    /// Adds the events of a hook-script log (see [`parse_line`]); returns
    /// how many lines it could not read.
    pub fn add_log(&self, text: &str) -> usize {
        let mut bad = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_line(line) {
                Some(e) => self.record(e),
                None => bad += 1,
            }
        }
        bad
    }

    /// Every event so far, in time order.
    pub fn events(&self) -> Vec<Event> {
        let mut v = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_by(|a, b| a.t.total_cmp(&b.t));
        v
    }
}

/// One hook-script line: `T NODE CLIENT ack|nak|release|expire IP [LEASE_SECONDS]`
/// (the lease end of an ack is T + LEASE_SECONDS).
pub fn parse_line(line: &str) -> Option<Event> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (t, ip) = (f.first()?.parse::<f64>().ok()?, f.get(4)?.parse().ok()?);
    let kind = match *f.get(3)? {
        "ack" => Kind::Ack {
            lease_end: t + f.get(5)?.parse::<f64>().ok()?,
        },
        "nak" => Kind::Nak,
        "release" => Kind::Release,
        "expire" => Kind::Expire,
        _ => return None,
    };
    Some(Event {
        t,
        node: f.get(1)?.to_string(),
        client: f.get(2)?.to_string(),
        ip,
        kind,
    })
}

/// One lease of the final dump (`GET /v1/leases`).
#[derive(Clone, Debug, PartialEq)]
pub struct Dumped {
    pub ip: Ipv4Addr,
    pub client: String,
    pub state: String,
    pub expires_at: f64,
}

impl Dumped {
    /// The leases of one `/v1/leases` page (`{"leases": [...]}`).
    pub fn from_page(page: &serde_json::Value) -> Vec<Self> {
        let Some(all) = page["leases"].as_array() else {
            return Vec::new();
        };
        all.iter()
            .filter_map(|l| {
                Some(Self {
                    ip: l["ip"].as_str()?.parse().ok()?,
                    client: l["client"].as_str()?.to_owned(),
                    state: l["state"].as_str()?.to_owned(),
                    expires_at: l["expires_at"].as_f64()?,
                })
            })
            .collect()
    }
}

/// What the checker found; empty lists are a pass.
#[derive(Debug, Default)]
pub struct Report {
    pub double: Vec<String>,
    pub lost: Vec<String>,
    pub unstable: Vec<String>,
    pub acks: usize,
    pub clients: usize,
    /// Leases open at the dump that it was checked against.
    pub open_at_dump: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.double.is_empty() && self.lost.is_empty() && self.unstable.is_empty()
    }

    /// Panics with every violation.
    pub fn assert_ok(&self) {
        assert!(
            self.ok(),
            "history violations:\ndouble allocations: {:#?}\nlost acked leases: {:#?}\nunstable addresses: {:#?}",
            self.double,
            self.lost,
            self.unstable
        );
    }
}

/// A client holding an address from `start` to `end`.
#[derive(Clone, Debug)]
struct Hold {
    client: String,
    ip: Ipv4Addr,
    start: f64,
    end: f64,
}

/// Checks `events` and the `dump` taken at `dump_t`. `slack` (seconds)
/// absorbs the gap between when a client and the server note one moment.
pub fn check(events: &[Event], dump: &[Dumped], dump_t: f64, slack: f64) -> Report {
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| a.t.total_cmp(&b.t));
    let mut r = Report::default();
    let mut holds = Holds::default();
    for e in &sorted {
        match e.kind {
            Kind::Ack { lease_end } => holds.ack(e, lease_end, &mut r),
            Kind::Nak | Kind::Release | Kind::Expire => holds.end(e, slack, &mut r),
        }
    }
    r.acks = sorted
        .iter()
        .filter(|e| matches!(e.kind, Kind::Ack { .. }))
        .count();
    r.clients = holds.clients.len();
    check_lost(&holds.open, dump, dump_t, slack, &mut r);
    let mut all = holds.closed;
    all.extend(holds.open.into_values());
    check_double(all, slack, &mut r);
    r
}

/// Every client's current hold, and the holds that ended.
#[derive(Default)]
struct Holds {
    open: BTreeMap<String, Hold>,
    closed: Vec<Hold>,
    clients: BTreeSet<String>,
}

impl Holds {
    /// An ACK extends the client's running hold on the same address, or
    /// starts one (another address while one runs: unstable).
    fn ack(&mut self, e: &Event, lease_end: f64, r: &mut Report) {
        self.clients.insert(e.client.clone());
        if let Some(h) = self.open.get_mut(&e.client).filter(|h| h.end > e.t) {
            if h.ip == e.ip {
                h.end = h.end.max(lease_end);
                return;
            }
            r.unstable.push(format!(
                "{} moved from {} to {} at {:.3} (via {}) while its lease ran to {:.3}",
                e.client, h.ip, e.ip, e.t, e.node, h.end
            ));
        }
        let hold = Hold {
            client: e.client.clone(),
            ip: e.ip,
            start: e.t,
            end: lease_end,
        };
        if let Some(old) = self.open.insert(e.client.clone(), hold) {
            self.closed.push(end_at(old, e.t));
        }
    }

    /// A NAK, release or expiry ends the client's hold on that address (a
    /// NAK while it runs: unstable).
    fn end(&mut self, e: &Event, slack: f64, r: &mut Report) {
        let Some(h) = self.open.get(&e.client).filter(|h| h.ip == e.ip) else {
            return;
        };
        if e.kind == Kind::Nak && h.end > e.t + slack {
            r.unstable.push(format!(
                "{} got a NAK for {} at {:.3} (via {}) while its lease ran to {:.3}",
                e.client, e.ip, e.t, e.node, h.end
            ));
        }
        if let Some(h) = self.open.remove(&e.client) {
            self.closed.push(end_at(h, e.t));
        }
    }
}

fn end_at(mut h: Hold, t: f64) -> Hold {
    h.end = h.end.min(t);
    h
}

/// (b): every lease still running at the dump is in it, bound to its client.
fn check_lost(
    open: &BTreeMap<String, Hold>,
    dump: &[Dumped],
    dump_t: f64,
    slack: f64,
    r: &mut Report,
) {
    for h in open.values().filter(|h| h.end > dump_t + slack) {
        r.open_at_dump += 1;
        let found = dump.iter().find(|d| d.ip == h.ip);
        // The dump's expiry is in whole seconds.
        let kept = found.is_some_and(|d| {
            d.client == h.client && d.state == "bound" && d.expires_at + 1.0 + slack >= h.end
        });
        if !kept {
            r.lost.push(format!(
                "{} was acked {} until {:.3}; the dump has {found:?}",
                h.client, h.ip, h.end
            ));
        }
    }
}

/// (a): per address, no two clients' holds overlap by more than `slack`.
fn check_double(mut holds: Vec<Hold>, slack: f64, r: &mut Report) {
    holds.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.start.total_cmp(&b.start)));
    for (i, a) in holds.iter().enumerate() {
        for b in holds[i + 1..].iter().take_while(|b| b.ip == a.ip) {
            if b.client != a.client && b.start + slack < a.end && a.start + slack < b.end {
                r.double.push(format!(
                    "{} held by {} from {:.3} to {:.3} and by {} from {:.3} to {:.3}",
                    a.ip, a.client, a.start, a.end, b.client, b.start, b.end
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 21, 1, 1);
    const IP2: Ipv4Addr = Ipv4Addr::new(10, 21, 1, 2);

    fn ev(t: f64, client: &str, ip: Ipv4Addr, kind: Kind) -> Event {
        Event {
            t,
            node: "a".into(),
            client: client.into(),
            ip,
            kind,
        }
    }

    fn ack(t: f64, client: &str, ip: Ipv4Addr, lease: f64) -> Event {
        ev(
            t,
            client,
            ip,
            Kind::Ack {
                lease_end: t + lease,
            },
        )
    }

    fn bound(ip: Ipv4Addr, client: &str, expires_at: f64) -> Dumped {
        Dumped {
            ip,
            client: client.into(),
            state: "bound".into(),
            expires_at,
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let h = vec![
            ack(0.0, "mac:1", IP, 10.0),
            ack(5.0, "mac:1", IP, 10.0), // renewal: same address
            ev(8.0, "mac:1", IP, Kind::Release),
            ack(9.0, "mac:2", IP, 10.0), // the released address, to someone else
            ack(1.0, "mac:3", IP2, 10.0),
            ev(11.0, "mac:3", IP2, Kind::Expire),
            ack(12.0, "mac:4", IP2, 100.0), // after the expiry
        ];
        let dump = [bound(IP, "mac:2", 19.0), bound(IP2, "mac:4", 112.0)];
        let r = check(&h, &dump, 15.0, 0.1);
        r.assert_ok();
        assert_eq!((r.acks, r.clients, r.open_at_dump), (5, 4, 2));
    }

    #[test]
    fn a_double_allocation_is_found() {
        let h = vec![ack(0.0, "mac:1", IP, 10.0), ack(4.0, "mac:2", IP, 10.0)];
        let r = check(&h, &[bound(IP, "mac:2", 14.0)], 20.0, 0.1);
        assert_eq!(r.double.len(), 1, "{r:?}");
        assert!(r.double[0].contains("mac:1") && r.double[0].contains("mac:2"));
        // Released first, or expired first: no overlap.
        let released = vec![
            ack(0.0, "mac:1", IP, 10.0),
            ev(3.0, "mac:1", IP, Kind::Release),
            ack(4.0, "mac:2", IP, 10.0),
        ];
        assert!(check(&released, &[], 20.0, 0.1).ok());
        let expired = vec![ack(0.0, "mac:1", IP, 10.0), ack(10.05, "mac:2", IP, 10.0)];
        assert!(check(&expired, &[], 30.0, 0.1).ok());
    }

    #[test]
    fn a_lost_ack_is_found() {
        let h = vec![ack(0.0, "mac:1", IP, 100.0), ack(1.0, "mac:2", IP2, 100.0)];
        // mac:2's lease is missing; a dump with mac:1 on a shorter lease
        // (a renewal acked but not stored) is a loss too.
        let r = check(&h, &[bound(IP, "mac:1", 100.0)], 10.0, 0.1);
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert!(r.lost[0].contains("mac:2"));
        let renewed = vec![ack(0.0, "mac:1", IP, 100.0), ack(50.0, "mac:1", IP, 100.0)];
        let r = check(&renewed, &[bound(IP, "mac:1", 100.0)], 60.0, 0.1);
        assert_eq!(r.lost.len(), 1, "{r:?}");
        // Another client's lease, or a released one, on the address: lost.
        let r = check(&h[..1], &[bound(IP, "mac:9", 100.0)], 10.0, 0.1);
        assert_eq!(r.lost.len(), 1);
        let mut rel = bound(IP, "mac:1", 100.0);
        rel.state = "released".into();
        assert_eq!(check(&h[..1], &[rel], 10.0, 0.1).lost.len(), 1);
        // Released or expired before the dump: nothing to find.
        let gone = vec![
            ack(0.0, "mac:1", IP, 100.0),
            ev(2.0, "mac:1", IP, Kind::Release),
        ];
        assert!(check(&gone, &[], 10.0, 0.1).ok());
        assert!(check(&h, &[], 200.0, 0.1).ok());
    }

    #[test]
    fn a_moved_or_naked_client_is_unstable() {
        let moved = vec![ack(0.0, "mac:1", IP, 10.0), ack(5.0, "mac:1", IP2, 10.0)];
        let r = check(&moved, &[bound(IP2, "mac:1", 15.0)], 6.0, 0.1);
        assert_eq!(r.unstable.len(), 1, "{r:?}");
        let naked = vec![ack(0.0, "mac:1", IP, 10.0), ev(5.0, "mac:1", IP, Kind::Nak)];
        assert_eq!(check(&naked, &[], 20.0, 0.1).unstable.len(), 1);
        // A new address after the old lease ran out, or a NAK for an
        // address it does not hold: fine.
        let later = vec![ack(0.0, "mac:1", IP, 10.0), ack(11.0, "mac:1", IP2, 10.0)];
        assert!(check(&later, &[], 30.0, 0.1).ok());
        let other = vec![
            ack(0.0, "mac:1", IP, 10.0),
            ev(5.0, "mac:1", IP2, Kind::Nak),
        ];
        assert!(check(&other, &[], 30.0, 0.1).ok());
    }

    #[test]
    fn hook_script_lines_parse() {
        let h = History::default();
        let bad = h.add_log(
            "100.5 10.20.0.11 mac:02:00:00:00:01:01 ack 10.20.0.120 3600\n\
             101 10.20.0.11 mac:02:00:00:00:01:01 release 10.20.0.120\n\
             garbage\n",
        );
        assert_eq!(bad, 1);
        let e = h.events();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, Kind::Ack { lease_end: 3700.5 });
        assert_eq!(
            (e[1].kind.clone(), e[1].ip),
            (Kind::Release, Ipv4Addr::new(10, 20, 0, 120))
        );
    }
}
