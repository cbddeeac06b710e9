//! The home's notifier as the point (DESIGN §8): it runs on the worker
//! whose release queued a value home, right after the queueing; the
//! action runs there (with the worker's spare as its subject). A panic is
//! caught and counted with the hook's; the value stays queued and the home
//! drops it at its next pump.

use std::sync::Arc;

use crate::actions::Action;
use crate::harness::{Actor, Point, Role, Scenario};

pub fn run(action: Action) {
    let sc = Scenario::new(Point::Notify, action);
    let reg = sc.registry();
    // Keeps the table alive (and lends a registry for the checks) once the
    // actors have dropped every `Registry`.
    let witness = reg.insert_proxy(sc.val()).expect("witness");
    let home = Actor::spawn(&sc, Role::Home, &reg);
    let worker = Actor::spawn(&sc, Role::Worker, &reg);
    home.run("setup", |l| l.setup(true));
    worker.run("setup", |l| l.setup(true));
    home.run("set the notifier", |l| {
        let sc = Arc::clone(&l.sc);
        l.reg()
            .set_notify(move || sc.fire(None))
            .expect("set_notify");
    });
    let t = home.run("insert, transfer", |l| {
        let reg = l.reg();
        reg.transfer(reg.insert(l.sc.val()).expect("insert"))
            .expect("transfer")
    });
    sc.enable();
    worker.run(
        "claim, release (queued home: the notifier runs here)",
        move |l| {
            let reg = l.reg();
            let h = reg.claim(t).expect("claim");
            let _ = reg.release(h);
        },
    );
    if !sc.fired() {
        sc.problem("the notifier never ran");
    }
    home.run("pump", |l| l.reg().pump());
    *sc.slot.lock() = None;
    drop(reg);
    worker.exit();
    home.exit();
    sc.finish_with_witness(witness);
}
