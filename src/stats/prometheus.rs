//! Prometheus text exposition of a [`Snapshot`].
//!
//! PLACEHOLDER — the stats work renders every metric name DESIGN.md lists
//! through prometheus-client's text encoder.

use super::Snapshot;

pub fn render(snap: &Snapshot) -> String {
    let _ = snap;
    String::new()
}
