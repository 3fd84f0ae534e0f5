//! The differential check of [`ours`] against the RFC 9112 reference:
//! named inputs for the classic desyncs (with the outcome the policy
//! wants), and generated responses, mutated, read in any split.

use proptest::prelude::*;

use super::reference;
use super::*;

/// Read patterns every named input is tried with: at once, a byte at a
/// time, and uneven pieces.
const READS: [[usize; 4]; 4] = [[usize::MAX; 4], [1; 4], [3, 1, 7, 2], [17, 64, 5, 300]];

/// The outcome for `stream`, after checking that ours and the reference
/// agree on it for every read pattern.
fn both(stream: &[u8], head_req: bool) -> Outcome {
    let mut seen = None;
    for reads in READS {
        let case = Case {
            stream,
            head_req,
            max_head: 8 * 1024,
            reads,
        };
        let (o, r) = (ours(&case), reference::read(&case));
        assert_eq!(
            o,
            r,
            "ours vs reference, reads {reads:?}: {:?}",
            String::from_utf8_lossy(stream)
        );
        if let Some(s) = &seen {
            assert_eq!(s, &o, "the outcome depends on the reads");
        }
        seen = Some(o);
    }
    seen.unwrap_or(Outcome::Error)
}

fn error(stream: &str) {
    assert_eq!(both(stream.as_bytes(), false), Outcome::Error, "{stream:?}");
}

/// The body and where the response ends.
fn body_end(stream: &str, head_req: bool) -> (String, usize, bool) {
    match both(stream.as_bytes(), head_req) {
        Outcome::Response {
            body, end, reuse, ..
        } => (String::from_utf8_lossy(&body).into_owned(), end, reuse),
        Outcome::Error => panic!("{stream:?}: error"),
    }
}

const NEXT: &str = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled";

#[test]
fn content_length_with_transfer_encoding_is_an_error() {
    error(&format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{NEXT}"
    ));
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n0\r\n\r\n");
    // Either order, and for a response that has no body anyway.
    error("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n");
}

#[test]
fn transfer_encoding_that_is_empty_repeated_or_in_http10_is_an_error() {
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: \r\ncontent-length: 2\r\n\r\nok");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: ,\r\n\r\nok");
    // Found by the hyper check: hyper takes the last element as the final
    // coding, so an empty one after chunked means "until the close" to it.
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: \r\n\r\n0\r\n\r\n");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, \r\n\r\n0\r\n\r\n");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n");
    error("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n");
    // A coding after chunked: the body ends at the close (RFC 9112 §6.3).
    let s = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n";
    let (body, end, reuse) = body_end(s, false);
    assert_eq!((body.as_str(), end, reuse), ("0\r\n\r\n", s.len(), false));
}

#[test]
fn two_content_lengths_must_be_equal() {
    error(&format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 10\r\n\r\nok{NEXT}"
    ));
    error("HTTP/1.1 200 OK\r\ncontent-length: 2, 10\r\n\r\nok");
    error("HTTP/1.1 200 OK\r\ncontent-length: 2,\r\n\r\nok");
    let s = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 02, 2\r\n\r\nok";
    let (body, end, reuse) = body_end(&format!("{s}!"), false);
    assert_eq!((body.as_str(), end, reuse), ("ok", s.len(), true));
}

#[test]
fn obs_fold_is_an_error() {
    error("HTTP/1.1 200 OK\r\nx-a: 1\r\n content-length: 5\r\n\r\nhello");
    error("HTTP/1.1 200 OK\r\ncontent-length:\r\n\t5\r\n\r\nhello");
    error("HTTP/1.1 200 OK\r\n\tx: 1\r\ncontent-length: 0\r\n\r\n");
}

#[test]
fn bare_lf_bare_cr_and_leading_blank_lines_are_errors() {
    error("HTTP/1.1 200 OK\ncontent-length: 2\n\nok");
    error(&format!(
        "HTTP/1.1 200 OK\r\nx-echo: a\ncontent-length: 0\r\n\r\n{NEXT}"
    ));
    error("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\nok");
    error("HTTP/1.1 200 OK\r\nx: a\rb\r\ncontent-length: 2\r\n\r\nok");
    error("\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    error("\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\n0\r\n\r\n");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: 1\n\r\n");
}

#[test]
fn chunk_size_overflow_is_an_error() {
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\n");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1ffffffffffffffff\r\nab\r\n");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n+2\r\nok\r\n0\r\n\r\n");
    error("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n");
    // Leading zeros are digits, not an overflow.
    let (body, ..) = body_end(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n000000000000000000002\r\nok\r\n0\r\n\r\n",
        false,
    );
    assert_eq!(body, "ok");
}

#[test]
fn chunk_extensions_are_skipped_to_their_crlf() {
    let s = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             2;a=1;b=\"x;y\" \t\r\nok\r\n0;last\r\nx-t: 1\r\n\r\n";
    let (body, end, reuse) = body_end(&format!("{s}{NEXT}"), false);
    assert_eq!((body.as_str(), end, reuse), ("ok", s.len(), true));
    // Control bytes, a bare CR or LF in an extension or a trailer.
    for bad in [
        "2;a\0\r\nok\r\n0\r\n\r\n",
        "2;a\rb\r\nok\r\n0\r\n\r\n",
        "2;a\nok\r\n0\r\n\r\n",
        "0\r\nx: \x01\r\n\r\n",
        // Found by the hyper check: a trailer is a field line.
        "0\r\n\u{80}-t: 1\r\n\r\n",
        "0\r\nnot a field\r\n\r\n",
        "0\r\nx : 1\r\n\r\n",
        "2 2\r\nok\r\n0\r\n\r\n",
    ] {
        error(&format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{bad}"
        ));
    }
    let long = "e".repeat(MAX_CHUNK_META + 1);
    error(&format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;{long}\r\nok\r\n0\r\n\r\n"
    ));
}

#[test]
fn interim_responses_come_before_the_final_one() {
    // A 1xx has no body, whatever it says: what follows is the next head.
    let s = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (body, end, _) = body_end(s, false);
    assert_eq!((body.as_str(), end), ("ok", s.len()));
    error("HTTP/1.1 100 Continue\r\ncontent-length: 4\r\n\r\nabcdHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    error("HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n");
    error("HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn head_204_304_end_at_their_head_whatever_follows() {
    for (status, head_req) in [
        ("200 OK", true),
        ("204 No Content", false),
        ("304 Not Modified", false),
    ] {
        for framing in [
            "content-length: 5\r\n",
            "transfer-encoding: chunked\r\n",
            "",
        ] {
            let head = format!("HTTP/1.1 {status}\r\n{framing}\r\n");
            let (body, end, reuse) = body_end(&format!("{head}hello{NEXT}"), head_req);
            assert_eq!(
                (body.as_str(), end, reuse),
                ("", head.len(), true),
                "{head:?}"
            );
        }
    }
}

#[test]
fn connection_reuse() {
    let cases = [
        ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
        (
            "HTTP/1.1 200 OK\r\nconnection: x, CLOSE\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
        ("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        (
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
        (
            "HTTP/1.0 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", false),
    ];
    for (s, reuse) in cases {
        assert_eq!(body_end(s, false).2, reuse, "{s:?}");
    }
}

/// Pieces a generated response is made of.
fn status_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("HTTP/1.1 200 OK".to_owned()),
        1 => Just("HTTP/1.0 200 OK".to_owned()),
        1 => Just("HTTP/1.1 204 No Content".to_owned()),
        1 => Just("HTTP/1.1 304 Not Modified".to_owned()),
        1 => Just("HTTP/1.1 404".to_owned()),
        1 => Just("HTTP/1.1 500 ".to_owned()),
        1 => Just("HTTP/1.1 101 Switching Protocols".to_owned()),
        1 => Just("HTTP/1.1 099 Low".to_owned()),
    ]
}

fn field(len: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(format!("content-length: {len}")),
        1 => Just(format!("Content-Length: {}", len + 1)),
        1 => Just(format!("content-length: {len}, {len}")),
        1 => Just("content-length: 0".to_owned()),
        4 => Just("transfer-encoding: chunked".to_owned()),
        1 => Just("Transfer-Encoding: gzip, CHUNKED".to_owned()),
        1 => Just("transfer-encoding: chunked, gzip".to_owned()),
        1 => Just("transfer-encoding: ".to_owned()),
        1 => Just("connection: close".to_owned()),
        1 => Just("connection: keep-alive".to_owned()),
        1 => Just("x-a: b".to_owned()),
        1 => Just("x-fold: a\r\n b".to_owned()),
        1 => Just("x-lf: a\nx-b: c".to_owned()),
        1 => Just("x-sp : a".to_owned()),
    ]
}

/// `data` chunked, each chunk with an extension or not, then trailers.
fn chunked(data: &[u8], cuts: &[usize], ext: bool, trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts
        .iter()
        .map(|c| c % (data.len() + 1))
        .chain([data.len()])
    {
        if cut <= at {
            continue;
        }
        out.extend_from_slice(format!("{:x}", cut - at).as_bytes());
        if ext {
            out.extend_from_slice(b";e=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&data[at..cut]);
        out.extend_from_slice(b"\r\n");
        at = cut;
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"x-t: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A response much like a real one: maybe 1xx heads, a status line,
/// framing fields (consistent or not), a body framed one way or another,
/// maybe a second response behind it; then a few bytes changed.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let data = proptest::collection::vec(
        prop_oneof![Just(b'x'), Just(b'\r'), Just(b'\n'), Just(b'0')],
        0..40,
    );
    let flags = (any::<[bool; 4]>(), proptest::bool::weighted(0.1));
    (
        data,
        status_line(),
        flags,
        proptest::collection::vec(any::<usize>(), 0..4),
        0usize..3,
    )
        .prop_flat_map(|(data, status, flags, cuts, interims)| {
            let fields = proptest::collection::vec(field(data.len()), 0..2);
            (
                Just(data),
                Just(status),
                Just(flags),
                Just(cuts),
                Just(interims),
                fields,
            )
        })
        .prop_map(
            |(data, status, ([ext, trailer, as_chunks, next], lf), cuts, interims, extra)| {
                let mut out = Vec::new();
                for _ in 0..interims {
                    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                let eol = if lf { "\n" } else { "\r\n" };
                out.extend_from_slice(status.as_bytes());
                out.extend_from_slice(b"\r\n");
                // The framing the body has, then maybe others.
                let framing = if as_chunks {
                    "transfer-encoding: chunked".to_owned()
                } else {
                    format!("content-length: {}", data.len())
                };
                for f in [framing].into_iter().chain(extra) {
                    out.extend_from_slice(f.as_bytes());
                    out.extend_from_slice(eol.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                if as_chunks {
                    out.extend(chunked(&data, &cuts, ext, trailer));
                } else {
                    out.extend_from_slice(&data);
                }
                if next {
                    out.extend_from_slice(NEXT.as_bytes());
                }
                out
            },
        )
}

/// A few bytes of `s` replaced, inserted or removed, from the bytes that
/// matter to framing.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let special = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b'\t'),
        Just(b';'),
        Just(b':'),
        Just(b','),
        Just(b'0'),
        Just(b'1'),
        Just(b'f'),
        Just(0u8),
        Just(0x7f),
        Just(0x80),
    ];
    let edits = proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, special), 0..2);
    (stream(), edits).prop_map(|(mut s, edits)| {
        for (at, op, b) in edits {
            let i = at.index(s.len() + 1);
            match op {
                0 if i < s.len() => s[i] = b,
                1 => s.insert(i, b),
                _ if i < s.len() => {
                    s.remove(i);
                }
                _ => {}
            }
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Generated responses: ours and the reference agree on every one.
    #[test]
    fn ours_agrees_with_the_reference(
        stream in mutated(),
        head_req in proptest::bool::weighted(0.1),
        max_head in prop_oneof![1 => Just(48usize), 9 => Just(8 * 1024)],
        reads in any::<[u8; 4]>(),
    ) {
        let case = Case {
            stream: &stream,
            head_req,
            max_head,
            reads: reads.map(|r| usize::from(r % 32) + 1),
        };
        let o = ours(&case);
        prop_assert_eq!(&o, &reference::read(&case), "{:?}", String::from_utf8_lossy(&stream));
    }

    /// Raw bytes as the fuzz target takes them.
    #[test]
    fn fuzz_inputs_agree(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let case = Case::new(&data);
        prop_assert_eq!(ours(&case), reference::read(&case));
    }
}

/// hyper's HTTP/1.1 client reading `stream` as the answer to one request
/// over an in-memory pipe: its status and body, `None` if it failed.
fn hyper_reads(stream: &[u8], head_req: bool) -> Option<(u16, Vec<u8>)> {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let stream = stream.to_vec();
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match server.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = server.write_all(&stream).await;
            let _ = server.shutdown().await;
            // Keep reading so the client's writes never block.
            while matches!(server.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
                .await
                .ok()?;
        tokio::spawn(conn);
        let method = if head_req { "HEAD" } else { "GET" };
        let req = http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "up")
            .body(http_body_util::Empty::<Bytes>::new())
            .ok()?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), send.send_request(req))
            .await
            .ok()?
            .ok()?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            resp.into_body().collect(),
        )
        .await
        .ok()?
        .ok()?;
        Some((status, body.to_bytes().to_vec()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A second, independent opinion: whatever ours accepts, hyper's
    /// client reads the same way (hyper is more lenient, so not the other
    /// way round).
    #[test]
    fn hyper_agrees_with_what_ours_accepts(
        stream in mutated(),
        head_req in proptest::bool::weighted(0.1),
    ) {
        let case = Case { stream: &stream, head_req, max_head: 8 * 1024, reads: [usize::MAX; 4] };
        if let Outcome::Response { status, body, .. } = ours(&case) {
            prop_assert_eq!(
                hyper_reads(&stream, head_req),
                Some((status, body)),
                "{:?}",
                String::from_utf8_lossy(&stream)
            );
        }
    }
}
