//! Heads on the wire: request heads out, response heads in (`httparse`),
//! and how the response body is delimited.

use std::io::Write;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::super::hop::is_hop_by_hop;

/// Most header fields a response head may have (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;

/// Parses a response head into `fields`, left uninitialised: httparse only
/// reads the fields it wrote, and filling 100 empty ones first (3.2 KiB)
/// cost more than parsing a small head.
fn parse_response<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> (httparse::Response<'h, 'b>, httparse::Result<usize>) {
    let mut resp = httparse::Response::new(&mut []);
    let r = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, fields);
    (resp, r)
}

/// Most bytes of chunk extensions plus trailers one body may carry; they
/// are skipped, not kept, but an endless stream of them must end.
pub(crate) const MAX_CHUNK_META: usize = 16 * 1024;

/// What is wrong with what the upstream sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("bad response head: {0}")]
    Head(&'static str),
    #[error("response head over {0} bytes")]
    HeadTooLarge(usize),
    #[error("bad content-length")]
    ContentLength,
    #[error("bad chunked body: {0}")]
    Chunk(&'static str),
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqFraming {
    /// No body and no framing header (GET and friends).
    None,
    Length(u64),
    Chunked,
}

impl ReqFraming {
    /// `exact`: the body's exact length if known; `empty`: it has none.
    /// An empty body of a method that usually has one says so with
    /// `content-length: 0`, as the downstream client's would have.
    pub(crate) fn of(method: &Method, empty: bool, exact: Option<u64>, had_length: bool) -> Self {
        let bodiless = matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
        );
        match (empty, exact) {
            (true, _) if bodiless && !had_length => Self::None,
            (true, _) => Self::Length(0),
            (false, Some(n)) => Self::Length(n),
            (false, None) => Self::Chunked,
        }
    }
}

/// The longest framing field written: `content-length: ` and 20 digits.
pub(super) const FRAMING_FIELD: usize = 16 + 20 + 2;

/// The request head: request line, `Host` first, the other fields as they
/// are (hop-by-hop ones were stripped by the caller), and the framing
/// header chosen here (any `content-length` or `transfer-encoding` in
/// `headers` is replaced). One allocation of the exact size.
pub(crate) fn encode_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: ReqFraming,
) -> Vec<u8> {
    let skip = |n: &HeaderName| {
        n == header::HOST || n == header::CONTENT_LENGTH || n == header::TRANSFER_ENCODING
    };
    let fields: usize = headers
        .iter()
        .filter(|(n, _)| !skip(n))
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let host = headers.get(header::HOST);
    let len = method.as_str().len()
        + target.len()
        + " HTTP/1.1\r\n".len()
        + 1
        + host.map_or(0, |h| h.len() + "host: \r\n".len())
        + fields
        + FRAMING_FIELD
        + 2;
    let mut out = Vec::with_capacity(len);
    let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| out.extend_from_slice(p));
    put(&[
        method.as_str().as_bytes(),
        b" ",
        target.as_bytes(),
        b" HTTP/1.1\r\n",
    ]);
    if let Some(h) = host {
        put(&[b"host: ", h.as_bytes(), b"\r\n"]);
    }
    for (n, v) in headers.iter().filter(|(n, _)| !skip(n)) {
        put(&[n.as_str().as_bytes(), b": ", v.as_bytes(), b"\r\n"]);
    }
    match framing {
        ReqFraming::None => {}
        ReqFraming::Chunked => put(&[b"transfer-encoding: chunked\r\n"]),
        // Writing to a Vec cannot fail.
        ReqFraming::Length(n) => drop(write!(out, "content-length: {n}\r\n")),
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 204, 304, or `content-length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the connection cannot be reused.
    Eof,
}

/// A response head, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Its length in bytes, the blank line included.
    pub len: usize,
    pub status: StatusCode,
    pub framing: Framing,
    /// Its Content-Length (without a transfer coding, which excludes one).
    pub length: Option<u64>,
    /// The connection may carry another request after this response.
    pub reuse: bool,
}

/// What the bytes so far hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A 1xx interim response of this many bytes, to be skipped.
    Interim(usize),
    Final(Head),
}

/// Parses the response head at the start of `buf`. `head_req`: the
/// request was HEAD, so the response has no body whatever it says.
///
/// Framing that could be read two ways is an error (RFC 9112 allows it,
/// and it is how responses are smuggled): a bare LF (`httparse` takes it
/// as a line end), blank lines before the status line, Transfer-Encoding
/// with Content-Length, in HTTP/1.0, with an empty element or chunked
/// twice, and
/// Content-Lengths that differ.
pub(crate) fn parse_head(buf: &[u8], head_req: bool) -> Result<Parsed, WireError> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let (resp, parsed) = parse_response(buf, &mut fields);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::Head("too many fields")),
        Err(_) => return Err(WireError::Head("malformed")),
    };
    // httparse has checked that every CR is followed by LF.
    if !buf.starts_with(b"HTTP/") {
        return Err(WireError::Head("bytes before the status line"));
    }
    if has_bare_lf(&buf[..len]) {
        return Err(WireError::Head("bare LF"));
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Head("bad status"))?;
    match code {
        101 => return Err(WireError::Head("unexpected 101")),
        100..=199 => return Ok(Parsed::Interim(len)),
        _ => {}
    }
    let http10 = resp.version != Some(1);
    let mut close = false;
    let mut keep_alive = false;
    let mut coded = false;
    let mut codings = 0;
    let mut chunked = 0;
    let mut last_chunked = false;
    let mut length = None;
    for f in resp.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(f.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            coded = true;
            // Empty elements are legal, but some readers then take the
            // last (empty) one as the final coding: not chunked.
            if f.value
                .split(|b| *b == b',')
                .any(|c| c.trim_ascii().is_empty())
            {
                return Err(WireError::Head("empty transfer coding"));
            }
            for coding in tokens(f.value) {
                codings += 1;
                last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                chunked += usize::from(last_chunked);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for v in f.value.split(|b| *b == b',') {
                let n = content_length(v.trim_ascii())?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::ContentLength);
                }
                length = Some(n);
            }
        }
    }
    if coded && (length.is_some() || http10 || codings == 0 || chunked > 1) {
        return Err(WireError::Head("ambiguous transfer-encoding"));
    }
    // An HTTP/1.0 upstream keeps the connection only when it says so.
    close |= http10 && !keep_alive;
    let framing = if head_req || code == 204 || code == 304 {
        Framing::Empty
    } else if coded && last_chunked {
        Framing::Chunked
    } else if coded {
        // A coding after chunked: the body ends at the close (§6.3).
        Framing::Eof
    } else {
        match length {
            None => Framing::Eof,
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    let reuse = !close && framing != Framing::Eof;
    Ok(Parsed::Final(Head {
        len,
        status,
        framing,
        length: length.filter(|_| !coded),
        reuse,
    }))
}

/// An LF not preceded by CR.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// Skips the 1xx heads at the start of `pending` and parses the final
/// one, which stays in `pending`; `None` until it has all come. A head
/// (each one) longer than `max` bytes is an error.
pub(crate) fn take_head(
    pending: &mut BytesMut,
    head_req: bool,
    max: usize,
) -> Result<Option<Head>, WireError> {
    while !pending.is_empty() {
        match parse_head(pending, head_req)? {
            Parsed::Interim(n) => pending.advance(n),
            Parsed::Final(head) => return Ok(Some(head)),
            Parsed::Partial if pending.len() >= max => return Err(WireError::HeadTooLarge(max)),
            Parsed::Partial => break,
        }
    }
    Ok(None)
}

/// Digits only, no sign, no overflow.
fn content_length(v: &[u8]) -> Result<u64, WireError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(WireError::ContentLength);
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(WireError::ContentLength)
    })
}

/// The non-empty comma-separated tokens of a field value.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The header fields of `head`, a complete response head that
/// [`parse_head`] accepted; the values share its bytes (no copy each).
/// Hop-by-hop fields are left out (a proxy does not forward them), and so
/// is `Content-Length`: `length` (the head's, checked by [`parse_head`])
/// takes its place as one value, since repeated or listed ones are not
/// valid downstream (h2 clients reset such a stream).
pub(crate) fn header_map(head: &Bytes, length: Option<u64>) -> Result<HeaderMap, WireError> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let (resp, parsed) = parse_response(head, &mut fields);
    parsed.map_err(|_| WireError::Head("malformed"))?;
    let mut map = HeaderMap::with_capacity(resp.headers.len());
    let base = head.as_ptr() as usize;
    for f in resp.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| WireError::Head("bad field name"))?;
        if is_hop_by_hop(&name) || name == header::CONTENT_LENGTH {
            continue;
        }
        let at = (f.value.as_ptr() as usize).wrapping_sub(base);
        let shared = at
            .checked_add(f.value.len())
            .filter(|end| !f.value.is_empty() && *end <= head.len());
        let value = match shared {
            Some(end) => HeaderValue::from_maybe_shared(head.slice(at..end)),
            // Not a slice of `head` (an empty value may not be one).
            None => HeaderValue::from_bytes(f.value),
        }
        .map_err(|_| WireError::Head("bad field value"))?;
        map.append(name, value);
    }
    if let Some(n) = length {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(map)
}

/// What a field value, an extension or a trailer may hold: VCHAR,
/// obs-text, SP and HTAB; no other control byte (LF, NUL, DEL).
pub(super) fn field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// A byte of a field name (RFC 9110 §5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
