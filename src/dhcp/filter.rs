//! The kernel's share of admission in a cluster: a classic BPF filter on
//! each DHCP socket drops the datagrams of MAC-keyed clients whose bucket
//! another node holds, before the kernel queues them or copies them out
//! (every node hears every broadcast). It passes on whatever it cannot
//! judge, for admission to decide and count: a datagram too short for a
//! BOOTREQUEST with a magic cookie, a client identifier (option 61, which
//! keys the client instead of `chaddr`), option overload (52), or options
//! that do not end within [`STEPS`] options and the datagram.

use libc::{
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE,
    BPF_JGT, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_LEN, BPF_MEM, BPF_MISC, BPF_MUL, BPF_RET,
    BPF_RSH, BPF_ST, BPF_SUB, BPF_TAX, BPF_TXA, BPF_W, BPF_X, BPF_XOR,
};
use socket2::{SockFilter, SockRef};

use crate::buckets::{Buckets, BITS, K1, K2};

/// Offsets in what the filter sees: the UDP header, then the BOOTP message.
const UDP: u32 = 8;
const OP: u32 = UDP;
const CHADDR: u32 = UDP + 28;
const COOKIE: u32 = UDP + 236;
const OPTIONS: u32 = UDP + 240;
const MAGIC: u32 = 0x6382_5363;

/// Options walked at most before the filter gives up and passes.
pub const STEPS: usize = 24;

/// Applies `mine` to `socket`: a filter dropping the other buckets, or none
/// when every bucket is this node's.
pub fn apply(socket: SockRef<'_>, mine: &Buckets) -> std::io::Result<()> {
    if mine.is_all() {
        return match socket.detach_filter() {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        };
    }
    socket.attach_filter(&program(mine))
}

/// A jump target: the next instruction, or a label.
#[derive(Debug, Clone, Copy)]
enum To {
    Next,
    L(usize),
}

/// A tiny assembler: instructions with symbolic jumps, resolved at the end.
#[derive(Default)]
struct Asm {
    code: Vec<(u16, To, To, u32)>,
    /// The instruction each label names.
    at: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.at.push(None);
        self.at.len() - 1
    }

    fn here(&mut self, l: usize) {
        self.at[l] = Some(self.code.len());
    }

    fn op(&mut self, code: u32, k: u32) {
        self.code.push((code as u16, To::Next, To::Next, k));
    }

    fn jump(&mut self, code: u32, k: u32, t: To, f: To) {
        self.code.push(((BPF_JMP | code) as u16, t, f, k));
    }

    /// An unconditional jump (any distance).
    fn ja(&mut self, l: usize) {
        self.code
            .push(((BPF_JMP | BPF_JA) as u16, To::L(l), To::Next, 0));
    }

    fn finish(self) -> Vec<SockFilter> {
        let target = |to: To, i: usize| match to {
            To::Next => 0,
            To::L(l) => self.at[l].expect("label placed") - i - 1,
        };
        self.code
            .iter()
            .enumerate()
            .map(|(i, &(code, t, f, k))| {
                if u32::from(code) == BPF_JMP | BPF_JA {
                    return SockFilter::new(code, 0, 0, target(t, i) as u32);
                }
                let short = |d: usize| u8::try_from(d).expect("conditional jump within 255");
                SockFilter::new(code, short(target(t, i)), short(target(f, i)), k)
            })
            .collect()
    }
}

/// The filter for `mine`; `X` walks the options, `A` does the rest.
fn program(mine: &Buckets) -> Vec<SockFilter> {
    let mut a = Asm::default();
    let (pass, end, drop) = (a.label(), a.label(), a.label());
    let (not_request, walk) = (a.label(), a.label());
    // A BOOTREQUEST with the cookie and room for one option and its length.
    a.op(BPF_LD | BPF_W | BPF_LEN, 0);
    a.jump(BPF_JGE | BPF_K, OPTIONS + 2, To::Next, To::L(not_request));
    a.op(BPF_LD | BPF_B | BPF_ABS, OP);
    a.jump(BPF_JEQ | BPF_K, 1, To::Next, To::L(not_request));
    a.op(BPF_LD | BPF_W | BPF_ABS, COOKIE);
    a.jump(BPF_JEQ | BPF_K, MAGIC, To::L(walk), To::Next);
    a.here(not_request);
    a.op(BPF_RET | BPF_K, u32::MAX);
    a.here(walk);
    a.op(BPF_LDX | BPF_W | BPF_IMM, 0);
    for _ in 0..STEPS {
        let (pad, to_end, to_pass, next) = (a.label(), a.label(), a.label(), a.label());
        // The code at X + OPTIONS lies inside the datagram.
        a.op(BPF_LD | BPF_W | BPF_LEN, 0);
        a.op(BPF_ALU | BPF_SUB | BPF_K, OPTIONS);
        a.jump(BPF_JGT | BPF_X, 0, To::Next, To::L(to_pass));
        a.op(BPF_LD | BPF_B | BPF_IND, OPTIONS);
        a.jump(BPF_JEQ | BPF_K, 255, To::L(to_end), To::Next);
        a.jump(BPF_JEQ | BPF_K, 61, To::L(to_pass), To::Next);
        a.jump(BPF_JEQ | BPF_K, 52, To::L(to_pass), To::Next);
        a.jump(BPF_JEQ | BPF_K, 0, To::L(pad), To::Next);
        // So does its length byte; X moves past the option.
        a.op(BPF_LD | BPF_W | BPF_LEN, 0);
        a.op(BPF_ALU | BPF_SUB | BPF_K, OPTIONS + 1);
        a.jump(BPF_JGT | BPF_X, 0, To::Next, To::L(to_pass));
        a.op(BPF_LD | BPF_B | BPF_IND, OPTIONS + 1);
        a.op(BPF_ALU | BPF_ADD | BPF_K, 2);
        a.op(BPF_ALU | BPF_ADD | BPF_X, 0);
        a.op(BPF_MISC | BPF_TAX, 0);
        a.ja(next);
        a.here(to_pass);
        a.op(BPF_RET | BPF_K, u32::MAX);
        a.here(to_end);
        a.ja(end);
        a.here(pad);
        a.op(BPF_MISC | BPF_TXA, 0);
        a.op(BPF_ALU | BPF_ADD | BPF_K, 1);
        a.op(BPF_MISC | BPF_TAX, 0);
        a.here(next);
    }
    a.ja(pass);
    // Options end without a client identifier: the bucket of chaddr
    // (as `buckets::bucket`), kept in M[0].
    a.here(end);
    a.op(BPF_LD | BPF_W | BPF_ABS, CHADDR);
    a.op(BPF_ALU | BPF_MUL | BPF_K, K1);
    a.op(BPF_MISC | BPF_TAX, 0);
    a.op(BPF_LD | BPF_H | BPF_ABS, CHADDR + 4);
    a.op(BPF_ALU | BPF_XOR | BPF_X, 0);
    a.op(BPF_ALU | BPF_MUL | BPF_K, K2);
    a.op(BPF_ALU | BPF_RSH | BPF_K, 32 - BITS);
    a.op(BPF_ST, 0);
    // X: the bit in its word; A: the word's index, then the word.
    a.op(BPF_ALU | BPF_AND | BPF_K, 31);
    a.op(BPF_MISC | BPF_TAX, 0);
    a.op(BPF_LD | BPF_MEM, 0);
    a.op(BPF_ALU | BPF_RSH | BPF_K, 5);
    let test = a.label();
    words(&mut a, &mine.0, 0, test);
    a.here(test);
    a.op(BPF_ALU | BPF_RSH | BPF_X, 0);
    a.op(BPF_ALU | BPF_AND | BPF_K, 1);
    a.jump(BPF_JEQ | BPF_K, 0, To::L(drop), To::Next);
    a.here(pass);
    a.op(BPF_RET | BPF_K, u32::MAX);
    a.here(drop);
    a.op(BPF_RET | BPF_K, 0);
    a.finish()
}

/// Loads into A the word of `words` (the first at index `first`) that A
/// indexes: a binary search, so a few compares whatever the count.
fn words(a: &mut Asm, words: &[u32], first: u32, then: usize) {
    if let [word] = words {
        a.op(BPF_LD | BPF_IMM, *word);
        return a.ja(then);
    }
    let half = words.len() / 2;
    let upper = a.label();
    a.jump(BPF_JGE | BPF_K, first + half as u32, To::L(upper), To::Next);
    self::words(a, &words[..half], first, then);
    a.here(upper);
    self::words(a, &words[half..], first + half as u32, then);
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;
    use crate::buckets::bucket;

    /// A BOOTREQUEST from `mac` with `options` after the cookie.
    fn request(mac: [u8; 6], options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 240];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[28..34].copy_from_slice(&mac);
        p[236..240].copy_from_slice(&MAGIC.to_be_bytes());
        p.extend_from_slice(options);
        p
    }

    fn mac_in(want: bool, mine: &Buckets) -> [u8; 6] {
        (0..=u16::MAX)
            .map(|i| {
                let [a, b] = i.to_be_bytes();
                [2, 0, 0, 0, a, b]
            })
            .find(|&m| mine.holds(m) == want)
            .unwrap()
    }

    /// Real sockets on loopback: what the kernel lets through a filter
    /// holding every third bucket.
    #[test]
    fn the_kernel_drops_only_mac_keyed_requests_of_other_buckets() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut mine = Buckets::NONE;
        (0..4096u16)
            .filter(|b| b % 3 == 0)
            .for_each(|b| mine.insert(b));
        apply(SockRef::from(&rx), &mine).unwrap();
        let (ours, theirs) = (mac_in(true, &mine), mac_in(false, &mine));
        assert_eq!(bucket(ours) % 3, 0);
        let discover = [53, 1, 1, 55, 3, 1, 3, 6, 255];
        let mut cases: Vec<(String, Vec<u8>, bool)> = (0..600u32)
            .map(|i| {
                let [a, b, c, d] = i.wrapping_mul(0x2545_f491).to_be_bytes();
                let mac = [2, a, b, c, d, 7];
                let want = bucket(mac) % 3 == 0;
                (format!("sweep {mac:02x?}"), request(mac, &discover), want)
            })
            .collect();
        let named: Vec<(&str, Vec<u8>, bool)> = vec![
            ("ours", request(ours, &discover), true),
            ("theirs", request(theirs, &discover), false),
            (
                "theirs, padded",
                request(theirs, &[0, 0, 53, 1, 1, 0, 255, 0, 0]),
                false,
            ),
            (
                "theirs with option 61",
                request(theirs, &[53, 1, 1, 61, 2, 0, 1, 255]),
                true,
            ),
            (
                "theirs with option 52",
                request(theirs, &[53, 1, 1, 52, 1, 3, 255]),
                true,
            ),
            (
                "theirs, options without an end",
                request(theirs, &[53, 1, 1]),
                true,
            ),
            (
                "theirs, option past the end",
                request(theirs, &[53, 1, 1, 12, 40, 1]),
                true,
            ),
            (
                "theirs, 24 options",
                request(theirs, &[12, 0].repeat(STEPS)),
                true,
            ),
            (
                "theirs, truncated",
                request(theirs, &[])[..100].to_vec(),
                true,
            ),
            (
                "theirs, a reply",
                {
                    let mut p = request(theirs, &discover);
                    p[0] = 2;
                    p
                },
                true,
            ),
            (
                "theirs, no cookie",
                {
                    let mut p = request(theirs, &discover);
                    p[236] = 0;
                    p
                },
                true,
            ),
        ];
        cases.extend(named.into_iter().map(|(n, p, w)| (n.to_owned(), p, w)));
        // Each case, then a marker (too short to filter) it must precede.
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut buf = [0u8; 1500];
        let got: Vec<bool> = cases
            .iter()
            .map(|(_, p, _)| {
                tx.send_to(p, to).unwrap();
                tx.send_to(b"end", to).unwrap();
                let first = rx.recv(&mut buf).unwrap();
                let passed = first > 3;
                if passed {
                    assert_eq!(rx.recv(&mut buf).unwrap(), 3);
                }
                passed
            })
            .collect();
        for ((name, _, want), got) in cases.iter().zip(got) {
            assert_eq!(got, *want, "{name}");
        }
        apply(SockRef::from(&rx), &Buckets::ALL).unwrap();
        tx.send_to(&request(theirs, &discover), rx.local_addr().unwrap())
            .unwrap();
        assert!(
            rx.recv(&mut buf).is_ok(),
            "no filter once every bucket is ours"
        );
    }
}
