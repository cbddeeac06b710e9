//! Invariant 7: thread exit is a release. With the default
//! `ThreadExit::Release` a thread's remaining references are released when it
//! exits; with `ThreadExit::Leak` they are kept and reported. A home thread's
//! exit finalizes its pending queue first, and a release after the home
//! thread exited finalizes on the releasing thread.

mod common;

use std::sync::{mpsc, Arc};
use std::thread;

use common::{count_of, join, rel, spawn, DropLog, Rel, Tracked};
// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;
use tether::{Error, Handle, Registry, ThreadExit};

#[test]
fn a_worker_exiting_with_references_releases_them() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.retain(h).expect("retain");
    let t = reg.transfer(h).expect("transfer");

    let r2 = reg.clone();
    let worker = spawn("exits-holding", move || {
        r2.claim(t).expect("claim");
        r2.retain(h).expect("retain");
        r2.retain(h).expect("retain");
        assert_eq!(r2.count(h), Ok(3));
        thread::current().id()
        // exits holding 3 references
    });
    let wid = join(worker);
    let holders = reg.holders(h).expect("holders");
    assert_eq!(
        count_of(&holders, wid),
        0,
        "exit released them: {holders:?}"
    );
    assert_eq!(reg.count(h), Ok(1), "home's count untouched");
    assert_eq!(log.count(), 0, "home still holds one");
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 1);
}

#[test]
fn a_worker_exit_that_drops_the_last_reference_queues_the_value_home() {
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer the only reference");

    let r2 = reg.clone();
    join(spawn("last-holder-exits", move || {
        r2.claim(t).expect("claim");
        r2.retain(h).expect("retain");
    }));
    // No registry call on home since the worker exited.
    assert_eq!(log.count(), 0, "dropped on the exiting worker, not home");
    assert_eq!(reg.pump(), 1, "the worker's exit queued the value home");
    assert_eq!(log.count(), 1);
    assert_eq!(log.dropped_on(1), Some(home));
    assert!(reg.is_empty());
}

#[test]
fn a_home_thread_exiting_with_references_finalizes_its_objects_on_itself() {
    let log = DropLog::new();
    let reg = Registry::new();
    let r2 = reg.clone();
    let log2 = log.clone();
    let worker = spawn("home-exits-holding", move || {
        for i in 0..5 {
            let h = r2.insert(Tracked::new(&log2, i)).expect("insert");
            r2.retain(h).expect("retain");
        }
        thread::current().id()
    });
    let wid = join(worker);
    assert_eq!(
        log.count(),
        5,
        "the exiting home thread released everything"
    );
    assert!(
        log.threads().iter().all(|t| *t == wid),
        "finalized on its home thread"
    );
    assert!(reg.is_empty());
    assert_eq!(reg.pump(), 0, "nothing was queued to an unrelated thread");
}

#[test]
fn leak_policy_keeps_references_and_reports_the_exited_holder() {
    let log = DropLog::new();
    let reg = Registry::builder().thread_exit(ThreadExit::Leak).build();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer the only reference");

    let r2 = reg.clone();
    let wid = join(spawn("leaker", move || {
        r2.claim(t).expect("claim");
        r2.retain(h).expect("retain");
        thread::current().id()
    }));
    assert_eq!(reg.pump(), 0, "leak policy: nothing was released");
    assert_eq!(log.count(), 0, "leak policy: the value must be kept");
    assert_eq!(reg.len(), 1);
    assert_eq!(reg.get(h).expect("home can still read it").id, 1);

    let snap = reg.snapshot();
    let obj = snap
        .object(h)
        .expect("object is still live in the snapshot");
    let holder = obj
        .holders
        .iter()
        .find(|hs| hs.thread == wid)
        .expect("the exited thread is still listed as a holder");
    assert_eq!(holder.count, 2, "its references are kept");
    assert!(holder.exited, "and it is reported as exited");
    let ts = snap
        .threads
        .iter()
        .find(|ts| ts.thread == wid)
        .expect("the exited thread appears in snapshot().threads");
    assert!(ts.exited);
}

#[test]
fn a_home_threads_exit_finalizes_its_pending_queue_first() {
    let log = DropLog::new();
    let reg = Registry::new();
    let (token_tx, token_rx) = mpsc::channel();
    let (released_tx, released_rx) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let log2 = log.clone();
    let home = spawn("home-with-queue", move || {
        let h = r2.insert(Tracked::new(&log2, 1)).expect("insert");
        token_tx
            .send(r2.transfer(h).expect("transfer"))
            .expect("send token");
        // Parked, not calling the registry, while the value is queued here.
        released_rx.recv().expect("released");
        assert_eq!(log2.count(), 0, "dropped before the home thread got it");
        thread::current().id()
        // exit without pump(): the exit must drain the queue
    });
    let t = common::recv(&token_rx, "token");
    let h = reg.claim(t).expect("claim");
    assert_eq!(rel(reg.release(h)), Rel::Queued, "home is alive: queued");
    assert_eq!(log.count(), 0, "dropped on the releasing thread");
    released_tx.send(()).expect("send");
    let hid = join(home);
    assert_eq!(log.count(), 1, "the home thread's exit drained its queue");
    assert_eq!(log.dropped_on(1), Some(hid));
    assert_eq!(reg.snapshot().pending(), 0);
}

#[test]
fn a_release_after_the_home_thread_exited_finalizes_on_the_releaser() {
    let log = DropLog::new();
    let reg = Registry::new();
    let r2 = reg.clone();
    let log2 = log.clone();
    let t = join(spawn("short-lived-home", move || {
        let h = r2.insert(Tracked::new(&log2, 1)).expect("insert");
        r2.transfer(h).expect("transfer")
    }));
    assert_eq!(
        log.count(),
        0,
        "the token kept it alive past its home's exit"
    );
    let h = reg.claim(t).expect("claim after the home exited");
    assert_eq!(reg.get(h).expect("get").id, 1);
    assert_eq!(rel(reg.release(h)), Rel::Finalized, "no home to send it to");
    assert_eq!(log.count(), 1);
    assert_eq!(log.dropped_on(1), Some(thread::current().id()));
}

#[test]
fn a_worker_exit_after_the_home_exited_finalizes_on_the_worker() {
    let log = DropLog::new();
    let reg = Registry::new();
    let r2 = reg.clone();
    let log2 = log.clone();
    let t = join(spawn("gone-home", move || {
        let h = r2.insert(Tracked::new(&log2, 1)).expect("insert");
        r2.transfer(h).expect("transfer")
    }));
    let r3 = reg.clone();
    let wid = join(spawn("exits-last", move || {
        r3.claim(t).expect("claim");
        thread::current().id()
    }));
    assert_eq!(log.count(), 1, "released by the worker's exit");
    assert_eq!(log.dropped_on(1), Some(wid));
    assert!(reg.is_empty());
}

#[test]
fn a_forgotten_proxy_is_kept_and_reported_after_thread_exit() {
    // Only explicit references are released at exit: a proxy (or guard) may
    // still be alive in a thread-local destructor that runs later and
    // dereferences it, so releasing it at exit could free a borrowed value
    // (invariant 1). A proxy leaked with mem::forget therefore stays counted,
    // visibly: the snapshot shows its exited holder.
    let log = DropLog::new();
    let reg = Registry::new();
    let p = reg
        .insert_proxy(Tracked::new(&log, 1))
        .expect("insert_proxy");
    let h = p.handle();
    let t = p.transfer();
    let wid = join(spawn("forgets-proxy", move || {
        let p = t.claim().expect("claim");
        std::mem::forget(p.clone());
        std::mem::forget(p);
        thread::current().id()
    }));
    assert_eq!(reg.pump(), 0, "a forgotten proxy's reference was released");
    assert_eq!(log.count(), 0);
    assert_eq!(reg.len(), 1);
    let snap = reg.snapshot();
    let holder = snap
        .object(h)
        .expect("still live")
        .holders
        .iter()
        .find(|hs| hs.thread == wid)
        .expect("the exited thread is still listed as a holder");
    assert_eq!((holder.count, holder.exited), (2, true));
}

#[test]
fn a_proxy_kept_in_a_user_thread_local_is_released_at_thread_exit() {
    // Runtime bridges cache proxies in thread-locals. Their destructors may
    // run before or after the registry's own exit hook; either way the
    // reference must be released and nothing may panic (a panic in a
    // thread-local destructor aborts the process).
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<Vec<tether::Proxy<Tracked>>> = const { RefCell::new(Vec::new()) };
    }
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let tokens: Vec<_> = (0..2)
        .map(|i| {
            let p = reg.insert_proxy(Tracked::new(&log, i)).expect("insert");
            p.transfer()
        })
        .collect();
    join(spawn("caches-proxies", move || {
        for t in tokens {
            let p = t.claim().expect("claim");
            CACHE.with(|c| c.borrow_mut().push(p));
        }
    }));
    assert_eq!(log.count(), 0, "dropped on the exiting worker");
    assert_eq!(reg.pump(), 2, "cached proxies were released at exit");
    assert_eq!(log.count(), 2);
    assert!(log.threads().iter().all(|t| *t == home));
}

#[test]
fn a_proxy_dropped_after_the_exit_hook_keeps_its_object_alive_until_then() {
    // The other order of the test above: the thread-local's destructor is
    // registered before the thread's first registry call, so it runs after
    // the registry's exit hook. The hook releases the thread's explicit
    // references but must keep its proxies' (roots): the object lives until
    // the last proxy is dropped, here by that destructor.
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Drops its proxy last, noting first whether the exit hook had run and
    /// how many values had been dropped by then.
    struct Kept {
        proxy: Option<tether::Proxy<Tracked>>,
        log: Arc<DropLog>,
        hook_ran: Arc<AtomicBool>,
        seen: Arc<Mutex<Option<(bool, usize)>>>,
    }
    impl Drop for Kept {
        fn drop(&mut self) {
            let at_drop = (self.hook_ran.load(Ordering::SeqCst), self.log.count());
            *self.seen.lock() = Some(at_drop);
            drop(self.proxy.take());
        }
    }
    thread_local! {
        static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
    }

    let log = DropLog::new();
    let hook_ran = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(None));
    let reg = Registry::builder()
        .on_event({
            let hook_ran = Arc::clone(&hook_ran);
            move |e| {
                if let tether::Event::ThreadExited { .. } = e {
                    hook_ran.store(true, Ordering::SeqCst);
                }
            }
        })
        .build();
    let (r2, log2, ran2, seen2) = (reg.clone(), Arc::clone(&log), hook_ran, Arc::clone(&seen));
    join(spawn("proxy-outlives-hook", move || {
        // First touch: this destructor is registered before the hook.
        KEPT.with(|k| assert!(k.borrow().is_none()));
        let h = r2.insert(Tracked::new(&log2, 1)).expect("insert"); // home
        let proxy = r2.proxy(h).expect("proxy");
        r2.retain(h).expect("retain");
        assert_eq!(r2.count(h), Ok(3), "two references and one proxy");
        KEPT.with(|k| {
            *k.borrow_mut() = Some(Kept {
                proxy: Some(proxy),
                log: log2,
                hook_ran: ran2,
                seen: seen2,
            })
        });
    }));
    assert_eq!(
        *seen.lock(),
        Some((true, 0)),
        "the proxy was dropped after the exit hook, and the object was alive until then"
    );
    assert_eq!(log.count(), 1, "the proxy's drop finalized it");
    assert!(reg.is_empty());
}

#[test]
fn pins_outlive_the_thread_that_pinned() {
    // A pin belongs to the registry, not to the thread: a pinning thread's
    // exit does not remove it.
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let r2 = reg.clone();
    join(spawn("pins-then-exits", move || {
        r2.claim(t).expect("claim");
        r2.pin(h).expect("a holder may pin");
        // exits holding one explicit reference and having pinned once
    }));
    assert_eq!(reg.pump(), 0, "the pin keeps it alive");
    assert_eq!(log.count(), 0);
    assert_eq!(reg.snapshot().object(h).expect("live").pins, 1);
    reg.unpin(h).expect("home may unpin");
    assert_eq!(log.count(), 1, "last pin removed on home: dropped now");
    assert!(reg.is_empty());
}

/// What an [`InsertsOnDrop`] needs to insert again: the registry, the log
/// for the new value, and where to record its handle.
type Again = (
    Registry<InsertsOnDrop>,
    Arc<DropLog>,
    Arc<Mutex<Vec<Handle>>>,
);

/// A value whose `Drop` inserts a new value into its registry, on the
/// dropping thread, and records the new handle.
struct InsertsOnDrop {
    id: u64,
    again: Option<Again>,
    _tracked: Tracked,
}

impl Drop for InsertsOnDrop {
    fn drop(&mut self) {
        if let Some((reg, log, sink)) = self.again.take() {
            let id = self.id + 1000;
            let value = InsertsOnDrop {
                id,
                again: None,
                _tracked: Tracked::new(&log, id),
            };
            let h = reg.insert(value).expect("insert from inside Drop");
            sink.lock().push(h);
        }
    }
}

#[test]
fn references_taken_by_drops_during_thread_exit_are_released_too() {
    // The exit releases the worker's object; its `Drop` (run on the exiting
    // worker, its home) inserts another object, which the worker then holds.
    // That reference is released by the same exit.
    let log = DropLog::new();
    let reg: Registry<InsertsOnDrop> = Registry::new();
    let inserted = Arc::new(Mutex::new(Vec::new()));
    let again: Again = (reg.clone(), log.clone(), Arc::clone(&inserted));
    let (r2, log2) = (reg.clone(), log.clone());
    join(spawn("drop-inserts-at-exit", move || {
        let value = InsertsOnDrop {
            id: 1,
            again: Some(again),
            _tracked: Tracked::new(&log2, 1),
        };
        r2.insert(value).expect("insert");
        // exits holding its only reference
    }));
    let new = std::mem::take(&mut *inserted.lock());
    assert_eq!(new.len(), 1, "the Drop ran at exit and inserted once");
    assert!(
        reg.is_empty(),
        "the reference taken during exit was kept:\n{}",
        reg.snapshot()
    );
    assert_eq!(reg.get(new[0]).err(), Some(Error::Stale(new[0])));
    assert_eq!(log.times_dropped(1), 1);
    assert_eq!(log.times_dropped(1001), 1);
}

#[test]
fn a_thread_that_used_many_registries_releases_in_each_at_exit() {
    // Each registry a thread uses registers its own exit hook on it; hooks
    // of registries dropped meanwhile are pruned, live ones must all run.
    const N: usize = 20;
    let log = DropLog::new();
    let regs: Vec<Registry<Tracked>> = (0..N).map(|_| Registry::new()).collect();
    let tokens: Vec<_> = regs
        .iter()
        .enumerate()
        .map(|(i, reg)| {
            let h = reg.insert(Tracked::new(&log, i as u64)).expect("insert");
            reg.transfer(h).expect("transfer")
        })
        .collect();
    let (regs2, log2) = (regs.clone(), log.clone());
    join(spawn("many-registries", move || {
        for (i, (reg, t)) in regs2.iter().zip(tokens).enumerate() {
            reg.claim(t).expect("claim");
            // A short-lived registry in between: its hook goes dead.
            let temp = Registry::new();
            let h = temp
                .insert(Tracked::new(&log2, 100 + i as u64))
                .expect("insert");
            assert_eq!(rel(temp.release(h)), Rel::Finalized);
        }
        // exits holding one reference in each live registry
    }));
    for (i, reg) in regs.iter().enumerate() {
        assert!(reg.is_empty(), "registry {i}: the exit did not release");
        assert_eq!(reg.pump(), 1, "registry {i}: queued to its home");
    }
    assert_eq!(log.count(), 2 * N);
}

/// A value whose `Drop` tries to insert into another registry and records
/// the outcome.
struct InsertsElsewhereOnDrop {
    other: Registry<u64>,
    outcome: Arc<Mutex<Vec<Result<Handle, Error>>>>,
}

impl Drop for InsertsElsewhereOnDrop {
    fn drop(&mut self) {
        let r = self.other.insert(7).map_err(|e| e.error());
        self.outcome.lock().push(r);
    }
}

#[test]
fn a_registry_whose_exit_already_ran_refuses_late_calls_from_that_thread() {
    // The worker uses `early` (so `early`'s exit runs first), then `late`,
    // then `early` again. At exit, `late` releases a value whose `Drop` calls
    // `early` — whose exit for this thread has already run.
    let early: Registry<u64> = Registry::new();
    let late: Registry<InsertsElsewhereOnDrop> = Registry::new();
    let outcome = Arc::new(Mutex::new(Vec::new()));
    let (e2, l2, o2) = (early.clone(), late.clone(), Arc::clone(&outcome));
    join(spawn("late-drop", move || {
        let h = e2.insert(1).expect("insert");
        let value = InsertsElsewhereOnDrop {
            other: e2.clone(),
            outcome: o2,
        };
        l2.insert(value).expect("insert"); // held until exit
        assert_eq!(rel(e2.release(h)), Rel::Finalized);
    }));
    let outcome = std::mem::take(&mut *outcome.lock());
    assert_eq!(outcome, vec![Err(Error::ThreadExited)]);
    assert!(early.is_empty());
    assert!(late.is_empty());
}

#[test]
fn an_exited_thread_that_held_nothing_is_forgotten() {
    // A worker that used the registry and let go of everything leaves no
    // table behind: the snapshot lists live threads and exited threads that
    // still hold something, nothing else.
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let (r2, log2) = (reg.clone(), log.clone());
    let worker = join(spawn("let-go-then-exit", move || {
        let mine = r2.claim(t).expect("claim");
        let other = r2.insert(Tracked::new(&log2, 2)).expect("insert");
        assert_eq!(rel(r2.release(other)), Rel::Finalized);
        r2.transfer(mine).expect("transfer") // hands its reference back
    }));
    assert_eq!(reg.claim(worker), Ok(h));
    let s = reg.snapshot();
    let me = thread::current().id();
    assert!(
        s.threads.iter().all(|t| t.thread == me),
        "an exited thread that held nothing is still listed:\n{s}"
    );
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 2);
}

/// A link of a `Drop` chain: dropping it inserts the next link (on the
/// dropping thread) until `left` reaches 0.
struct Link {
    left: u32,
    reg: Registry<Link>,
    dropped: Arc<Mutex<u32>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        *self.dropped.lock() += 1;
        if self.left > 0 {
            let next = Link {
                left: self.left - 1,
                reg: self.reg.clone(),
                dropped: Arc::clone(&self.dropped),
            };
            self.reg.insert(next).expect("insert the next link");
        }
    }
}

/// Issue 16, item 7: thread exit gave up after 8 passes, so a `Drop` chain
/// that inserts a follow-up object on the exiting thread left its 9th link
/// held by the dead thread (13 links: 8 dropped, `len() == 1`). Every chain
/// that ends is released to its end.
#[test]
fn thread_exit_releases_a_drop_chain_of_any_length() {
    for links in [1u32, 8, 9, 13, 200] {
        let reg: Registry<Link> = Registry::new();
        let dropped = Arc::new(Mutex::new(0));
        let (r2, d2) = (reg.clone(), Arc::clone(&dropped));
        join(spawn("chain-at-exit", move || {
            let first = Link {
                left: links - 1,
                reg: r2.clone(),
                dropped: d2,
            };
            r2.insert(first).expect("insert the first link");
            // exits holding it
        }));
        assert_eq!(*dropped.lock(), links, "{links} links");
        assert_eq!(
            reg.len(),
            0,
            "{links} links: one left held by the dead thread"
        );
    }
}

/// Issue 16, item 1: the `ThreadExited` event hook runs user code on the
/// exiting thread. A hook that inserted (a proxy parked in a thread-local
/// first touched there, destroyed after tether's) used the table the exit
/// was about to free: a heap-use-after-free under AddressSanitizer, and its
/// plain `insert` was never released. The table is detached before the hook
/// runs: such calls are refused with `ThreadExited` and nothing is lost.
#[test]
fn the_exit_event_hook_cannot_add_to_the_exiting_threads_table() {
    use std::cell::RefCell;
    thread_local! {
        static PARKED: RefCell<Vec<tether::Proxy<u64>>> = const { RefCell::new(Vec::new()) };
    }
    type Results = Arc<Mutex<Vec<(&'static str, Result<(), Error>)>>>;
    let results: Results = Arc::new(Mutex::new(Vec::new()));
    let slot: Arc<Mutex<Option<Registry<u64>>>> = Arc::new(Mutex::new(None));
    let reg = Registry::builder()
        .on_event({
            let (results, slot) = (Arc::clone(&results), Arc::clone(&slot));
            move |e| {
                let tether::Event::ThreadExited { .. } = e else {
                    return;
                };
                let Some(reg) = slot.lock().clone() else {
                    return;
                };
                let mut out = results.lock();
                let r = reg.insert_proxy(1).map(|p| {
                    // First touched here: destroyed after tether's state.
                    PARKED.with(|v| v.borrow_mut().push(p));
                });
                out.push(("insert_proxy", r.map_err(|e| e.error())));
                out.push(("insert", reg.insert(2).map(drop).map_err(|e| e.error())));
            }
        })
        .build();
    *slot.lock() = Some(reg.clone());
    let r2 = reg.clone();
    join(spawn("hook-inserts-at-exit", move || {
        let h = r2.insert(0).expect("insert");
        r2.retain(h).expect("retain");
        // exits holding two references; its exit hook fires the event
    }));
    slot.lock().take();
    let results = results.lock().clone();
    assert_eq!(
        results,
        [
            ("insert_proxy", Err(Error::ThreadExited)),
            ("insert", Err(Error::ThreadExited))
        ]
    );
    assert!(reg.is_empty(), "left behind:\n{}", reg.snapshot());
    assert_eq!(
        reg.snapshot().threads.len(),
        0,
        "the exited table was freed"
    );
}

/// Issue 16, item 5: a proxy in a thread-local destroyed after tether's
/// exit hook kept its table alive — and the table stayed listed forever
/// after the proxy dropped (10 K threads: 10 K tables, +14 MiB, and `len()`
/// walking them all). The last late hold frees the table.
#[test]
fn an_exited_threads_table_is_freed_when_its_last_late_proxy_drops() {
    use std::cell::RefCell;
    thread_local! {
        static LATE: RefCell<Option<tether::Proxy<u64>>> = const { RefCell::new(None) };
    }
    const THREADS: u64 = 2000;
    let reg: Registry<u64> = Registry::new();
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let r = reg.clone();
            spawn("late-proxy", move || {
                // First touch before tether's: destroyed after its hook.
                LATE.with(|l| assert!(l.borrow().is_none()));
                let p = r.insert_proxy(i).expect("insert_proxy");
                let q = p.clone();
                LATE.with(|l| *l.borrow_mut() = Some(q));
            })
        })
        .collect();
    for w in workers {
        join(w);
    }
    let snap = reg.snapshot();
    assert_eq!(
        snap.threads.len(),
        0,
        "{} exited tables kept",
        snap.threads.len()
    );
    assert!(reg.is_empty());
}
