//! Issue 16, the callback suite: user code at every transition.
//!
//! User code runs at many points of the registry's life: the event hook
//! (every [`tether::Event`] kind, on a home thread, on a worker, and
//! during their exits; `hooks.rs`), the `Drop` of a stored value on every
//! path that reaches it (a release, a proxy's or guard's drop, `pump`, the
//! opportunistic drain, a thread's exit, a late proxy after tether's exit
//! hook, the home's exit, a release after the home exited, the table's
//! teardown by its last `Registry`, proxy or transfer, `shutdown`;
//! `drops.rs`), and the interner's `init`, its key's `Hash`, `Eq`,
//! `Clone` and `Drop`, and the hook while an intern publishes (`keys.rs`).
//! At each point ([`harness::Point`]) this suite runs each action
//! ([`actions::Action`]): a panic, or one registry operation (insert,
//! insert_proxy, retain, release, get, proxy, transfer, claim, claim_raw,
//! pin, unpin, pump, snapshot, leak_report, close, shutdown, and parking a
//! proxy or guard in a thread-local first touched there).
//!
//! Each operation must work or return an error it may legitimately return
//! there, never hang (every step has a deadline) or unwind into the
//! registry. After each scenario, with every thread it used gone: every
//! value was dropped exactly once, on its home thread unless that thread
//! had exited; `len()` is back to what it should be; no exited thread's
//! table is left; the panics caught are counted (`hook_panics`,
//! `drop_panics`, `key_panics`), exactly; and a fresh call still works.
//!
//! One test per point runs every action there and reports every failing
//! one. A library bug keeps its scenario asserting the correct behaviour:
//! it is listed in [`KNOWN_BUGS`], skipped by its row, and run by an
//! ignored test of its own (`cargo test --test callbacks -- --ignored
//! bug_`; one of them aborts the process, so run them by name). Two
//! deadlock bugs make their tests wait for the step deadline.
//!
//! Intentional panics are not printed. To debug: `CALLBACKS_ACTIONS=Panic,Insert`
//! runs only those actions in each row, `CALLBACKS_VERBOSE=1` prints what
//! each action did (with `--nocapture`).

#[path = "../common/mod.rs"]
mod common;

mod actions;
mod drops;
mod harness;
mod hooks;
mod keys;
mod notify;

use std::panic::{catch_unwind, AssertUnwindSafe};

use actions::{Action, ACTIONS};
use harness::{KeyPoint, Path, Point, Role};

/// A library bug the suite found, at one point: its scenarios assert the
/// correct behaviour, are skipped by their row and run by the ignored
/// test that names the bug (through `run_bug`). None is open now.
#[allow(dead_code)]
struct Bug {
    /// Names the bug (its ignored test runs every entry with this name).
    name: &'static str,
    point: Point,
    /// The actions that hit it there; empty: every action at the point.
    actions: &'static [Action],
}

/// Every known bug: none open. (A row's action that exposes a library bug
/// is listed here with the bug's name, skipped by its row and run by an
/// ignored test of its own until the fix lands.)
const KNOWN_BUGS: &[Bug] = &[];

fn known_bug(point: Point, action: Action) -> bool {
    KNOWN_BUGS
        .iter()
        .any(|b| b.point == point && (b.actions.is_empty() || b.actions.contains(&action)))
}

/// Runs one scenario (with a watchdog on the whole of it).
fn run(point: Point, action: Action) {
    let what = format!("{point:?} x {action:?}");
    common::with_watchdog(&what, move || match point {
        Point::Hook(..) | Point::HookOnSpare(..) => hooks::run(point, action),
        Point::Drop(path) => drops::run(path, action),
        Point::Key(k) => keys::run(k, action),
        Point::Notify => notify::run(action),
    });
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Runs `actions` at `point`; fails with every failing one.
fn run_each(point: Point, actions: &[Action]) {
    let mut failed = Vec::new();
    for &action in actions {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| run(point, action))) {
            failed.push(format!("{action:?}: {}", panic_message(&*p)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} actions failed at {point:?}:\n{}",
        failed.len(),
        actions.len(),
        failed.join("\n")
    );
}

/// Every action at `point`, except known bugs (and, to debug one, only the
/// actions named in `CALLBACKS_ACTIONS`, e.g. `Panic,Insert`).
fn run_row(point: Point) {
    let only = std::env::var("CALLBACKS_ACTIONS").unwrap_or_default();
    let actions: Vec<Action> = ACTIONS
        .into_iter()
        .filter(|&a| !known_bug(point, a))
        .filter(|a| only.is_empty() || only.split(',').any(|o| o == format!("{a:?}")))
        .collect();
    run_each(point, &actions);
}

/// A known bug's scenarios: every entry named `name`.
#[allow(dead_code)]
fn run_bug(name: &str) {
    assert!(
        KNOWN_BUGS.iter().any(|b| b.name == name),
        "no known bug {name:?}"
    );
    let mut failed = Vec::new();
    for bug in KNOWN_BUGS.iter().filter(|b| b.name == name) {
        let actions = if bug.actions.is_empty() {
            &ACTIONS[..]
        } else {
            bug.actions
        };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| run_each(bug.point, actions))) {
            failed.push(panic_message(&*p));
        }
    }
    assert!(failed.is_empty(), "{name}:\n{}", failed.join("\n"));
}

macro_rules! rows {
    ($($name:ident: $point:expr,)*) => {
        /// Every row of the matrix.
        const ROWS: &[Point] = &[$($point),*];
        $(
            #[test]
            fn $name() {
                run_row($point);
            }
        )*
    };
}

rows! {
    hook_inserted_on_home: Point::Hook("inserted", Role::Home),
    hook_inserted_on_worker: Point::Hook("inserted", Role::Worker),
    hook_first_reference_on_home: Point::Hook("first_reference", Role::Home),
    hook_first_reference_on_worker: Point::Hook("first_reference", Role::Worker),
    hook_last_reference_on_home: Point::Hook("last_reference", Role::Home),
    hook_last_reference_on_worker: Point::Hook("last_reference", Role::Worker),
    hook_last_reference_at_home_exit: Point::Hook("last_reference", Role::HomeExiting),
    hook_last_reference_at_worker_exit: Point::Hook("last_reference", Role::WorkerExiting),
    hook_transferred_on_home: Point::Hook("transferred", Role::Home),
    hook_transferred_on_worker: Point::Hook("transferred", Role::Worker),
    hook_claimed_on_home: Point::Hook("claimed", Role::Home),
    hook_claimed_on_worker: Point::Hook("claimed", Role::Worker),
    hook_pinned_on_home: Point::Hook("pinned", Role::Home),
    hook_pinned_on_worker: Point::Hook("pinned", Role::Worker),
    hook_unpinned_on_home: Point::Hook("unpinned", Role::Home),
    hook_unpinned_on_worker: Point::Hook("unpinned", Role::Worker),
    hook_queued_home_on_home: Point::Hook("queued_home", Role::Home),
    hook_queued_home_on_worker: Point::Hook("queued_home", Role::Worker),
    hook_queued_home_at_worker_exit: Point::Hook("queued_home", Role::WorkerExiting),
    hook_finalized_on_home: Point::Hook("finalized", Role::Home),
    hook_finalized_on_worker: Point::Hook("finalized", Role::Worker),
    hook_finalized_at_home_exit: Point::Hook("finalized", Role::HomeExiting),
    hook_finalized_at_worker_exit: Point::Hook("finalized", Role::WorkerExiting),
    hook_thread_exited_at_home_exit: Point::Hook("thread_exited", Role::HomeExiting),
    hook_thread_exited_at_worker_exit: Point::Hook("thread_exited", Role::WorkerExiting),
    hook_misuse_on_home: Point::Hook("misuse", Role::Home),
    hook_misuse_on_worker: Point::Hook("misuse", Role::Worker),
    hook_leaked_on_home: Point::Hook("leaked", Role::Home),
    hook_leaked_on_worker: Point::Hook("leaked", Role::Worker),
    spare_in_hook_queued_home_on_home: Point::HookOnSpare("queued_home", Role::Home),
    spare_in_hook_queued_home_on_worker: Point::HookOnSpare("queued_home", Role::Worker),
    spare_in_hook_queued_home_at_worker_exit: Point::HookOnSpare("queued_home", Role::WorkerExiting),
    spare_in_hook_finalized_on_home: Point::HookOnSpare("finalized", Role::Home),
    spare_in_hook_finalized_on_worker: Point::HookOnSpare("finalized", Role::Worker),
    spare_in_hook_finalized_at_home_exit: Point::HookOnSpare("finalized", Role::HomeExiting),
    spare_in_hook_finalized_at_worker_exit: Point::HookOnSpare("finalized", Role::WorkerExiting),
    spare_in_hook_misuse_on_home: Point::HookOnSpare("misuse", Role::Home),
    spare_in_hook_misuse_on_worker: Point::HookOnSpare("misuse", Role::Worker),
    drop_by_release: Point::Drop(Path::Release),
    drop_by_proxy_drop: Point::Drop(Path::ProxyDrop),
    drop_by_guard_drop: Point::Drop(Path::GuardDrop),
    drop_by_pump: Point::Drop(Path::Pump),
    drop_by_drain: Point::Drop(Path::Drain),
    drop_at_thread_exit: Point::Drop(Path::ThreadExit),
    drop_by_a_late_proxy_at_thread_exit: Point::Drop(Path::LateProxy),
    drop_at_home_exit: Point::Drop(Path::HomeExit),
    drop_after_home_exit: Point::Drop(Path::Orphan),
    drop_at_registry_drop: Point::Drop(Path::RegistryDrop),
    drop_at_registry_drop_on_worker: Point::Drop(Path::RegistryDropOnWorker),
    drop_at_last_proxy_drop: Point::Drop(Path::LastProxyDrop),
    drop_at_last_transfer_drop: Point::Drop(Path::LastTransferDrop),
    drop_in_shutdown: Point::Drop(Path::Shutdown),
    intern_init: Point::Key(KeyPoint::Init),
    key_hash: Point::Key(KeyPoint::Hash),
    key_eq_in_map: Point::Key(KeyPoint::EqMap),
    key_eq_in_cache: Point::Key(KeyPoint::EqCache),
    key_clone: Point::Key(KeyPoint::Clone),
    key_drop_at_release: Point::Key(KeyPoint::DropAtRelease),
    key_drop_at_exit: Point::Key(KeyPoint::DropAtExit),
    hook_transferred_while_intern_publishes: Point::Key(KeyPoint::MintHook),
    notifier: Point::Notify,
}

#[test]
fn the_matrix_has_a_row_for_every_point() {
    let points = hooks::HOOK_POINTS
        .iter()
        .map(|&(kind, role)| Point::Hook(kind, role))
        .chain(
            hooks::SPARE_HOOK_POINTS
                .iter()
                .map(|&(kind, role)| Point::HookOnSpare(kind, role)),
        )
        .chain(drops::PATHS.map(Point::Drop))
        .chain(keys::KEY_POINTS.map(Point::Key));
    for point in points {
        assert!(ROWS.contains(&point), "no row for {point:?}");
    }
    // Every event kind is some row's point.
    for kind in [
        "inserted",
        "first_reference",
        "last_reference",
        "transferred",
        "claimed",
        "pinned",
        "unpinned",
        "queued_home",
        "finalized",
        "thread_exited",
        "misuse",
        "leaked",
    ] {
        assert!(
            ROWS.iter()
                .any(|p| matches!(p, Point::Hook(k, _) if *k == kind)),
            "no row for the event {kind}"
        );
    }
}

// ----- the checks themselves -----

/// Every check a scenario ends with reports what it names: a scenario
/// that leaves a pin behind, drops a value off its living home, keeps a
/// value alive, miscounts a panic and never reaches its point fails with
/// each of these problems.
#[test]
fn the_checks_fail_on_what_they_check() {
    let sc = harness::Scenario::new(Point::Drop(Path::Release), Action::Pin);
    let reg = sc.registry();
    // A pin left behind: one object still live.
    let h = reg.insert(sc.val()).expect("insert");
    reg.pin(h).expect("pin");
    assert_eq!(reg.release(h), Ok(tether::Released::Held(0)));
    // A value made on a thread that is still running, dropped here.
    let actor = harness::Actor::spawn(&sc, Role::Worker, &reg);
    let elsewhere = actor.run("make a value", |l| l.sc.val());
    drop(elsewhere);
    // A value still alive when the drops are checked.
    let alive = sc.val();
    sc.check_registry(&reg, 0, 1, 0); // no hook panicked, one expected
    sc.check_drops();
    let failed = catch_unwind(AssertUnwindSafe(|| sc.assert_clean()));
    let msg = panic_message(&*failed.expect_err("the checks passed a broken scenario"));
    for problem in [
        "len() is 1, expected 0",
        "hook_panics() is 0, expected 1",
        "off its home",
        &format!("value #{} dropped 0 times", alive.id),
        "the point was never reached",
    ] {
        assert!(msg.contains(problem), "no {problem:?} in:\n{msg}");
    }
    // Clean up: the pin, the actor, the scenario's registry.
    reg.unpin(h).expect("unpin");
    drop(alive);
    actor.exit();
    *sc.slot.lock() = None;
    assert!(reg.is_empty());
}
