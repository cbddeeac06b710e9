//! A home thread that sleeps in its event loop and is woken by tether only
//! when work arrives (DESIGN §8), in two forms:
//!
//! 1. **Callback**: the home blocks on its own event channel; its notifier
//!    posts a `Wake` event there. Workers release thousands of its objects;
//!    it pumps when woken, and before it sleeps it checks `has_pending()`,
//!    so it never sleeps with work queued.
//! 2. **Async**: the home is a tokio current-thread runtime with a
//!    `LocalSet`; between its tasks it awaits `reg.pending()` and pumps.
//!
//! Both end with nothing live and nothing queued, and print how many
//! wake-ups served how many finalizations.
//!
//! ```sh
//! cargo run --example event_loop [objects]
//! ```

use std::sync::mpsc;
use std::thread;

use tether::{Registry, Transfer};

/// The home's events: its own work, and tether's wake-ups.
enum Event {
    Wake,
    WorkerDone,
}

/// A stored value: something only its home may drop (think of a JS object).
struct Resource {
    id: u64,
    home: thread::ThreadId,
}

impl Drop for Resource {
    fn drop(&mut self) {
        assert_eq!(
            thread::current().id(),
            self.home,
            "resource {} dropped off its home",
            self.id
        );
    }
}

const WORKERS: usize = 4;

/// `n` resources homed on this thread, each handed out as a transfer.
fn hand_out(reg: &Registry<Resource>, n: u64) -> Vec<Vec<Transfer<Resource>>> {
    let me = thread::current().id();
    let mut per_worker: Vec<Vec<_>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for id in 0..n {
        let h = reg.insert(Resource { id, home: me }).expect("insert");
        per_worker[id as usize % WORKERS].push(reg.transfer(h).expect("transfer"));
    }
    per_worker
}

fn callback_home(n: u64) {
    let reg: Registry<Resource> = Registry::new();
    let (events, inbox) = mpsc::channel::<Event>();
    let wake = events.clone();
    reg.set_notify(move || {
        let _ = wake.send(Event::Wake);
    })
    .expect("set_notify");
    let workers: Vec<_> = hand_out(&reg, n)
        .into_iter()
        .map(|ts| {
            let (reg, events) = (reg.clone(), events.clone());
            thread::spawn(move || {
                for t in ts {
                    let h = reg.claim(t).expect("claim");
                    // ... use it ...
                    reg.release(h).expect("release"); // queued to its home
                }
                let _ = events.send(Event::WorkerDone);
            })
        })
        .collect();
    let (mut finalized, mut wakeups, mut done) = (0u64, 0u64, 0);
    while finalized < n || done < WORKERS {
        finalized += reg.pump() as u64;
        if finalized == n && done == WORKERS {
            break;
        }
        if reg.has_pending() {
            continue; // never sleep with work queued
        }
        match inbox.recv().expect("the event loop's channel") {
            Event::Wake => wakeups += 1,
            Event::WorkerDone => done += 1,
        }
    }
    for w in workers {
        w.join().expect("worker");
    }
    reg.clear_notify();
    // (`has_pending()` may still say true: a flag set after the drain took
    // its value. The queues themselves are empty.)
    assert!(reg.is_empty() && reg.snapshot().pending() == 0);
    println!(
        "callback home: {n} objects released by {WORKERS} workers, {finalized} finalized at home after {wakeups} wake-ups"
    );
}

fn async_home(n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let reg: Registry<Resource> = Registry::new();
        let workers: Vec<_> = hand_out(&reg, n)
            .into_iter()
            .map(|ts| {
                let reg = reg.clone();
                thread::spawn(move || {
                    for t in ts {
                        let h = reg.claim(t).expect("claim");
                        reg.release(h).expect("release");
                    }
                })
            })
            .collect();
        // Other work of the home runs as local tasks meanwhile.
        let ticks = tokio::task::spawn_local(async {
            let mut ticks = 0u64;
            for _ in 0..100 {
                tokio::task::yield_now().await;
                ticks += 1;
            }
            ticks
        });
        let (mut finalized, mut wakeups) = (0u64, 0u64);
        while finalized < n {
            reg.pending().await; // sleeps until a worker queues work here
            wakeups += 1;
            finalized += reg.pump() as u64;
        }
        for w in workers {
            w.join().expect("worker");
        }
        let ticks = ticks.await.expect("task");
        assert!(reg.is_empty() && reg.snapshot().pending() == 0);
        println!(
            "async home:    {n} objects released by {WORKERS} workers, {finalized} finalized at home after {wakeups} wake-ups ({ticks} ticks of other tasks)"
        );
    });
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    callback_home(n);
    async_home(n);
}
