use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use super::body::Chunked;
use super::head::{parse_head, Parsed, FRAMING_FIELD};
use super::*;

fn head(s: &str) -> Result<Parsed, WireError> {
    parse_head(s.as_bytes(), false)
}

fn final_head(s: &str) -> Head {
    match head(s) {
        Ok(Parsed::Final(h)) => h,
        other => panic!("{s:?}: {other:?}"),
    }
}

#[test]
fn request_head_puts_host_first_and_frames_the_body() {
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("1"));
    h.insert(header::HOST, HeaderValue::from_static("up:80"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
    h.append("x-a", HeaderValue::from_static("2"));
    let out = encode_head(&Method::POST, "/p?q", &h, ReqFraming::Length(5));
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "POST /p?q HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
    );
    assert!(
        out.capacity() - out.len() <= FRAMING_FIELD,
        "sized up front"
    );
    let out = encode_head(&Method::PUT, "/", &h, ReqFraming::Chunked);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("x-a: 2\r\ntransfer-encoding: chunked\r\n\r\n"));
    let out = encode_head(&Method::GET, "/", &HeaderMap::new(), ReqFraming::None);
    assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn request_framing() {
    use ReqFraming as F;
    assert_eq!(F::of(&Method::GET, true, Some(0), false), F::None);
    assert_eq!(F::of(&Method::GET, true, Some(0), true), F::Length(0));
    assert_eq!(F::of(&Method::POST, true, Some(0), false), F::Length(0));
    assert_eq!(F::of(&Method::POST, false, Some(7), true), F::Length(7));
    assert_eq!(F::of(&Method::POST, false, None, false), F::Chunked);
}

#[test]
fn response_heads() {
    let h = final_head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    assert_eq!(h.len, 38);
    assert_eq!(
        (h.status, h.framing, h.reuse),
        (StatusCode::OK, Framing::Length(2), true)
    );
    let h = final_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!((h.framing, h.reuse), (Framing::Chunked, true));
    let h = final_head("HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((h.framing, h.reuse), (Framing::Eof, false));
    let h =
        final_head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n");
    assert_eq!((h.framing, h.reuse), (Framing::Empty, false));
    assert_eq!(head("HTTP/1.1 200 OK\r\ncontent-len"), Ok(Parsed::Partial));
    assert_eq!(head(""), Ok(Parsed::Partial));
}

#[test]
fn interim_responses_are_skipped_but_101_is_an_error() {
    assert_eq!(
        head("HTTP/1.1 100 Continue\r\n\r\n"),
        Ok(Parsed::Interim(25))
    );
    assert_eq!(
        head("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200"),
        Ok(Parsed::Interim(40))
    );
    assert!(head("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
}

#[test]
fn no_body_for_head_204_304() {
    let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n", true).unwrap();
    assert!(matches!(
        h,
        Parsed::Final(Head {
            framing: Framing::Empty,
            reuse: true,
            ..
        })
    ));
    for s in ["204 No Content", "304 Not Modified"] {
        let h = final_head(&format!(
            "HTTP/1.1 {s}\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
        assert_eq!((h.framing, h.reuse), (Framing::Empty, true), "{s}");
    }
}

#[test]
fn content_length_must_be_digits_and_agree() {
    for bad in [
        "-1",
        "+2",
        "1 2",
        "0x10",
        "",
        "99999999999999999999999",
        "2, 3",
    ] {
        let r = head(&format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n"));
        assert_eq!(r, Err(WireError::ContentLength), "{bad:?}");
    }
    let r = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n");
    assert_eq!(r, Err(WireError::ContentLength));
    let h = final_head("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\ncontent-length: 4\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(4));
}

/// Both framings could be read two ways: an error, not a guess (the
/// cases in `gateway::fuzz::tests` check every variant against the
/// reference).
#[test]
fn transfer_encoding_with_content_length_is_an_error() {
    let r =
        head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
    assert!(matches!(r, Err(WireError::Head(_))), "{r:?}");
    let h = final_head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
    assert_eq!((h.framing, h.reuse), (Framing::Eof, false));
}

#[test]
fn http10_keeps_the_connection_only_when_asked() {
    let h = final_head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n");
    assert!(!h.reuse);
    let h = final_head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n");
    assert!(h.reuse);
}

#[test]
fn malformed_heads_are_errors() {
    for bad in [
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "FOO\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
    ] {
        assert!(head(bad).is_err(), "{bad:?}");
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: v\r\n")).collect();
    assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
}

#[test]
fn header_map_shares_the_head() {
    let head = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nServer: t\r\nx-empty:\r\nx-e2:  \r\n\r\n",
    );
    let map = header_map(&head, None).unwrap();
    assert_eq!(map["x-empty"], "");
    assert_eq!(map["x-e2"], "");
    let a: Vec<_> = map.get_all("x-a").iter().collect();
    assert_eq!(a, ["1", "2"]);
    assert_eq!(map["server"], "t");
}

#[test]
fn header_map_leaves_out_hop_by_hop_fields() {
    let head = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
          Transfer-Encoding: chunked\r\nContent-Length: 5\r\nTrailer: x\r\n\
          Upgrade: h2c\r\nTE: trailers\r\nProxy-Connection: close\r\nX-Kept: 1\r\n\r\n",
    );
    let map = header_map(&head, None).unwrap();
    let names: Vec<_> = map.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
}

/// Repeated or listed Content-Lengths that agree go on as one value.
#[test]
fn header_map_writes_one_content_length() {
    let head = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 05\r\ncontent-length: 5\r\n\r\n",
    );
    let Ok(Parsed::Final(h)) = parse_head(&head, false) else {
        panic!("parses")
    };
    let map = header_map(&head, h.length).unwrap();
    let lengths: Vec<_> = map.get_all(http::header::CONTENT_LENGTH).iter().collect();
    assert_eq!(lengths, ["5"]);
}

/// Decodes `input` fed in pieces of `step` bytes; the data and what was
/// left over after the end.
fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), WireError> {
    let mut d = Chunked::default();
    let mut data = Vec::new();
    let mut at = 0;
    while at < input.len() && !d.is_done() {
        let piece = &input[at..(at + step).min(input.len())];
        let (used, got) = d.decode(piece)?;
        if let Some(r) = got {
            data.extend_from_slice(&piece[r]);
        }
        at += used;
        if used == 0 {
            break;
        }
    }
    Ok((data, input.len() - at))
}

#[test]
fn chunked_bodies_in_any_split() {
    let body =
        b"5\r\nhello\r\nA;ext=1;q=\"x\"\r\n, world!!!\r\n0\r\nx-trailer: 1\r\nx-b: 2\r\n\r\nNEXT";
    for step in [1, 2, 3, 7, 100] {
        let (data, left) = dechunk(body, step).unwrap();
        assert_eq!(data, b"hello, world!!!", "step {step}");
        assert_eq!(left, 4, "step {step}");
    }
    let (data, left) = dechunk(b"0\r\n\r\n", 1).unwrap();
    assert_eq!((data.len(), left), (0, 0));
    let (data, _) = dechunk(b"3 \t;e\r\nabc\r\n0\r\n\r\n", 4).unwrap();
    assert_eq!(data, b"abc");
}

#[test]
fn malformed_chunks_are_errors() {
    for bad in [
        &b"x\r\n"[..],
        b"\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\r\n0\r\nx: 1\n\r\n",
        b"5 5\r\n",
        b"-5\r\n",
        b"1;a\nb\r\n",
        b"fffffffffffffffff\r\n",
        b"0\r\n\rx",
    ] {
        let r = dechunk(bad, 1);
        assert!(matches!(r, Err(WireError::Chunk(_))), "{bad:?}: {r:?}");
    }
    let long_ext = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_META + 1));
    assert!(dechunk(long_ext.as_bytes(), 4096).is_err());
    let (data, _) = dechunk(b"ffffffffffffffff\r\nabc", 64).unwrap();
    assert_eq!(data, b"abc", "the largest size is fine, and streamed");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever an upstream sends, parsing is an answer, never a panic.
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), head_req: bool) {
            let mut with_head = b"HTTP/1.1 200 OK\r\n".to_vec();
            with_head.extend_from_slice(&bytes);
            for input in [&bytes[..], &with_head[..]] {
                if let Ok(Parsed::Final(h)) = parse_head(input, head_req) {
                    prop_assert!(h.len <= input.len());
                    prop_assert!(header_map(&Bytes::copy_from_slice(input), None).is_ok());
                }
                let _ = dechunk(input, 7);
            }
        }

        /// Chunks written as we write them decode to the same data, split
        /// anywhere.
        #[test]
        fn chunks_round_trip(data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8), step in 1usize..64) {
            let mut wire = Vec::new();
            for d in &data {
                wire.extend_from_slice(format!("{:x}\r\n", d.len()).as_bytes());
                wire.extend_from_slice(d);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let (got, left) = dechunk(&wire, step).unwrap();
            prop_assert_eq!(got, data.concat());
            prop_assert_eq!(left, 0);
        }
    }
}
