//! A reference reader of one HTTP/1.1 response, written from RFC 9112
//! alone, whole-buffer and line by line, to be compared with the
//! gateway's upstream client (`vpcbox::gateway::fuzz::ours`). It shares
//! no code with it; it shares the policy, which rejects whatever could be
//! read two ways:
//! - lines end with CRLF (no bare LF, no bare CR), nothing before the
//!   status line, no obs-fold, no space before a field's colon;
//! - 1xx heads (not 101) are skipped; they have no body;
//! - Transfer-Encoding with Content-Length, in HTTP/1.0, with an empty
//!   element (or empty), or with chunked twice is an error; chunked last
//!   is chunked, else the body ends at the close;
//! - Content-Length values (comma lists, repeated fields) must be digits
//!   and all equal;
//! - HEAD, 204 and 304 have no body; nor does Content-Length 0;
//! - chunk lines: hex size, optional SP/HTAB, optional `;` extension,
//!   CRLF; extensions are visible bytes, SP or HTAB; trailer lines are
//!   field lines (`name:value`, no OWS before the colon); at most
//!   `MAX_CHUNK_META` bytes of both in all.
//!
//! Included by the fuzz target and, for `cargo test`, by
//! `src/gateway/fuzz/`; `super` provides `Case`, `Outcome`, `Body` and
//! the two limits.

use super::{Body, Case, Outcome, MAX_CHUNK_META, MAX_HEADERS};

pub fn read(case: &Case<'_>) -> Outcome {
    response(case.stream, case.head_req, case.max_head).unwrap_or(Outcome::Error)
}

/// `None`: an error (malformed, ambiguous, or cut short by the close).
fn response(s: &[u8], head_req: bool, max_head: usize) -> Option<Outcome> {
    let mut start = 0;
    loop {
        let head_end = find(s, start, b"\r\n\r\n")? + 4;
        if head_end - start > max_head {
            return None;
        }
        let head = parse_head(&s[start..head_end])?;
        match head.status {
            101 => return None,
            100..=199 => start = head_end,
            _ => return finish(s, head_end, head, head_req),
        }
    }
}

struct Head {
    minor: u8,
    status: u16,
    /// Names lowercased.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// `head`: from the status line to the blank line, inclusive.
fn parse_head(head: &[u8]) -> Option<Head> {
    let mut lines = split_crlf(head)?;
    // The blank line and the empty piece after its CRLF.
    lines.truncate(lines.len().checked_sub(2)?);
    let (status_line, field_lines) = lines.split_first()?;
    let rest = status_line.strip_prefix(b"HTTP/1.")?;
    let minor = match rest.first()? {
        b'0' => 0,
        b'1' => 1,
        _ => return None,
    };
    let rest = rest[1..].strip_prefix(b" ")?;
    if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = rest[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if status < 100 {
        return None;
    }
    // Then nothing, or SP and a reason phrase.
    if let Some(reason) = rest[3..].strip_prefix(b" ") {
        if !reason.iter().all(|b| *b == b'\t' || visible_or_space(*b)) {
            return None;
        }
    } else if rest.len() > 3 {
        return None;
    }
    if field_lines.len() > MAX_HEADERS {
        return None;
    }
    let mut fields = Vec::new();
    for line in field_lines {
        let colon = line.iter().position(|b| *b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return None;
        }
        let value = trim_ows(value);
        if !value.iter().all(|b| *b == b'\t' || visible_or_space(*b)) {
            return None;
        }
        fields.push((name.to_ascii_lowercase(), value.to_vec()));
    }
    Some(Head {
        minor,
        status,
        fields,
    })
}

/// Decides the framing and reads the body that starts at `at`.
fn finish(s: &[u8], at: usize, head: Head, head_req: bool) -> Option<Outcome> {
    let values = |name: &[u8]| -> Vec<&[u8]> {
        let mut out = Vec::new();
        for (n, v) in &head.fields {
            if n == name {
                out.extend(v.split(|b| *b == b','));
            }
        }
        out
    };
    let has = |name: &[u8]| head.fields.iter().any(|(n, _)| n == name);

    let mut length = None;
    for v in values(b"content-length") {
        let n = decimal(trim_ows(v))?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    let mut framing = match length {
        Some(0) => Body::Empty,
        Some(n) => Body::Length(n),
        None => Body::Eof,
    };
    if has(b"transfer-encoding") {
        let codings: Vec<&[u8]> = values(b"transfer-encoding")
            .into_iter()
            .map(trim_ows)
            .collect();
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        if head.minor == 0
            || length.is_some()
            || codings.iter().any(|c| c.is_empty())
            || codings.iter().filter(|c| chunked(c)).count() > 1
        {
            return None;
        }
        framing = if codings.last().is_some_and(|c| chunked(c)) {
            Body::Chunked
        } else {
            Body::Eof
        };
    }
    if head_req || head.status == 204 || head.status == 304 {
        framing = Body::Empty;
    }

    let connection: Vec<&[u8]> = values(b"connection").into_iter().map(trim_ows).collect();
    let close = connection.iter().any(|t| t.eq_ignore_ascii_case(b"close"));
    let keep_alive = connection
        .iter()
        .any(|t| t.eq_ignore_ascii_case(b"keep-alive"));
    let persistent = if head.minor == 1 {
        !close
    } else {
        keep_alive && !close
    };

    let rest = &s[at..];
    let (body, len) = match framing {
        Body::Empty => (Vec::new(), 0),
        Body::Length(n) => {
            let n = usize::try_from(n).ok().filter(|n| *n <= rest.len())?;
            (rest[..n].to_vec(), n)
        }
        Body::Eof => (rest.to_vec(), rest.len()),
        Body::Chunked => dechunk(rest)?,
    };
    Some(Outcome::Response {
        status: head.status,
        head_end: at,
        framing,
        body,
        end: at + len,
        reuse: persistent && framing != Body::Eof,
    })
}

/// A chunked body at the start of `s`: its data and its length on the
/// wire.
fn dechunk(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut data = Vec::new();
    let mut at = 0;
    let mut meta = 0;
    loop {
        let line = line_at(s, at)?;
        at += line.len() + 2;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return None;
        }
        let mut size: u64 = 0;
        for d in &line[..digits] {
            let d = u64::from(char::from(*d).to_digit(16)?);
            size = size.checked_mul(16)?.checked_add(d)?;
        }
        let after = &line[digits..];
        let ws = after
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        match after[ws..].split_first() {
            None => {}
            Some((b';', ext)) => {
                if !ext.iter().all(|b| *b == b'\t' || visible_or_space(*b)) {
                    return None;
                }
                meta += ext.len();
            }
            Some(_) => return None,
        }
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).ok()?;
        let chunk = s.get(at..at.checked_add(size)?)?;
        data.extend_from_slice(chunk);
        at += size;
        if s.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
    // The trailer section: field lines, then an empty line.
    loop {
        let line = line_at(s, at)?;
        at += line.len() + 2;
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|b| *b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty()
            || !name.iter().all(|b| is_tchar(*b))
            || !value.iter().all(|b| *b == b'\t' || visible_or_space(*b))
        {
            return None;
        }
        meta += line.len();
    }
    if meta > MAX_CHUNK_META {
        return None;
    }
    Some((data, at))
}

/// The line starting at `at`, without its CRLF; `None` if it has no
/// CRLF or a bare CR or LF comes first.
fn line_at(s: &[u8], at: usize) -> Option<&[u8]> {
    let end = find(s, at, b"\r\n")?;
    let line = s.get(at..end)?;
    if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
        return None;
    }
    Some(line)
}

/// `s` cut at each CRLF; `None` if it holds a CR or LF that is not part
/// of a CRLF.
fn split_crlf(s: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(end) = find(s, at, b"\r\n") {
        out.push(line_at(s, at)?);
        at = end + 2;
    }
    let last = &s[at..];
    if last.iter().any(|b| *b == b'\r' || *b == b'\n') {
        return None;
    }
    out.push(last);
    Some(out)
}

fn find(s: &[u8], from: usize, what: &[u8]) -> Option<usize> {
    s.get(from..)?
        .windows(what.len())
        .position(|w| w == what)
        .map(|i| i + from)
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// VCHAR, obs-text or SP.
fn visible_or_space(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) || b >= 0x80
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != b' ' && *b != b'\t');
    let end = v.iter().rposition(|b| *b != b' ' && *b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}
