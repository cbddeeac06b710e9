//! The event hook as the point: one script that makes every event kind on
//! a home thread and on a worker (and the exit events during their
//! exits); the action runs in the hook at the first event of the chosen
//! kind on the chosen thread. The script tolerates whatever the action did
//! to it (a closed registry, a stolen reference): its steps take what they
//! can, and the checks at the end say whether anything was lost.

use tether::Transfer;

use crate::actions::Action;
use crate::harness::{Actor, Point, Role, Scenario};

/// Every `(event kind, role)` the script produces.
pub const HOOK_POINTS: &[(&str, Role)] = &[
    ("inserted", Role::Home),
    ("inserted", Role::Worker),
    ("first_reference", Role::Home),
    ("first_reference", Role::Worker),
    ("last_reference", Role::Home),
    ("last_reference", Role::Worker),
    ("last_reference", Role::HomeExiting),
    ("last_reference", Role::WorkerExiting),
    ("transferred", Role::Home),
    ("transferred", Role::Worker),
    ("claimed", Role::Home),
    ("claimed", Role::Worker),
    ("pinned", Role::Home),
    ("pinned", Role::Worker),
    ("unpinned", Role::Home),
    ("unpinned", Role::Worker),
    ("queued_home", Role::Home),
    ("queued_home", Role::Worker),
    ("queued_home", Role::WorkerExiting),
    ("finalized", Role::Home),
    ("finalized", Role::Worker),
    ("finalized", Role::HomeExiting),
    ("finalized", Role::WorkerExiting),
    ("thread_exited", Role::HomeExiting),
    ("thread_exited", Role::WorkerExiting),
    ("misuse", Role::Home),
    ("misuse", Role::Worker),
    ("leaked", Role::Home),
    ("leaked", Role::Worker),
];

/// The points whose event's object is dead (`finalized`, `queued_home`)
/// or not the thread's to use (`misuse`): rows again with the thread's
/// spare as the subject.
pub const SPARE_HOOK_POINTS: &[(&str, Role)] = &[
    ("queued_home", Role::Home),
    ("queued_home", Role::Worker),
    ("queued_home", Role::WorkerExiting),
    ("finalized", Role::Home),
    ("finalized", Role::Worker),
    ("finalized", Role::HomeExiting),
    ("finalized", Role::WorkerExiting),
    ("misuse", Role::Home),
    ("misuse", Role::Worker),
];

/// Runs the script with `action` armed at `point` (a `Hook` or a
/// `HookOnSpare`).
pub fn run(point: Point, action: Action) {
    let (Point::Hook(kind, role) | Point::HookOnSpare(kind, role)) = point else {
        unreachable!("not a hook point: {point:?}");
    };
    let sc = Scenario::new(point, action);
    let reg = sc.registry();
    // The driver's witness keeps the table alive (and lends a registry for
    // the checks) once the actors have dropped every `Registry`.
    let witness = reg.insert_proxy(sc.val()).expect("witness");
    let home = Actor::spawn(&sc, Role::Home, &reg);
    let worker = Actor::spawn(&sc, Role::Worker, &reg);
    let spare_h = home.run("setup", |l| l.setup(true));
    let spare_w = worker.run("setup", |l| l.setup(true));
    // `c`: homed at the home thread, held by the worker until it exits.
    let tc = home.run("insert c", |l| {
        let reg = l.reg();
        reg.transfer(reg.insert(l.sc.val()).expect("insert c"))
            .expect("transfer c")
    });
    worker.run("claim c", |l| l.reg().claim(tc).expect("claim c"));

    sc.enable();
    let a = home.run("insert a", |l| l.reg().insert(l.sc.val()).ok());
    let b = worker.run("insert b", |l| l.reg().insert(l.sc.val()).ok());
    let ta = home.run("transfer a", move |l| {
        a.and_then(|a| l.reg().transfer(a).ok())
    });
    let a_w = worker.run("claim a", move |l| ta.and_then(|t| l.reg().claim(t).ok()));
    let tb = worker.run("transfer b (raw)", move |l| {
        b.and_then(|b| l.reg().transfer(b).ok())
            .map(Transfer::into_raw)
    });
    let b_h = home.run("claim_raw b", move |l| {
        tb.and_then(|raw| l.reg().claim_raw(raw).ok())
    });
    home.run("pin b", move |l| pin_unpin(l.reg(), b_h));
    worker.run("pin a", move |l| pin_unpin(l.reg(), a_w));
    // Misuse: releasing the other actor's spare, which this one never held.
    home.run("misuse", move |l| l.reg().release(spare_w).is_err());
    worker.run("misuse", move |l| l.reg().release(spare_h).is_err());
    worker.run("release a", move |l| a_w.map(|a| l.reg().release(a)));
    home.run("release b", move |l| b_h.map(|b| l.reg().release(b)));
    home.run("pump", |l| l.reg().pump());
    worker.run("pump", |l| l.reg().pump());

    // Teardown: the actors hold the last `Registry` values; the one that
    // exits last drops the last one (`Leaked`, with the witness held).
    *sc.slot.lock() = None;
    drop(reg);
    if (kind, role) == ("leaked", Role::Worker) {
        home.exit();
        worker.exit();
    } else {
        worker.exit();
        home.exit();
    }
    sc.finish_with_witness(witness);
}

/// Pins and unpins `h` if there is one (tolerating what the hook did).
fn pin_unpin(reg: &crate::harness::Reg, h: Option<tether::Handle>) {
    if let Some(h) = h {
        if reg.pin(h).is_ok() {
            let _ = reg.unpin(h);
        }
    }
}
