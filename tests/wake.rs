//! DESIGN §8: waking the home thread. A notifier at most once per idle →
//! pending edge, never lost; `has_pending`, `pump_at_most`, `pending()`.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::{join, spawn};
// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;
use tether::{Registry, Released, Transfer};

/// `n` objects homed here, each with its only reference in a transfer.
fn homed(reg: &Registry<u64>, n: u64) -> Vec<Transfer<u64>> {
    (0..n)
        .map(|i| {
            let h = reg.insert(i).expect("insert");
            reg.transfer(h).expect("transfer")
        })
        .collect()
}

/// A worker claims and releases each transfer: each value is queued home.
fn release_on_a_worker(reg: &Registry<u64>, ts: Vec<Transfer<u64>>) {
    let r = reg.clone();
    join(spawn("releaser", move || {
        for t in ts {
            let h = r.claim(t).expect("claim");
            assert_eq!(r.release(h), Ok(Released::Queued));
        }
    }));
}

/// Two workers that claim and release half of `ts` each, concurrently
/// (every value queued home); join them when done.
fn two_releasers(reg: &Registry<u64>, ts: Vec<Transfer<u64>>) -> Vec<std::thread::JoinHandle<()>> {
    let (a, b): (Vec<_>, Vec<_>) = ts.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    [a, b]
        .into_iter()
        .map(|ts| {
            let r = reg.clone();
            spawn("releaser", move || {
                for (_, t) in ts {
                    let h = r.claim(t).expect("claim");
                    r.release(h).expect("release");
                }
            })
        })
        .collect()
}

fn counting_notifier(reg: &Registry<u64>) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&n);
    reg.set_notify(move || {
        n2.fetch_add(1, Ordering::SeqCst);
    })
    .expect("set_notify");
    n
}

#[test]
fn many_queued_values_one_notify_until_the_queue_is_drained_empty() {
    let reg: Registry<u64> = Registry::new();
    let notified = counting_notifier(&reg);
    assert!(!reg.has_pending());
    // Made up front: an ordinary call here would drain a batch (re-arming).
    let later = homed(&reg, 5);
    release_on_a_worker(&reg, homed(&reg, 100));
    assert_eq!(notified.load(Ordering::SeqCst), 1, "one edge, one notify");
    assert!(reg.has_pending());
    // A bounded drain that leaves work keeps the edge closed.
    assert_eq!(reg.pump_at_most(10), 10);
    assert!(reg.has_pending());
    release_on_a_worker(&reg, later);
    assert_eq!(notified.load(Ordering::SeqCst), 1, "still the same edge");
    // Emptying re-arms: the next value notifies again.
    assert_eq!(reg.pump_at_most(1000), 95);
    assert!(!reg.has_pending());
    release_on_a_worker(&reg, homed(&reg, 3));
    assert_eq!(notified.load(Ordering::SeqCst), 2, "a new edge");
    // The opportunistic drain of an ordinary call re-arms too.
    let h = reg.insert(7).expect("insert"); // drains the 3
    assert!(!reg.has_pending());
    reg.release(h).expect("release");
    release_on_a_worker(&reg, homed(&reg, 1));
    assert_eq!(notified.load(Ordering::SeqCst), 3);
    reg.clear_notify();
    assert_eq!(reg.pump(), 1);
    release_on_a_worker(&reg, homed(&reg, 1));
    assert_eq!(notified.load(Ordering::SeqCst), 3, "cleared: no notify");
    assert_eq!(reg.pump(), 1);
    assert!(reg.is_empty());
}

/// An event loop that pumps, checks `has_pending()`, then sleeps until its
/// notifier wakes it, while two workers release thousands of its objects:
/// it must never sleep with work queued (a sleep that times out fails).
#[test]
fn a_sleeping_home_is_always_woken_for_queued_work() {
    const N: u64 = 4000;
    let reg: Registry<u64> = Registry::new();
    let (wake, woken) = mpsc::channel::<()>();
    reg.set_notify(move || {
        let _ = wake.send(());
    })
    .expect("set_notify");
    let workers = two_releasers(&reg, homed(&reg, N));
    let (mut done, mut sleeps) = (0u64, 0u64);
    while done < N {
        done += reg.pump() as u64;
        if done == N {
            break;
        }
        if !reg.has_pending() {
            sleeps += 1;
            woken
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("slept with work queued: {done} of {N} finalized"));
        }
    }
    for w in workers {
        join(w);
    }
    assert_eq!(reg.pump(), 0);
    assert!(reg.is_empty());
    eprintln!("{N} finalizations, {sleeps} sleeps");
}

/// A minimal executor: a waker that counts its wakes.
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn pending_is_woken_on_the_edge_by_any_executor() {
    let reg: Registry<u64> = Registry::new();
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    let mut cx = Context::from_waker(&waker);
    let ts = homed(&reg, 2);
    let mut fut = pin!(reg.pending());
    assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
    release_on_a_worker(&reg, ts);
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once for the edge");
    assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
    assert_eq!(reg.pump(), 2);
    // Empty again: pending until the next edge.
    let mut again = pin!(reg.pending());
    assert_eq!(again.as_mut().poll(&mut cx), Poll::Pending);
    release_on_a_worker(&reg, homed(&reg, 1));
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    assert_eq!(again.as_mut().poll(&mut cx), Poll::Ready(()));
    assert_eq!(reg.pump(), 1);
}

#[test]
fn a_panicking_notifier_is_counted_and_the_value_stays_queued() {
    let reg: Registry<u64> = Registry::new();
    reg.set_notify(|| panic!("notifier panics (test)"))
        .expect("set_notify");
    release_on_a_worker(&reg, homed(&reg, 1));
    assert_eq!(reg.hook_panics(), 1);
    assert!(reg.has_pending());
    assert_eq!(reg.pump(), 1, "the value was queued all the same");
    assert!(reg.is_empty());
}

/// A notifier may call the registry (here: release another object on the
/// releasing thread, which queues it home too: no deadlock, no second
/// notify for the same edge).
#[test]
fn a_notifier_may_call_the_registry() {
    let reg: Registry<u64> = Registry::new();
    type Parked = Arc<Mutex<Option<(Registry<u64>, Transfer<u64>)>>>;
    let slot: Parked = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (Arc::clone(&slot), Arc::clone(&calls));
    reg.set_notify(move || {
        c2.fetch_add(1, Ordering::SeqCst);
        if let Some((r, t)) = s2.lock().take() {
            let h = r.claim(t).expect("claim from inside the notifier");
            assert_eq!(r.release(h), Ok(Released::Queued));
        }
    })
    .expect("set_notify");
    let mut ts = homed(&reg, 2);
    *slot.lock() = Some((reg.clone(), ts.pop().expect("two")));
    release_on_a_worker(&reg, ts);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(reg.pump(), 2);
    assert!(reg.is_empty());
}

/// Thread exit clears that thread's notifier (its closure is dropped then).
#[test]
fn thread_exit_clears_the_notifier() {
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let reg: Registry<u64> = Registry::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let r = reg.clone();
    let d = Dropped(Arc::clone(&dropped));
    join(spawn("home", move || {
        // A thread with no table yet: setting a notifier registers it.
        r.set_notify(move || {
            let _ = &d;
        })
        .expect("set_notify");
        assert!(!r.has_pending());
    }));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the notifier went with its thread"
    );
    assert!(reg.is_empty());
}

/// `pending()` is the home thread's: its future is `!Send` (compile-time
/// check: were it `Send`, the two blanket impls would make `some_item`
/// ambiguous and this file would not compile).
#[test]
fn the_pending_future_is_not_send() {
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    #[allow(dead_code)]
    struct Invalid;
    impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}
    let _ = <tether::Pending<'static, u64> as AmbiguousIfSend<_>>::some_item;
}

/// A task waiting on `pending()` with a thread-parking executor while
/// workers release thousands of its objects: it is always woken (a wait
/// that times out fails, and says what the queue and flag looked like).
#[test]
fn an_async_home_awaiting_pending_is_always_woken() {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    const N: u64 = 4000;
    for round in 0..20 {
        let reg: Registry<u64> = Registry::new();
        let workers = two_releasers(&reg, homed(&reg, N));
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut finalized = 0u64;
        while finalized < N {
            let mut fut = pin!(reg.pending());
            let started = std::time::Instant::now();
            while fut.as_mut().poll(&mut cx).is_pending() {
                // Only a wake (or a spurious unpark) ends this wait early:
                // a lost wake-up sleeps the whole timeout.
                std::thread::park_timeout(Duration::from_secs(5));
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "round {round}: never woken; {finalized} of {N} finalized, has_pending {}, queued {}",
                    reg.has_pending(),
                    reg.snapshot().pending()
                );
            }
            finalized += reg.pump() as u64;
        }
        for w in workers {
            join(w);
        }
        assert_eq!(reg.pump(), 0);
        assert!(reg.is_empty());
    }
}
