//! One stream's (or HTTP/1.1 connection's) share of the response budget,
//! and the handle the sweeper resets it through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Context;

use futures::task::AtomicWaker;

/// Why a stream was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    Stall,
    Budget,
    Shed,
}

/// One stream's (or HTTP/1.1 connection's) share of the budget.
pub(crate) struct Ctl {
    pub(super) buffered: AtomicU64,
    /// Milliseconds after the budget's epoch of the last chunk written (or
    /// of the first one charged after none was buffered).
    pub(super) progress_ms: AtomicU64,
    pub(super) killed: AtomicBool,
    pub(super) killed_ms: AtomicU64,
    pub(super) registered: AtomicBool,
    waker: AtomicWaker,
    /// A stream's connection: reset when the stream's bytes stay queued
    /// after the stream was (h2 sends queued DATA before the RST_STREAM,
    /// so a client that reads nothing keeps them until the socket goes).
    pub(super) parent: Option<Arc<Ctl>>,
}

impl Ctl {
    pub(crate) fn new(parent: Option<Arc<Ctl>>) -> Self {
        Self {
            buffered: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            killed_ms: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            parent,
        }
    }

    /// Registers the task that owns the stream; true if it was reset.
    pub(crate) fn poll_killed(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.killed.load(Relaxed)
    }

    pub(super) fn kill(&self, now_ms: u64) {
        self.killed_ms.store(now_ms, Relaxed);
        self.killed.store(true, Relaxed);
        self.waker.wake();
    }
}
