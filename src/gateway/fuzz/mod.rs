//! Entry points for the HTTP/1.1 response framing fuzz target
//! (`fuzz/fuzz_targets/h1_framing.rs`) and the tests that run the same
//! differential check in CI: [`ours`] reads a response the way the
//! upstream client does (the same head and body code, fed in reads of
//! chosen sizes), and its [`Outcome`] must equal that of the reference in
//! `fuzz/h1_reference.rs`, written from RFC 9112 alone.

use bytes::{Bytes, BytesMut};

use super::upstream::h1wire::{self, header_map, take_head, BodyState, Framing};

/// Most header fields in a response head.
pub const MAX_HEADERS: usize = h1wire::MAX_HEADERS;
/// Most chunk extension plus trailer bytes in one body.
pub const MAX_CHUNK_META: usize = h1wire::MAX_CHUNK_META;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Eof,
}

/// Where one response's parts are in the bytes an upstream sent, or
/// that they are an error (answered 502, or the body cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Error,
    Response {
        status: u16,
        /// Where the final head ends (after any 1xx heads).
        head_end: usize,
        framing: Body,
        /// The body's data, decoded.
        body: Vec<u8>,
        /// Where the response ends: the next one would start here.
        end: usize,
        /// The connection may carry another request.
        reuse: bool,
    },
}

/// One fuzz input: the first byte chooses HEAD or not and the head size
/// limit, the next four the sizes of the reads, the rest is what the
/// upstream sent before it closed.
pub struct Case<'a> {
    pub stream: &'a [u8],
    pub head_req: bool,
    pub max_head: usize,
    pub reads: [usize; 4],
}

impl<'a> Case<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
        let (sizes, stream) = rest.split_at(rest.len().min(4));
        let mut reads = [usize::MAX; 4];
        for (r, s) in reads.iter_mut().zip(sizes) {
            // Mostly small reads, sometimes as much as there is.
            *r = if *s == 0xff {
                usize::MAX
            } else {
                usize::from(*s) + 1
            };
        }
        Self {
            stream,
            head_req: flags & 1 == 1,
            max_head: [64, 256, 1024, 64 * 1024][usize::from(flags >> 1 & 3)],
            reads,
        }
    }
}

/// Our upstream client's reading of `case`: the head loop of
/// `Exchange::poll_head` and the body loop of `H1Body::poll_frame`, over
/// reads of `case.reads` sizes in turn.
pub fn ours(case: &Case<'_>) -> Outcome {
    read(case).unwrap_or(Outcome::Error)
}

fn read(case: &Case<'_>) -> Option<Outcome> {
    const READ: usize = 16 * 1024;
    let mut up = Upstream {
        case,
        at: 0,
        turn: 0,
    };
    let mut pending = BytesMut::new();
    let head = loop {
        if let Some(head) = take_head(&mut pending, case.head_req, case.max_head).ok()? {
            break head;
        }
        let got = up.next((case.max_head - pending.len()).min(READ));
        if got.is_empty() {
            return None;
        }
        pending.extend_from_slice(got);
    };
    let all = pending.freeze();
    let head_end = up.at - all.len() + head.len;
    header_map(&all, head.length).ok()?;
    let mut buf = all.slice(head.len..);
    let mut state = BodyState::new(head.framing);
    let mut body = Vec::new();
    while !state.is_done() {
        if buf.is_empty() {
            let got = up.next(state.read_size(READ).max(1));
            if got.is_empty() {
                if !matches!(state, BodyState::Eof) {
                    return None;
                }
                break;
            }
            buf = Bytes::copy_from_slice(got);
        }
        body.extend_from_slice(&state.decode(&mut buf).ok()?);
    }
    Some(Outcome::Response {
        status: head.status.as_u16(),
        head_end,
        framing: match head.framing {
            Framing::Empty => Body::Empty,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked,
            Framing::Eof => Body::Eof,
        },
        body,
        end: up.at - buf.len(),
        reuse: head.reuse,
    })
}

/// The upstream's side of [`read`]: the stream in reads of the case's
/// sizes.
struct Upstream<'a> {
    case: &'a Case<'a>,
    at: usize,
    turn: usize,
}

impl<'a> Upstream<'a> {
    /// The next read, of at most `max` bytes; empty: the upstream closed.
    fn next(&mut self, max: usize) -> &'a [u8] {
        let stream = self.case.stream;
        let n = self.case.reads[self.turn % 4]
            .min(max)
            .min(stream.len() - self.at);
        self.turn += 1;
        self.at += n;
        &stream[self.at - n..self.at]
    }
}

#[cfg(test)]
#[path = "../../../fuzz/h1_reference.rs"]
mod reference;

#[cfg(test)]
mod tests;
