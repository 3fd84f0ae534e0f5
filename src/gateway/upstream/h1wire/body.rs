//! A response body's framing (RFC 9112 §6): length, chunked (a
//! byte-at-a-time decoder, so every malformed input is an error value) or
//! until the close.

use std::ops::Range;

use bytes::{Buf, Bytes};

use super::head::{field_byte, is_tchar, Framing, WireError, MAX_CHUNK_META};

/// What is left of a response body, by its framing.
#[derive(Debug)]
pub(crate) enum BodyState {
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes.
    Eof,
    Done,
}

impl BodyState {
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(Chunked::default()),
            Framing::Eof => Self::Eof,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// The most the next read may take, at most `max`: never past the end
    /// of a body of known length, so what follows it stays unread.
    pub(crate) fn read_size(&self, max: usize) -> usize {
        match self {
            Self::Length(left) => usize::try_from(*left).unwrap_or(max).min(max),
            _ => max,
        }
    }

    /// Takes the next data out of `buf`: empty when `buf` held only
    /// framing (or nothing). Bytes after the body's end stay in `buf`.
    pub(crate) fn decode(&mut self, buf: &mut Bytes) -> Result<Bytes, WireError> {
        let data = match self {
            Self::Done => Bytes::new(),
            Self::Eof => std::mem::take(buf),
            Self::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                if *left == 0 {
                    *self = Self::Done;
                }
                buf.split_to(take)
            }
            Self::Chunked(c) => {
                let (used, found) = c.decode(buf)?;
                let data = found.map(|r| buf.slice(r)).unwrap_or_default();
                if c.is_done() {
                    *self = Self::Done;
                }
                buf.advance(used);
                data
            }
        };
        Ok(data)
    }
}

/// A chunked body decoder, fed bytes as they arrive; extensions and
/// trailer fields are checked and skipped (bounded by [`MAX_CHUNK_META`]).
/// Line ends must be CRLF: the stricter reading leaves no room for a
/// desync.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: Chunk,
    /// Bytes left in the current chunk, or the size being read.
    size: u64,
    /// Extension and trailer bytes seen.
    meta: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before the first hex digit of a size.
    #[default]
    SizeStart,
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    /// A trailer field's value.
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    pub(crate) fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Consumes from `input` up to and including the first data it finds;
    /// returns how many bytes it consumed and where in `input` that data is.
    /// Consumes nothing once done.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<Range<usize>>), WireError> {
        let mut i = 0;
        while i < input.len() && self.state != Chunk::Done {
            if self.state == Chunk::Data {
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                return Ok((i + take, Some(i..i + take)));
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok((i, None))
    }

    fn step(&mut self, b: u8) -> Result<(), WireError> {
        use Chunk::*;
        let bad = |what| Err(WireError::Chunk(what));
        self.state = match (self.state, b) {
            (SizeStart | Size, b) if b.is_ascii_hexdigit() => {
                let digit = u64::from(hex(b));
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or(WireError::Chunk("size overflows"))?;
                Size
            }
            (SizeStart, _) => return bad("size expected"),
            (Size | SizeWs, b' ' | b'\t') => SizeWs,
            (Size | SizeWs, b';') => Ext,
            (Size | SizeWs, b'\r') => SizeLf,
            (Size | SizeWs, _) => return bad("bad size"),
            (Ext, b'\r') => SizeLf,
            (Ext, b) if !field_byte(b) => return bad("control byte in extension"),
            (Ext, _) => {
                self.meta_byte()?;
                Ext
            }
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => SizeStart,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, b) if is_tchar(b) => {
                self.meta_byte()?;
                TrailerName
            }
            (TrailerName, b':') => {
                self.meta_byte()?;
                Trailer
            }
            (Trailer, b'\r') => TrailerLf,
            (Trailer, b) if field_byte(b) => {
                self.meta_byte()?;
                Trailer
            }
            (TrailerStart | TrailerName | Trailer, _) => return bad("bad trailer field"),
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (SizeLf | DataLf | TrailerLf | EndLf, _) => return bad("LF expected"),
            (DataCr, _) => return bad("CRLF expected after data"),
            (Data | Done, _) => return bad("internal state"),
        };
        Ok(())
    }

    fn meta_byte(&mut self) -> Result<(), WireError> {
        self.meta += 1;
        if self.meta > MAX_CHUNK_META {
            return Err(WireError::Chunk("extensions or trailers too long"));
        }
        Ok(())
    }
}

fn hex(b: u8) -> u32 {
    char::from(b).to_digit(16).unwrap_or(0)
}
