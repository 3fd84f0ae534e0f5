use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

fn mac(n: u8) -> ClientKey {
    ClientKey::Mac([2, 0, 0, 0, 0, n])
}

#[test]
fn isolate_release_semantics() {
    let set = IsolationSet::in_memory();
    assert!(!set.is_isolated(&mac(1)));
    assert!(set.isolate(&mac(1), "test").unwrap());
    assert!(
        !set.isolate(&mac(1), "test").unwrap(),
        "second isolate is a no-op"
    );
    assert!(set.is_isolated(&mac(1)));
    assert!(set.is_isolated_mac([2, 0, 0, 0, 0, 1]));
    assert!(!set.is_isolated(&mac(2)));
    assert!(set.release(&mac(1), "test").unwrap());
    assert!(!set.release(&mac(1), "test").unwrap());
    assert!(!set.is_isolated(&mac(1)));
    let changes: Vec<_> = set.events().into_iter().map(|e| e.change).collect();
    assert_eq!(changes, [Change::Isolated, Change::Released]);
}

#[test]
fn survives_reopen_through_the_store() {
    #[derive(Default, Clone)]
    struct Shared(Arc<MemoryStore>);
    impl IsolationStore for Shared {
        fn load(&self) -> Result<Vec<IsolationEntry>, StoreError> {
            self.0.load()
        }
        fn put(&self, e: &IsolationEntry) -> Result<(), StoreError> {
            self.0.put(e)
        }
        fn remove(&self, c: &ClientKey) -> Result<(), StoreError> {
            self.0.remove(c)
        }
    }
    let store = Shared::default();
    let ip: ClientKey = "ip:192.0.2.7".parse().unwrap();
    IsolationSet::open(Box::new(store.clone()))
        .unwrap()
        .isolate(&ip, "api")
        .unwrap();
    let reopened = IsolationSet::open(Box::new(store)).unwrap();
    assert!(reopened.is_isolated(&ip));
    assert_eq!(reopened.entry(&ip).unwrap().source, "api");
}

#[test]
fn a_failing_store_changes_nothing() {
    struct Broken;
    impl IsolationStore for Broken {
        fn load(&self) -> Result<Vec<IsolationEntry>, StoreError> {
            Ok(vec![])
        }
        fn put(&self, _: &IsolationEntry) -> Result<(), StoreError> {
            Err(StoreError::new("disk full"))
        }
        fn remove(&self, _: &ClientKey) -> Result<(), StoreError> {
            Err(StoreError::new("disk full"))
        }
    }
    let set = IsolationSet::open(Box::new(Broken)).unwrap();
    assert!(set.isolate(&mac(1), "test").is_err());
    assert!(
        !set.is_isolated(&mac(1)),
        "not isolated in memory if not persisted"
    );
    assert!(set.events().is_empty());
}

#[test]
fn concurrent_readers_see_changes_without_blocking() {
    let set = IsolationSet::in_memory();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (set, stop) = (set.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = (0u64, 0u64);
                // At least one read even if the writer finishes first.
                while seen.0 + seen.1 == 0 || !stop.load(Ordering::Relaxed) {
                    if set.is_isolated(&mac(7)) {
                        seen.0 += 1;
                    } else {
                        seen.1 += 1;
                    }
                }
                seen
            })
        })
        .collect();
    for _ in 0..200 {
        set.isolate(&mac(7), "t").unwrap();
        std::thread::yield_now();
        set.release(&mac(7), "t").unwrap();
    }
    set.isolate(&mac(7), "t").unwrap();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let (yes, no) = r.join().unwrap();
        assert!(yes + no > 0);
    }
    assert!(set.is_isolated(&mac(7)));
    assert_eq!(set.events().len(), LOG_CAPACITY.min(401));
}

#[test]
fn attached_sinks_see_every_change() {
    let set = IsolationSet::in_memory();
    let stats = Stats::new(16);
    let events = Arc::new(EventLog::default());
    set.isolate(&mac(1), "api").unwrap();
    set.attach(stats.clone(), events.clone());
    assert_eq!(stats.isolated_clients.load(Ordering::Relaxed), 1);
    set.isolate(&mac(2), "dashboard").unwrap();
    set.release(&mac(1), "cli").unwrap();
    assert_eq!(stats.isolated_clients.load(Ordering::Relaxed), 1);
    let log: Vec<String> = events.recent(10).into_iter().map(|e| e.message).collect();
    assert_eq!(
        log,
        [
            "isolated mac:02:00:00:00:00:02 (dashboard)",
            "released mac:02:00:00:00:00:01 (cli)"
        ]
    );
}
