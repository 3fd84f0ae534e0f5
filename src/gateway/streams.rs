//! The h2 streams of one connection, run by that connection's task.
//!
//! hyper hands every accepted h2 stream (the service future and the
//! response-body pipe) to its executor. With `TokioExecutor` each became a
//! tokio task of its own: an allocation bound into the runtime's task list,
//! a trip through the run queue, and a wake of the connection task for each
//! response it queued. Here the connection's [`Streams`] keeps them in a
//! `FuturesUnordered` that the connection's own task polls right after the
//! connection (see `conn::drive`): the streams a read accepted run in the
//! same task turn, and their responses are written on the next.
//!
//! What changes for a stream: it lives exactly as long as its connection
//! (dropping the connection task drops its streams, and with them every
//! guard); a panic in one ends its connection, not only itself. Wakes from
//! other threads (an upstream connection task, an API handler on the
//! blocking pool) go through the set's ready queue to the connection task.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;

use futures::stream::{FuturesUnordered, StreamExt};

/// A stream's future, boxed: hyper's stream type names its executor, so
/// the set cannot name the stream type.
type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's streams, owned by its task; dropping it drops them.
pub(crate) struct Streams {
    /// std `Mutex`: only the connection's task takes it, never across an
    /// await, and never nested (hyper calls `execute` while polling the
    /// connection; the set is polled after that poll returns). It is never
    /// contended; it is there because hyper's executor takes `&self` and
    /// the connection future must be `Send`.
    set: Arc<Mutex<FuturesUnordered<StreamFuture>>>,
}

impl Streams {
    pub(crate) fn new() -> Self {
        Self {
            set: Arc::new(Mutex::new(FuturesUnordered::new())),
        }
    }

    pub(crate) fn spawner(&self) -> Spawner {
        Spawner {
            set: Arc::downgrade(&self.set),
        }
    }

    /// Streams not yet finished.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The executor hyper's h2 server spawns a connection's streams into.
/// Weak: hyper keeps a clone in every stream it spawns, so a strong
/// reference would make the set own itself and outlive its connection.
#[derive(Clone)]
pub(crate) struct Spawner {
    set: Weak<Mutex<FuturesUnordered<StreamFuture>>>,
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Spawner {
    /// After the connection's task has ended, `fut` is dropped unpolled.
    fn execute(&self, fut: F) {
        if let Some(set) = self.set.upgrade() {
            set.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Box::pin(fut));
        }
    }
}

impl Streams {
    /// Polls every stream that is ready until none is; never completes, so
    /// it sits in the connection's `select!` beside the connection. An
    /// empty set registers no waker: streams only arrive while the
    /// connection is polled, which is in the same task turn just before.
    /// Cancel-safe: the streams stay in the set.
    pub(crate) fn run(&self) -> impl Future<Output = Infallible> + '_ {
        poll_fn(|cx| {
            let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
            while let Poll::Ready(Some(())) = set.poll_next_unpin(cx) {}
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[tokio::test(flavor = "current_thread")]
    async fn runs_what_is_executed_and_drops_what_is_left() {
        let done = Arc::new(AtomicUsize::new(0));
        let streams = Streams::new();
        let spawner = streams.spawner();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d = done.clone();
        spawner.execute(async move {
            d.fetch_add(1, SeqCst);
        });
        let d = done.clone();
        spawner.execute(async move {
            let _ = rx.await;
            d.fetch_add(1, SeqCst);
        });
        let run = streams.run();
        tokio::pin!(run);
        // One turn: the first finishes, the second waits on the channel.
        assert!(futures::poll!(run.as_mut()).is_pending());
        assert_eq!((done.load(SeqCst), streams.len()), (1, 1));
        // A wake from elsewhere reaches the waiting stream.
        tx.send(()).unwrap();
        assert!(futures::poll!(run.as_mut()).is_pending());
        assert_eq!((done.load(SeqCst), streams.len()), (2, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn streams_holding_the_spawner_die_with_the_connection() {
        let streams = Streams::new();
        let spawner = streams.spawner();
        let alive = Arc::new(());
        let (held, s) = (alive.clone(), spawner.clone());
        // Like hyper's stream futures, this one keeps a spawner clone.
        spawner.execute(async move {
            let _keep = (held, s);
            std::future::pending::<()>().await
        });
        assert!(futures::poll!(std::pin::pin!(streams.run())).is_pending());
        assert_eq!(Arc::strong_count(&alive), 2);
        drop(streams);
        assert_eq!(Arc::strong_count(&alive), 1, "the stream was not dropped");
        // Spawning after the end drops the future.
        let held = alive.clone();
        spawner.execute(async move { drop(held) });
        assert_eq!(Arc::strong_count(&alive), 1);
    }
}
