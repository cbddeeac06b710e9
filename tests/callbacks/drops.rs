//! The `Drop` of a stored value as the point: one armed value reaches its
//! `Drop` by each [`Path`]; the action runs there, on the scenario's
//! registry (or, while that registry is torn down, on another one).

use std::sync::Arc;
use std::time::Duration;

use tether::{Registry, Released};

use crate::actions::Action;
use crate::common;
use crate::harness::{spare, Actor, Local, Path, Point, Reg, Role, Scenario};

/// Every path to a `Drop`.
pub const PATHS: [Path; 14] = [
    Path::Release,
    Path::ProxyDrop,
    Path::GuardDrop,
    Path::Pump,
    Path::Drain,
    Path::ThreadExit,
    Path::LateProxy,
    Path::HomeExit,
    Path::Orphan,
    Path::RegistryDrop,
    Path::RegistryDropOnWorker,
    Path::LastProxyDrop,
    Path::LastTransferDrop,
    Path::Shutdown,
];

/// Runs `action` in the `Drop` of a value reaching it by `path`.
pub fn run(path: Path, action: Action) {
    let sc = Scenario::new(Point::Drop(path), action);
    sc.enable(); // only the armed value fires
    let reg = sc.registry();
    // Lend objects (late proxies) would keep the table alive past the
    // registry drops, and keep `shutdown` from ever seeing it empty.
    let lend = !matches!(
        path,
        Path::RegistryDrop
            | Path::RegistryDropOnWorker
            | Path::LastProxyDrop
            | Path::LastTransferDrop
            | Path::Shutdown
            | Path::LateProxy
    );
    let home = Actor::spawn(&sc, Role::Home, &reg);
    let worker = Actor::spawn(&sc, Role::Worker, &reg);
    let spare_h = home.run("setup", move |l| l.setup(lend));
    worker.run("setup", move |l| l.setup(lend));
    let armed = sc.next_id();
    let drop_panics = u64::from(action == Action::Panic);

    match path {
        Path::Release => {
            let r = home.run("insert, release", |l| {
                let h = l.reg().insert(l.sc.armed_val()).expect("insert");
                l.reg().release(h)
            });
            expect(&sc, r == Ok(Released::Finalized), format!("release: {r:?}"));
        }
        Path::ProxyDrop => home.run("insert_proxy, drop", |l| {
            drop(
                l.reg()
                    .insert_proxy(l.sc.armed_val())
                    .expect("insert_proxy"),
            );
        }),
        Path::GuardDrop => {
            let r = home.run("insert, get, release, drop the guard", |l| {
                let reg = l.reg();
                let h = reg.insert(l.sc.armed_val()).expect("insert");
                let g = reg.get(h).expect("get");
                let r = reg.release(h);
                drop(g);
                r
            });
            expect(&sc, r == Ok(Released::Held(1)), format!("release: {r:?}"));
        }
        Path::Pump => {
            queue_home(&sc, &home, &worker, 2);
            let n = home.run("pump", |l| l.reg().pump());
            expect(&sc, n >= 2, format!("pump() ran {n}"));
        }
        Path::Drain => {
            queue_home(&sc, &home, &worker, 2);
            home.run("retain, release (drains)", move |l| {
                let _ = l.reg().retain(spare_h);
                let _ = l.reg().release(spare_h);
            });
        }
        Path::ThreadExit => {
            worker.run("insert, keep", |l| {
                l.reg().insert(l.sc.armed_val()).expect("insert");
            });
            worker.exit();
            expect_dropped(&sc, armed, "at the worker's exit");
            home.exit();
            return finish(&sc, &reg, drop_panics);
        }
        Path::LateProxy => {
            worker.run("insert_proxy into the late thread-local", |l| {
                l.lend(l.sc.armed_val());
            });
            worker.exit();
            expect_dropped(&sc, armed, "by the late proxy's drop at the worker's exit");
            home.exit();
            return finish(&sc, &reg, drop_panics);
        }
        Path::HomeExit => {
            queue_home(&sc, &home, &worker, 2);
            home.exit();
            expect_dropped(&sc, armed, "at the home thread's exit");
            worker.exit();
            return finish(&sc, &reg, drop_panics);
        }
        Path::Orphan => {
            let t = home.run("insert, transfer", |l| {
                let reg = l.reg();
                reg.transfer(reg.insert(l.sc.armed_val()).expect("insert"))
                    .expect("transfer")
            });
            let h = worker.run("claim", |l| l.reg().claim(t).expect("claim"));
            home.exit();
            let r = worker.run("release", move |l| l.reg().release(h));
            expect(&sc, r == Ok(Released::Finalized), format!("release: {r:?}"));
            expect_dropped(&sc, armed, "by the worker's release");
            worker.exit();
            return finish(&sc, &reg, drop_panics);
        }
        Path::RegistryDrop
        | Path::RegistryDropOnWorker
        | Path::LastProxyDrop
        | Path::LastTransferDrop => {
            return registry_drop(&sc, reg, home, worker, path);
        }
        Path::Shutdown => {
            // Nothing else may be live: the spares go first.
            let _ = home.run("release spare", |l| {
                l.reg().release(spare().expect("spare"))
            });
            let _ = worker.run("release spare", |l| {
                l.reg().release(spare().expect("spare"))
            });
            queue_home(&sc, &home, &worker, 2);
            let r = home.run("shutdown", |l| l.reg().shutdown(Duration::from_secs(5)));
            expect(&sc, r.is_ok(), format!("shutdown: {r:?}"));
        }
    }
    expect_dropped(&sc, armed, "by the path");
    worker.exit();
    home.exit();
    finish(&sc, &reg, drop_panics);
}

/// The home thread inserts `n` values (the first one armed) and transfers
/// them to the worker, which releases them last: queued home, in order.
fn queue_home(sc: &Arc<Scenario>, home: &Actor, worker: &Actor, n: usize) {
    let ts = home.run("insert, transfer", move |l| {
        (0..n)
            .map(|i| {
                let v = if i == 0 { l.sc.armed_val() } else { l.sc.val() };
                let reg = l.reg();
                reg.transfer(reg.insert(v).expect("insert"))
                    .expect("transfer")
            })
            .collect::<Vec<_>>()
    });
    let rs = worker.run("claim, release", |l: &mut Local| {
        ts.into_iter()
            .map(|t| {
                let h = l.reg().claim(t).expect("claim");
                l.reg().release(h)
            })
            .collect::<Vec<_>>()
    });
    expect(
        sc,
        rs.iter().all(|r| *r == Ok(Released::Queued)),
        format!("the worker's releases: {rs:?}"),
    );
}

/// The armed value is pinned when the table goes (every `Registry`,
/// proxy and transfer gone): the last `Registry` dropped by a new thread
/// after its home exited (`RegistryDrop`) or by a worker while its home
/// runs (`RegistryDropOnWorker`), the last proxy dropped on its home
/// (`LastProxyDrop`), the last transfer dropped on a worker after its home
/// exited (`LastTransferDrop`). User code there can only reach another
/// registry, in which that thread holds a spare.
fn registry_drop(sc: &Arc<Scenario>, reg: Reg, home: Actor, worker: Actor, path: Path) {
    let other: Reg = Registry::new();
    let armed = sc.next_id();
    let r = home.run("insert, pin, release", |l| {
        let reg = l.reg();
        let h = reg.insert(l.sc.armed_val()).expect("insert");
        reg.pin(h).expect("pin");
        let r = reg.release(h);
        // The proxy that will hold the table last.
        l.keep.push(reg.proxy(h).expect("proxy"));
        r
    });
    expect(sc, r == Ok(Released::Held(0)), format!("release: {r:?}"));
    *sc.slot.lock() = None;
    let other2 = other.clone();
    match path {
        Path::RegistryDrop => {
            home.run("drop the proxy", |l| l.keep.clear());
            worker.exit();
            home.exit();
            sc.check_registry(&reg, 1, 0, 0);
            let sc2 = Arc::clone(sc);
            common::join(common::spawn("dropper", move || {
                drop_last(&sc2, &other2, move || drop(reg));
            }));
        }
        Path::RegistryDropOnWorker => {
            // The home's first use of `other` is now, so that its pump
            // below (not a first use) is what drops the values left to it.
            let o = other2.clone();
            home.run("use the other registry", move |l| {
                let h = o
                    .insert(l.sc.val())
                    .expect("insert into the other registry");
                let _ = o.release(h);
            });
            home.run("drop the proxy", |l| l.keep.clear());
            drop(reg);
            home.run("drop the registry", |l| l.reg = None);
            let other3 = other2.clone();
            worker.run("drop the last registry", move |l| {
                let sc = Arc::clone(&l.sc);
                drop_last(&sc, &other2, || l.reg = None);
            });
            // The home lives: its values wait for it (issue 16, item 4),
            // and its next pump of any registry drops them, there.
            home.run("pump another registry", move |l| {
                let sc = Arc::clone(&l.sc);
                let o = other3.clone();
                drop_last(&sc, &other3, move || {
                    o.pump();
                });
            });
            worker.exit();
            home.exit();
        }
        Path::LastProxyDrop => {
            drop(reg);
            worker.run("drop the registry", |l| l.reg = None);
            worker.exit();
            home.run("drop the last registry, then the last proxy", move |l| {
                let sc = Arc::clone(&l.sc);
                l.reg = None; // `Leaked`: the proxy still holds the table
                drop_last(&sc, &other2, || l.keep.clear());
            });
            home.exit();
        }
        Path::LastTransferDrop => {
            let t = home.run("drop the proxy; insert, transfer", |l| {
                l.keep.clear();
                let reg = l.reg();
                reg.transfer(reg.insert(l.sc.val()).expect("insert"))
                    .expect("transfer")
            });
            drop(reg);
            home.run("drop the registry", |l| l.reg = None);
            home.exit();
            worker.run("drop the last registry, then the last transfer", move |l| {
                let sc = Arc::clone(&l.sc);
                l.reg = None;
                drop_last(&sc, &other2, move || drop(t));
            });
            worker.exit();
        }
        _ => unreachable!(),
    }
    expect_dropped(sc, armed, "by the registry's teardown");
    // The other registry: whatever the action did there, it is consistent.
    sc.check_registry(&other, 0, 0, 0);
    sc.check_fresh_call(&other);
    drop(other);
    sc.check_drops();
    sc.assert_clean();
}

/// On the thread that drops the last `Registry` (in `drop_last`): a spare
/// in `other` for the user code that runs there.
fn drop_last(sc: &Arc<Scenario>, other: &Reg, drop_last: impl FnOnce()) {
    let spare = other
        .insert(sc.val())
        .expect("insert into the other registry");
    *sc.other.lock() = Some((other.clone(), spare));
    drop_last();
    *sc.other.lock() = None;
    let _ = other.release(spare);
}

/// The checks, with every actor gone: nothing live, the panic counted.
fn finish(sc: &Arc<Scenario>, reg: &Reg, drop_panics: u64) {
    sc.disable();
    *sc.slot.lock() = None;
    sc.check_registry(reg, 0, 0, drop_panics);
    sc.check_fresh_call(reg);
    sc.check_drops();
    sc.assert_clean();
}

fn expect(sc: &Scenario, ok: bool, what: String) {
    if !ok {
        sc.problem(what);
    }
}

fn expect_dropped(sc: &Scenario, id: u64, how: &str) {
    let n = sc.times_dropped(id);
    expect(
        sc,
        n == 1,
        format!("the armed value #{id} was dropped {n} times {how}"),
    );
}
