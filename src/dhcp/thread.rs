//! A DHCP server's own thread: a current-thread tokio runtime, so its
//! receive loop, workers and operations hand packets to each other without
//! cross-thread wake-ups, and a flood keeps that thread busy, not the
//! appliance's runtime. Everything the thread allocates is the DHCP server's.

use std::future::Future;

/// Runs `serve()` to its end on a new thread `vpcbox-{name}` and returns
/// its output, waiting without blocking the caller's runtime. `serve`
/// must move in whatever it needs (sockets as std sockets: each one joins
/// the new thread's reactor there). `Err` is worded for the appliance's
/// `fail`: the thread or its runtime could not start, or it panicked.
pub async fn on_own_thread<F, Fut>(name: &str, serve: F) -> Result<Fut::Output, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let label = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("vpcbox-{name}"))
        .spawn(move || {
            let _owner = crate::heap::enter_thread(crate::heap::Owner::Dhcp);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    let _ = done_tx.send(Ok(rt.block_on(serve())));
                }
                Err(e) => {
                    let _ =
                        done_tx.send(Err(format!("the {label} thread runtime cannot start: {e}")));
                }
            }
        });
    let t = spawned.map_err(|e| format!("the {name} thread cannot start: {e}"))?;
    let out = done_rx.await;
    let joined = tokio::task::spawn_blocking(move || t.join()).await;
    match (out, joined) {
        (Ok(out), Ok(Ok(()))) => out,
        _ => Err(format!("the {name} thread panicked")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output comes back; a panic on the thread is reported, not spread.
    #[tokio::test]
    async fn runs_on_a_named_thread_and_reports_a_panic() {
        let name = on_own_thread("t1", || async {
            tokio::task::yield_now().await;
            std::thread::current().name().map(str::to_owned)
        })
        .await;
        assert_eq!(name, Ok(Some("vpcbox-t1".to_owned())));
        let panicked = on_own_thread("t2", || async { panic!("boom") }).await;
        assert_eq!(panicked, Err::<(), _>("the t2 thread panicked".to_owned()));
    }
}
