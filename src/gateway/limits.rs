//! HTTP/1.1 and HTTP/2 server limits, all from `[gateway]`. The h2 windows
//! are the configured bounds with adaptive growth off; the other h2
//! settings close known attacks: `max_header_list_size` (CONTINUATION
//! flood, CVE-2024-27316), `max_pending_accept_reset_streams` (rapid reset,
//! CVE-2023-44487), `max_local_error_reset_streams` (MadeYouReset,
//! CVE-2025-8671). What hyper has no knob for (a first header block never
//! finished, idle h2 connections) is the watchdog's ([`super::activity`]).

use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;

use crate::config::GatewayConfig;

/// hyper's HTTP/1 read/write buffer cap. Headers must fit (the header list
/// limit plus the request line), and it bounds what one HTTP/1 connection
/// buffers (hyper's default is far larger).
pub(crate) fn http1_buf(cfg: &GatewayConfig) -> usize {
    let headers = usize::try_from(cfg.max_header_list_size).unwrap_or(usize::MAX);
    headers
        .saturating_add(8 * 1024)
        .clamp(16 * 1024, 256 * 1024)
}

/// The auto-detecting (HTTP/1.1 or h2 prior knowledge) server builder;
/// h2 streams go to `exec` (one connection's [`super::streams::Streams`]).
pub(crate) fn http_builder<E>(cfg: &GatewayConfig, exec: E) -> auto::Builder<E> {
    let mut b = auto::Builder::new(exec);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(http1_buf(cfg))
        .max_headers(100)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(cfg.initial_stream_window)
        .initial_connection_window_size(cfg.initial_connection_window)
        .adaptive_window(false)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(cfg.max_header_list_size)
        .max_frame_size(cfg.max_frame_size)
        .max_send_buf_size(cfg.max_send_buffer)
        .max_pending_accept_reset_streams(cfg.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(cfg.max_local_error_reset_streams)
        .keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.keepalive_timeout);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_buffer_fits_headers_and_stays_small() {
        let mut cfg = crate::config::Config::embedded().unwrap().gateway;
        assert_eq!(http1_buf(&cfg), 24 * 1024);
        cfg.max_header_list_size = 1024;
        assert_eq!(http1_buf(&cfg), 16 * 1024);
        cfg.max_header_list_size = u32::MAX;
        assert_eq!(http1_buf(&cfg), 256 * 1024);
    }
}
