//! The HTTP/1.1 wire format of the upstream client, without I/O: pure
//! functions, so the unit tests need no sockets.

mod body;
mod head;
#[cfg(test)]
mod tests;

pub(crate) use body::BodyState;
pub(crate) use head::{
    encode_head, header_map, take_head, Framing, Head, ReqFraming, WireError, MAX_CHUNK_META,
    MAX_HEADERS,
};
