//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one
//! connection, not the message, so a proxy does not forward them.

use http::header::{self, HeaderMap, HeaderName};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over their few names costs less
    // than a hashed lookup for each of the eight.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

/// A field [`strip_hop_by_hop`] removes.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}
