//! Loom model of `shutdown` racing an insert (issue 16, item 6).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{Drops, Tracked};
use tether::{Error, Registry};

/// A worker inserts (and releases) while the home calls `shutdown`. `Ok`
/// means nothing live and nothing new: an insert either fails with
/// `Closed` or completes — and is released — before `shutdown` can say
/// `Ok`; no insert returns `Ok` after it. An insert that checked `closed`
/// only before taking its slot and counting itself could complete after.
#[test]
fn no_insert_completes_after_shutdown_says_ok() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let said_ok = Arc::new(AtomicBool::new(false));
        let worker = {
            let reg = reg.clone();
            let drops = drops.clone();
            let said_ok = said_ok.clone();
            thread::spawn(move || match reg.insert(drops.value(1)) {
                Ok(h) => {
                    assert!(
                        !said_ok.load(Ordering::SeqCst),
                        "an insert completed after shutdown said Ok"
                    );
                    reg.release(h).unwrap();
                }
                Err(e) => assert_eq!(e.error(), Error::Closed),
            })
        };
        let done = reg.shutdown(std::time::Duration::from_secs(3600));
        assert!(done.is_ok(), "the worker lets go of what it inserted");
        said_ok.store(true, Ordering::SeqCst);
        assert!(reg.snapshot().objects.is_empty(), "nothing live after Ok");
        worker.join().unwrap();
        assert!(drops.total() <= 1);
    });
}
