//! Loom models of the home thread's wake-up edge (DESIGN §8).
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{Drops, Tracked};
use tether::{Registry, Transfer};

fn counting_notifier(reg: &Registry<Tracked>) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    reg.set_notify(move || {
        n2.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    n
}

fn homed(reg: &Registry<Tracked>, drops: &Drops, id: u32) -> Transfer<Tracked> {
    let h = reg.insert(drops.value(id)).unwrap();
    reg.transfer(h).unwrap()
}

/// No lost wake-up: with the edge closed (a first value queued and not yet
/// drained: it was notified), a worker queues a second value while the home
/// drains and then checks `has_pending()` (what an event loop does before it
/// sleeps). Either the home's drain took both, or its `has_pending()` sees
/// the second, or the worker notified again (the home re-armed first).
#[test]
fn a_value_queued_during_the_homes_drain_is_never_lost() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(2).build();
        let notified = counting_notifier(&reg);
        let t0 = homed(&reg, &drops, 0);
        let t1 = homed(&reg, &drops, 1);
        {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t0).unwrap();
                reg.release(h).unwrap();
            })
            .join()
            .unwrap();
        }
        assert_eq!(notified.load(Ordering::SeqCst), 1, "the first edge");
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t1).unwrap();
                reg.release(h).unwrap();
            })
        };
        let drained = reg.pump();
        let seen = reg.has_pending();
        worker.join().unwrap();
        let n = notified.load(Ordering::SeqCst);
        assert!(
            drained == 2 || seen || n == 2,
            "lost: drained {drained}, has_pending {seen}, notified {n}"
        );
        reg.pump();
        assert_eq!(drops.total(), 2);
    });
}

/// At most one notify per idle → pending edge: two workers queue values
/// home at once while the home does not drain: exactly one notify.
#[test]
fn two_senders_on_one_edge_notify_once() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(2).build();
        let notified = counting_notifier(&reg);
        let ts = [homed(&reg, &drops, 0), homed(&reg, &drops, 1)];
        let workers: Vec<_> = ts
            .into_iter()
            .map(|t| {
                let reg = reg.clone();
                thread::spawn(move || {
                    let h = reg.claim(t).unwrap();
                    reg.release(h).unwrap();
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(notified.load(Ordering::SeqCst), 1, "one edge, one notify");
        assert!(reg.has_pending());
        assert_eq!(reg.pump(), 2);
        assert_eq!(drops.total(), 2);
    });
}

/// `pending()` never misses a value: a home that drains and then polls the
/// future (registering its waker) while two workers queue values is either
/// told `Ready` or woken afterwards.
#[test]
fn a_pending_future_is_woken_or_ready() {
    use std::future::Future;
    use std::task::{Context, Wake, Waker};
    struct Flag(loom::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(3).build();
        let t0 = homed(&reg, &drops, 0);
        let t1 = homed(&reg, &drops, 1);
        let t2 = homed(&reg, &drops, 2);
        let flag = std::sync::Arc::new(Flag(loom::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        // The home has polled once (its waker is registered) and a first
        // value came: the edge is closed until the home drains.
        assert!(Box::pin(reg.pending()).as_mut().poll(&mut cx).is_pending());
        {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t0).unwrap();
                reg.release(h).unwrap();
            })
            .join()
            .unwrap();
        }
        let workers: Vec<_> = [t1, t2]
            .into_iter()
            .map(|t| {
                let reg = reg.clone();
                thread::spawn(move || {
                    let h = reg.claim(t).unwrap();
                    reg.release(h).unwrap();
                })
            })
            .collect();
        let mut drained = 0;
        loop {
            let ready = Box::pin(reg.pending()).as_mut().poll(&mut cx).is_ready();
            if ready {
                drained += reg.pump();
                if drained == 3 {
                    break;
                }
                continue;
            }
            // Pending: it must be woken (or every value already drained).
            flag.0.store(false, Ordering::SeqCst);
            if Box::pin(reg.pending()).as_mut().poll(&mut cx).is_ready() {
                continue;
            }
            let mut spins = 0;
            while !flag.0.load(Ordering::SeqCst) {
                spins += 1;
                assert!(spins < 50, "never woken: {drained} drained");
                thread::yield_now();
            }
        }
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(drops.total(), 3);
    });
}
