//! Interner user code as the point: `init`, the key's `Hash`, `Eq`,
//! `Clone` and `Drop`, and the event hook while `init`'s result is handed
//! to a waiting thread. The action's subject is the key's object once it
//! exists (the calling thread's spare before).

use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tether::{Handle, InternError, Interner, Released};

use crate::actions::Action;
use crate::harness::{Actor, KeyCode, KeyPoint, Point, Reg, Role, Scenario, Val, STEP};

/// Every interner point.
pub const KEY_POINTS: [KeyPoint; 8] = [
    KeyPoint::Init,
    KeyPoint::Hash,
    KeyPoint::EqMap,
    KeyPoint::EqCache,
    KeyPoint::Clone,
    KeyPoint::DropAtRelease,
    KeyPoint::DropAtExit,
    KeyPoint::MintHook,
];

/// A key whose `Hash`, `Eq`, `Clone` and `Drop` are the scenario's points.
pub struct Key {
    name: &'static str,
    sc: Arc<Scenario>,
}

impl Key {
    fn new(sc: &Arc<Scenario>) -> Self {
        Key {
            name: "k",
            sc: Arc::clone(sc),
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.sc.key_code(KeyCode::Hash);
        self.name.hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.sc.key_code(KeyCode::Eq);
        self.name == other.name
    }
}

impl Eq for Key {}

impl Clone for Key {
    fn clone(&self) -> Self {
        self.sc.key_code(KeyCode::Clone);
        Key::new(&self.sc)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.sc.key_code(KeyCode::Drop);
        }
    }
}

type Names = Interner<Key, Val, String>;

/// What an `intern` call did.
#[derive(Debug)]
enum Interned {
    Ok(Handle),
    Err(InternError<String>),
    Panicked,
}

impl Interned {
    fn handle(&self) -> Option<Handle> {
        match self {
            Interned::Ok(h) => Some(*h),
            _ => None,
        }
    }
}

/// `intern`s the key on the calling thread (`init` may run the action).
fn intern(
    names: &Names,
    sc: &Arc<Scenario>,
    init: impl FnOnce() -> Result<Val, String>,
) -> Interned {
    let key = Key::new(sc);
    match catch_unwind(AssertUnwindSafe(|| names.intern(&key, init))) {
        Ok(Ok(h)) => Interned::Ok(h),
        Ok(Err(e)) => Interned::Err(e),
        Err(_) => Interned::Panicked,
    }
}

fn plain(names: &Names, l: &crate::harness::Local) -> Interned {
    intern(names, &l.sc, || Ok(l.sc.val()))
}

/// Runs `action` at the interner point `point`.
pub fn run(point: KeyPoint, action: Action) {
    let sc = Scenario::new(Point::Key(point), action);
    let reg = sc.registry();
    let names: Names = Interner::new(&reg);
    let home = Actor::spawn(&sc, Role::Home, &reg);
    let worker = Actor::spawn(&sc, Role::Worker, &reg);
    home.run("setup", |l| l.setup(true));
    worker.run("setup", |l| l.setup(true));
    let panic = action == Action::Panic;
    // Where a panic of the point goes: to the caller of `intern`, or caught
    // and counted (key `Drop`s inside a release or exit; the hook).
    let to_caller = panic
        && matches!(
            point,
            KeyPoint::Init | KeyPoint::Hash | KeyPoint::EqMap | KeyPoint::EqCache | KeyPoint::Clone
        );
    let key_panics =
        u64::from(panic && matches!(point, KeyPoint::DropAtRelease | KeyPoint::DropAtExit));
    let hook_panics = u64::from(panic && point == KeyPoint::MintHook);

    let n = names.clone();
    let got: Vec<(Role, Interned)> = match point {
        KeyPoint::Init => {
            sc.enable();
            let r = home.run("intern (init acts)", move |l| {
                intern(&n, &l.sc, || {
                    l.sc.key_code(KeyCode::Init);
                    Ok(l.sc.val())
                })
            });
            vec![(Role::Home, r)]
        }
        KeyPoint::Hash | KeyPoint::Clone => {
            sc.enable();
            vec![(Role::Home, home.run("intern", move |l| plain(&n, l)))]
        }
        KeyPoint::EqMap | KeyPoint::EqCache => {
            let n2 = names.clone();
            let first = home.run("intern", move |l| plain(&n2, l));
            *sc.key_object.lock() = first.handle();
            sc.enable();
            let again = if point == KeyPoint::EqMap {
                (
                    Role::Worker,
                    worker.run("intern (map)", move |l| plain(&n, l)),
                )
            } else {
                (
                    Role::Home,
                    home.run("intern (cache)", move |l| plain(&n, l)),
                )
            };
            vec![(Role::Home, first), again]
        }
        KeyPoint::DropAtRelease => {
            let first = home.run("intern", move |l| plain(&n, l));
            let h = first.handle();
            *sc.key_object.lock() = h;
            sc.enable();
            let r = home.run("release (key dropped)", move |l| {
                h.map(|h| l.reg().release(h))
            });
            // Unless the action parked a new reference to the object.
            let parks = matches!(action, Action::ParkProxy | Action::ParkGuard);
            if r.is_some_and(|r| {
                r != Ok(Released::Finalized) && !(parks && r == Ok(Released::Held(0)))
            }) {
                sc.problem(format!("the last release gave {r:?}"));
            }
            vec![] // released
        }
        KeyPoint::DropAtExit => {
            let first = worker.run("intern", move |l| plain(&n, l));
            *sc.key_object.lock() = first.handle();
            sc.enable();
            vec![] // released by the worker's exit (below)
        }
        KeyPoint::MintHook => mint(&sc, &names, &home, &worker),
    };
    if point != KeyPoint::DropAtExit {
        sc.disable();
    }

    for (role, r) in got {
        match r {
            Interned::Ok(h) => {
                let who = if role == Role::Home { &home } else { &worker };
                let rel = who.run("release", move |l| l.reg().release(h));
                if rel.is_err() {
                    sc.note(format!("release of an interned handle: {rel:?}"));
                }
            }
            Interned::Panicked if to_caller => {}
            Interned::Err(InternError::Registry(tether::Error::Closed)) if reg.is_closed() => {}
            other => sc.problem(format!("intern on {role:?}: {other:?}")),
        }
    }
    worker.exit();
    sc.disable();
    home.exit();

    if names.lookup(&Key::new(&sc)).is_some() {
        sc.problem("the key still maps to an object after every holder let go");
    }
    if names.key_panics() != key_panics {
        sc.problem(format!(
            "key_panics() is {}, expected {key_panics}",
            names.key_panics()
        ));
    }
    *sc.slot.lock() = None;
    sc.check_registry(&reg, 0, hook_panics, 0);
    fresh_intern(&sc, &names, &reg);
    sc.check_fresh_call(&reg);
    drop(names);
    drop(reg);
    sc.check_drops();
    sc.assert_clean();
}

/// `init` on the home thread waits until the worker waits for it, so the
/// result is handed to the worker (a minted transfer: `Transferred`) while
/// the interner publishes it.
fn mint(sc: &Arc<Scenario>, names: &Names, home: &Actor, worker: &Actor) -> Vec<(Role, Interned)> {
    let (in_init, started) = mpsc::channel();
    let n = names.clone();
    let creator = home.start("intern (waits for a waiter)", move |l| {
        let waits = n.clone();
        let sc = Arc::clone(&l.sc);
        intern(&n, &l.sc, move || {
            let _ = in_init.send(());
            let deadline = Instant::now() + STEP;
            while waits.waiting() == 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_micros(100));
            }
            Ok(sc.val())
        })
    });
    crate::common::recv(&started, "init started");
    sc.enable();
    let n = names.clone();
    let waiter = worker.start("intern (waits)", move |l| plain(&n, l));
    let created = creator.wait();
    let waited = waiter.wait();
    vec![(Role::Home, created), (Role::Worker, waited)]
}

/// The key works again from a fresh thread's point of view: a new object.
fn fresh_intern(sc: &Arc<Scenario>, names: &Names, reg: &Reg) {
    match intern(names, sc, || Ok(sc.val())) {
        Interned::Ok(h) => {
            let r = reg.release(h);
            if r != Ok(Released::Finalized) {
                sc.problem(format!("a fresh intern's release gave {r:?}"));
            }
        }
        Interned::Err(InternError::Registry(tether::Error::Closed)) if reg.is_closed() => {}
        other => sc.problem(format!("a fresh intern: {other:?}")),
    }
}
