//! The operator-facing event log: isolations, overload transitions, heap
//! shrinks, config reloads, port-cap refusals. Bounded; the dashboard's Events view and the
//! admin API read it. Not a hot path (a few events a minute at most).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many events are kept.
pub const CAPACITY: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Isolation,
    Overload,
    HeapShrink,
    ConfigReload,
    Service,
    Storage,
    /// New clients refused because their relay port holds its cap.
    PortCap,
    /// Cluster membership: fenced, unfenced, members joining or leaving.
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct EventLog {
    // std Mutex: pushes and copies are short and never cross an await.
    inner: Mutex<VecDeque<Event>>,
    seq: std::sync::atomic::AtomicU64,
}

impl EventLog {
    pub fn push(&self, kind: EventKind, message: impl Into<String>) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(Event {
            at_ms,
            kind,
            message: message.into(),
        });
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Newest last.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        let q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().skip(q.len().saturating_sub(n)).cloned().collect()
    }

    /// Increases on every push; lets readers skip copying when nothing changed.
    pub fn version(&self) -> u64 {
        self.seq.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ordered() {
        let log = EventLog::default();
        for i in 0..CAPACITY + 10 {
            log.push(EventKind::Service, format!("e{i}"));
        }
        let all = log.recent(usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(
            all.last().map(|e| e.message.as_str()),
            Some(format!("e{}", CAPACITY + 9).as_str())
        );
        assert_eq!(log.recent(2).len(), 2);
        assert_eq!(log.version(), (CAPACITY + 10) as u64);
    }
}
