//! The I/O of one HTTP/1.1 exchange with an upstream: [`Exchange`], the
//! future that sends the request and reads the response head, and
//! [`H1Body`], the response body that reads the rest and hands the
//! connection back to the pool. Both are polled by the stream that owns
//! them: nothing here spawns.
//!
//! Nothing is buffered while waiting: reads go into a stack buffer once
//! the socket is readable, and only the bytes that arrived are kept. A
//! request whose first write on a pooled connection fails, or an idempotent
//! one without a body whose pooled connection closed before any answer, is
//! sent once more on a new connection.

use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, Method, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::body::PollFrame;
use super::body::ProxyBody;
use super::error::H1Error;
use super::h1::{Conn, Connecting, H1Upstream};
use super::h1wire::{encode_head, header_map, take_head, BodyState, Head, ReqFraming};
use super::sock::{poll_read_into, poll_send, READ};

/// What is still to be written: a chunk's size line, data, then a fixed
/// tail (a chunk's CRLF, the last chunk).
#[derive(Default)]
struct Out {
    line: [u8; 18],
    line_at: u8,
    line_end: u8,
    data: Bytes,
    tail: &'static [u8],
}

impl Out {
    fn is_empty(&self) -> bool {
        self.line_at == self.line_end && self.data.is_empty() && self.tail.is_empty()
    }

    /// `data` as one chunk: `{len:x}\r\n{data}\r\n`.
    fn chunk(&mut self, data: Bytes) {
        let size = self.line.len();
        let mut rest = &mut self.line[..];
        // At most 16 hex digits and CRLF: the 18 bytes always hold it.
        let _ = write!(rest, "{:x}\r\n", data.len());
        let end = size - rest.len();
        (self.line_at, self.line_end) = (0, end as u8);
        self.data = data;
        self.tail = b"\r\n";
    }

    /// One vectored write of what is left; how many bytes went out.
    fn poll_write(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let line = &self.line[usize::from(self.line_at)..usize::from(self.line_end)];
        let parts = [
            IoSlice::new(line),
            IoSlice::new(&self.data),
            IoSlice::new(self.tail),
        ];
        let n = ready!(poll_send(tcp, cx, &parts))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        let mut left = n;
        let from_line = left.min(line.len());
        self.line_at += from_line as u8;
        left -= from_line;
        let from_data = left.min(self.data.len());
        self.data.advance(from_data);
        left -= from_data;
        self.tail = &self.tail[left.min(self.tail.len())..];
        Poll::Ready(Ok(n))
    }
}

impl H1Upstream {
    /// Starts one request: its head is encoded and a pooled connection
    /// taken here, synchronously; the returned future sends it (connecting
    /// first if none was idle) and waits for the response head. The
    /// response body reads the rest and puts the connection back.
    /// Cancel-safe: dropping it (or the body before its end) closes the
    /// connection, the only way to abandon an HTTP/1.1 request.
    pub(crate) fn request(this: &Arc<Self>, req: Request<ProxyBody>) -> Exchange {
        let (parts, body) = req.into_parts();
        let empty = body.is_end_stream();
        let framing = ReqFraming::of(
            &parts.method,
            empty,
            body.size_hint().exact(),
            parts.headers.contains_key(header::CONTENT_LENGTH),
        );
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let head = encode_head(&parts.method, target, &parts.headers, framing);
        let body = (!empty).then_some(body);
        Exchange::new(
            this.clone(),
            this.checkout(),
            head,
            body,
            framing,
            &parts.method,
        )
    }
}

/// One request to an upstream, from its first write to its response head.
/// Lives in the stream's task while the stream waits, so it is kept
/// small: the request is already encoded (the head) or streamed (the body
/// frame being written), and no read buffer exists until bytes arrive.
pub(crate) struct Exchange {
    up: Arc<H1Upstream>,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    /// `conn` came from the pool and nothing went out on it yet: if the
    /// first write fails, the request is sent once more on a new one.
    pooled: bool,
    out: Out,
    /// What follows the head: the body still to send, or, for a request
    /// that may be sent again, its head.
    rest: Rest,
    framing: ReqFraming,
    /// Body bytes still due under `content-length`.
    due: u64,
    /// Response bytes that came before a whole head.
    pending: BytesMut,
    head_req: bool,
}

/// What an exchange holds beside the head it writes.
enum Rest {
    /// The request body, streamed after the head.
    Body(ProxyBody),
    /// The head once more: the request has no body, its method is
    /// idempotent and it goes out on a pooled connection, which the
    /// upstream may close (its keep-alive timeout) as the request reaches
    /// it. Closed before any byte of an answer came, the request is sent
    /// once more on a new connection (RFC 9112 §9.3.1), as nginx and
    /// browsers do.
    Replay(Bytes),
    /// Nothing (more) to send, and no second try.
    Done,
}

impl Exchange {
    /// `method`: the request's, which says how to read the answer (HEAD)
    /// and whether it may be sent twice (idempotent, RFC 9110 §9.2.2).
    pub(super) fn new(
        up: Arc<H1Upstream>,
        conn: Option<Conn>,
        head: Vec<u8>,
        body: Option<ProxyBody>,
        framing: ReqFraming,
        method: &Method,
    ) -> Self {
        let head = Bytes::from(head);
        let rest = match body {
            Some(b) => Rest::Body(b),
            None if method.is_idempotent() && conn.is_some() => Rest::Replay(head.clone()),
            None => Rest::Done,
        };
        Self {
            up,
            pooled: conn.is_some(),
            conn,
            connecting: None,
            out: Out {
                data: head,
                ..Out::default()
            },
            rest,
            framing,
            due: match framing {
                ReqFraming::Length(n) => n,
                _ => 0,
            },
            pending: BytesMut::new(),
            head_req: *method == Method::HEAD,
        }
    }

    /// Writes the head, then the body frame by frame.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        loop {
            while !self.out.is_empty() {
                let Some(conn) = self.conn.as_mut() else {
                    return Poll::Ready(Err(H1Error::Closed));
                };
                ready!(self.out.poll_write(&mut conn.tcp, cx))?;
                self.pooled = false;
            }
            let Rest::Body(body) = &mut self.rest else {
                return Poll::Ready(Ok(()));
            };
            let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
            let end = body.is_end_stream();
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.queue(data)?;
                    }
                    if end {
                        self.end_body()?;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(H1Error::Body(e))),
                None => self.end_body()?,
            }
        }
    }

    fn queue(&mut self, data: Bytes) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            ReqFraming::Chunked => self.out.chunk(data),
            _ => {
                self.due = self
                    .due
                    .checked_sub(data.len() as u64)
                    .ok_or(H1Error::BodyLength)?;
                self.out.data = data;
            }
        }
        Ok(())
    }

    /// The body is done: the last chunk goes out, and its budget returns.
    fn end_body(&mut self) -> Result<(), H1Error> {
        self.rest = Rest::Done;
        match self.framing {
            ReqFraming::Chunked if self.out.tail.is_empty() => self.out.tail = b"0\r\n\r\n",
            ReqFraming::Chunked => self.out.tail = b"\r\n0\r\n\r\n",
            _ if self.due != 0 => return Err(H1Error::BodyLength),
            _ => {}
        }
        Ok(())
    }

    /// Reads until a final response head has come, skipping 1xx ones.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<(Head, Bytes), H1Error>> {
        let max = self.up.max_head;
        loop {
            if let Some(head) = take_head(&mut self.pending, self.head_req, max)? {
                let all = std::mem::take(&mut self.pending).freeze();
                return Poll::Ready(Ok((head, all)));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Err(H1Error::Closed));
            };
            let room = max - self.pending.len();
            if ready!(poll_read_into(&mut conn.tcp, cx, room, &mut self.pending))? == 0 {
                return Poll::Ready(Err(H1Error::Closed));
            }
        }
    }

    /// The response, its body reading on from the bytes after the head.
    /// `whole`: the request went out whole, so the connection may serve
    /// another one after this response.
    fn respond(
        &mut self,
        head: Head,
        all: Bytes,
        whole: bool,
    ) -> Result<Response<H1Body>, H1Error> {
        let headers = header_map(&all, head.length)?;
        let rest = all.slice(head.len..);
        let mut body = H1Body {
            up: self.up.clone(),
            conn: self.conn.take(),
            buf: rest,
            state: BodyState::new(head.framing),
            reuse: head.reuse && whole,
        };
        if body.state.is_done() {
            body.finish();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

impl std::future::Future for Exchange {
    type Output = Result<Response<H1Body>, H1Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(connecting) = this.connecting.as_mut() {
                this.conn = Some(ready!(connecting.as_mut().poll(cx))?);
                this.connecting = None;
            }
            if this.conn.is_none() {
                this.connecting = Some(this.up.connecting());
                continue;
            }
            let sent = match this.poll_send(cx) {
                Poll::Ready(Ok(())) => true,
                // Nothing went out on a pooled connection, which the
                // upstream must have closed: once more, on a new one.
                Poll::Ready(Err(H1Error::Io(_))) if this.pooled => {
                    this.pooled = false;
                    this.conn = None;
                    // The second try: a new connection that fails is not
                    // the keep-alive race a replay is for.
                    if matches!(this.rest, Rest::Replay(_)) {
                        this.rest = Rest::Done;
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // Still sending: an answer may come early (an error that
                // does not wait for the body); the rest is then not sent.
                Poll::Pending => false,
            };
            let (head, all) = match ready!(this.poll_head(cx)) {
                Ok(answer) => answer,
                Err(e) if this.pending.is_empty() && closed(&e) => {
                    // The pooled connection closed under the request.
                    match std::mem::replace(&mut this.rest, Rest::Done) {
                        Rest::Replay(head) => {
                            this.out.data = head;
                            this.conn = None;
                            this.pooled = false;
                            continue;
                        }
                        _ => return Poll::Ready(Err(e)),
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            this.rest = Rest::Done;
            return Poll::Ready(this.respond(head, all, sent));
        }
    }
}

/// The connection ended (closed, reset) rather than sent something wrong.
fn closed(e: &H1Error) -> bool {
    match e {
        H1Error::Closed => true,
        H1Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

/// A response body from an HTTP/1.1 upstream, read as it is polled. Its
/// connection goes back to the pool once the body has been read to its
/// end and nothing is left over; dropped before that, or on an error, the
/// connection is closed.
pub(crate) struct H1Body {
    up: Arc<H1Upstream>,
    conn: Option<Conn>,
    /// Bytes read and not yet decoded.
    buf: Bytes,
    state: BodyState,
    reuse: bool,
}

impl H1Body {
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(conn) = self.conn.take() {
            if self.reuse && self.buf.is_empty() {
                self.up.put(conn);
            }
        }
    }

    fn fail(&mut self, e: impl Into<H1Error>) -> PollFrame<H1Error> {
        self.conn = None;
        self.state = BodyState::Done;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame<H1Error> {
        let this = self.get_mut();
        loop {
            if this.state.is_done() {
                this.finish();
                return Poll::Ready(None);
            }
            if this.buf.is_empty() {
                let Some(conn) = this.conn.as_mut() else {
                    return this.fail(H1Error::Closed);
                };
                let want = this.state.read_size(READ);
                let mut read = BytesMut::new();
                match ready!(poll_read_into(&mut conn.tcp, cx, want, &mut read)) {
                    Err(e) => return this.fail(e),
                    Ok(0) if matches!(this.state, BodyState::Eof) => {
                        this.reuse = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(0) => return this.fail(H1Error::Closed),
                    Ok(_) => this.buf = read.freeze(),
                }
            }
            match this.state.decode(&mut this.buf) {
                Err(e) => return this.fail(e),
                Ok(data) if !data.is_empty() => {
                    if this.state.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(_) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exchange lives in its stream's task for as long as the upstream
    /// takes to answer: it must stay no larger than the request it sends
    /// (whose parts are encoded and dropped before it starts), not grow by
    /// whole futures or buffers.
    #[test]
    fn exchange_future_stays_small() {
        let exchange = std::mem::size_of::<Exchange>();
        let req = std::mem::size_of::<Request<ProxyBody>>();
        eprintln!("exchange future {exchange} B, Request<ProxyBody> {req} B");
        assert!(exchange <= req, "{exchange} B");
    }
}
