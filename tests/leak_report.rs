//! Issue 6, parts 1.2 and 1.3: `Registry::leak_report()` answers "who holds
//! this, and since where?" — every live object with its home thread (and
//! name), each holder with its name, count and whether it exited, pins,
//! transfers in flight, age (with `track_ages` or `capture_backtraces`) and,
//! with `capture_backtraces(true)` only, where it was inserted and where each
//! holder's current hold began. `Display` prints it as a table.

mod common;

use std::backtrace::BacktraceStatus;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use common::{join, me, recv, spawn};
use tether::{Builder, Handle, LeakHolder, LeakReport, LeakedObject, Registry, ThreadExit};

fn object(report: &LeakReport, h: Handle) -> &LeakedObject {
    report
        .objects
        .iter()
        .find(|o| o.handle == h)
        .unwrap_or_else(|| panic!("{h} not in the report:\n{report}"))
}

fn holder(o: &LeakedObject, t: ThreadId) -> &LeakHolder {
    o.holders
        .iter()
        .find(|x| x.thread == t)
        .unwrap_or_else(|| panic!("{t:?} does not hold {}: {:?}", o.handle, o.holders))
}

/// A scenario on a named home thread ("lr-home") with a named worker
/// ("lr-worker"): the home holds the object × 1, pins it once and keeps one
/// transfer unclaimed; the worker claimed one reference and holds a proxy
/// too. `inspect` runs on the home thread while all of that is in place.
fn scenario<R: Send + 'static>(
    builder: Builder<String>,
    inspect: impl FnOnce(&Registry<String>, Handle, ThreadId) -> R + Send + 'static,
) -> (R, ThreadId, ThreadId) {
    join(spawn("lr-home", move || {
        let reg = builder.build();
        let h = reg.insert("config".to_owned()).expect("insert");
        reg.retain(h).expect("retain");
        reg.retain(h).expect("retain");
        reg.pin(h).expect("pin");
        let unclaimed = reg.transfer(h).expect("transfer");
        let t = reg.transfer(h).expect("transfer"); // home count now 1
        let (tx_ready, rx_ready) = mpsc::channel();
        let (tx_done, rx_done) = mpsc::channel::<()>();
        let r2 = reg.clone();
        let worker = spawn("lr-worker", move || {
            let h = r2.claim(t).expect("claim");
            let p = r2.proxy(h).expect("proxy");
            tx_ready.send(me()).expect("ready");
            recv(&rx_done, "done");
            drop(p);
            r2.release(h).expect("release");
        });
        let w = recv(&rx_ready, "worker ready");
        let r = inspect(&reg, h, w);
        tx_done.send(()).expect("done");
        join(worker);
        drop(unclaimed);
        reg.unpin(h).expect("unpin");
        reg.release(h).expect("release");
        assert!(reg.pump() <= 1);
        assert!(reg.is_empty(), "the scenario cleans up");
        (r, me(), w)
    }))
}

#[test]
fn a_leak_report_lists_home_holders_counts_pins_and_transfers() {
    let (report, home, w) = scenario(Registry::builder(), |reg, h, _| (reg.leak_report(), h));
    let (report, h) = report;
    assert!(!report.is_empty());
    assert_eq!(report.objects.len(), 1);
    assert_eq!(report.pending, 0);
    let o = object(&report, h);
    assert_eq!(o.home, Some(home));
    assert_eq!(o.home_name.as_deref(), Some("lr-home"));
    assert_eq!((o.pins, o.transfers), (1, 1));
    assert_eq!(o.holders.len(), 2, "{:?}", o.holders);

    let at_home = holder(o, home);
    assert_eq!(at_home.name.as_deref(), Some("lr-home"));
    assert_eq!((at_home.count, at_home.exited), (1, false));
    let at_worker = holder(o, w);
    assert_eq!(at_worker.name.as_deref(), Some("lr-worker"));
    assert_eq!(
        (at_worker.count, at_worker.exited),
        (2, false),
        "explicit reference + proxy"
    );

    assert_eq!(o.age, None, "ages are off by default");
    assert!(o.inserted_at.is_none(), "backtraces are off by default");
    assert!(at_home.first_held_at.is_none() && at_worker.first_held_at.is_none());
}

#[test]
fn display_shows_the_handle_still_held_the_thread_names_and_counts() {
    let ((text, h), _, _) = scenario(Registry::builder(), |reg, h, _| {
        (reg.leak_report().to_string(), h)
    });
    assert!(text.contains("1 object(s) still held"), "{text}");
    assert!(text.contains(&h.to_string()), "{text}");
    assert!(text.contains("lr-home"), "{text}");
    assert!(text.contains("lr-worker"), "{text}");
    assert!(text.contains("lr-worker ThreadId("), "name then id: {text}");
    assert!(
        !text.contains("inserted at"),
        "no backtraces captured: {text}"
    );
}

#[test]
fn age_is_none_by_default_and_some_with_track_ages_or_capture_backtraces() {
    for (builder, expect_age) in [
        (Registry::builder(), false),
        (Registry::builder().track_ages(true), true),
        (Registry::builder().capture_backtraces(true), true),
    ] {
        let reg: Registry<String> = builder.build();
        let h = reg.insert("x".to_owned()).expect("insert");
        let first = object(&reg.leak_report(), h).age;
        let second = object(&reg.leak_report(), h).age;
        assert_eq!(first.is_some(), expect_age);
        assert_eq!(second.is_some(), expect_age);
        assert!(second >= first, "an age never goes backwards");
    }
}

#[test]
fn backtraces_are_recorded_only_with_capture_backtraces() {
    let ((without, h), _, w) = scenario(Registry::builder().track_ages(true), |reg, h, _| {
        (reg.leak_report(), h)
    });
    let o = object(&without, h);
    assert!(o.inserted_at.is_none());
    assert!(o.holders.iter().all(|x| x.first_held_at.is_none()));
    assert!(!without.to_string().contains("inserted at"));
    let _ = w;

    let ((with, h), home, w) =
        scenario(Registry::builder().capture_backtraces(true), |reg, h, _| {
            (reg.leak_report(), h)
        });
    let o = object(&with, h);
    let inserted = o.inserted_at.as_ref().expect("the insert's backtrace");
    assert_eq!(inserted.status(), BacktraceStatus::Captured);
    assert!(
        holder(o, home).first_held_at.is_none(),
        "the home thread's hold began at the insert: see inserted_at"
    );
    let claimed = holder(o, w)
        .first_held_at
        .as_ref()
        .expect("the worker's claim");
    assert_eq!(claimed.status(), BacktraceStatus::Captured);
    let text = with.to_string();
    assert!(text.contains("inserted at:"), "{text}");
    assert!(text.contains("first held by lr-worker"), "{text}");
}

#[inline(never)]
fn first_site(reg: &Registry<String>, h: Handle) {
    reg.retain(h).expect("retain at the first site");
}

#[inline(never)]
fn second_site(reg: &Registry<String>, h: Handle) {
    reg.retain(h).expect("retain at the second site");
}

#[test]
fn first_held_at_is_where_the_current_hold_began_and_is_cleared_when_it_ends() {
    let reg: Registry<String> = Registry::builder().capture_backtraces(true).build();
    let h = reg.insert("global".to_owned()).expect("insert");
    reg.pin(h).expect("pin: any thread may retain it");
    let r2 = reg.clone();
    let (tx, rx) = mpsc::channel();
    let (tx_next, rx_next) = mpsc::channel::<()>();
    let worker = spawn("re-holder", move || {
        first_site(&r2, h);
        second_site(&r2, h); // not the first: the hold began at first_site
        tx.send(me()).expect("step 1");
        recv(&rx_next, "next");
        r2.release(h).expect("release");
        r2.release(h).expect("release: the hold ended");
        tx.send(me()).expect("step 2");
        recv(&rx_next, "next");
        second_site(&r2, h); // a new hold, begun elsewhere
        tx.send(me()).expect("step 3");
        recv(&rx_next, "next");
        r2.release(h).expect("release");
    });
    let w = recv(&rx, "step 1");
    let report = reg.leak_report();
    let bt = holder(object(&report, h), w)
        .first_held_at
        .as_ref()
        .expect("captured")
        .to_string();
    assert!(bt.contains("first_site"), "{bt}");
    assert!(!bt.contains("second_site"), "{bt}");

    tx_next.send(()).expect("next");
    recv(&rx, "step 2");
    let report = reg.leak_report();
    let o = object(&report, h);
    assert!(
        o.holders.iter().all(|x| x.thread != w),
        "the worker holds nothing any more: {:?}",
        o.holders
    );

    tx_next.send(()).expect("next");
    recv(&rx, "step 3");
    let report = reg.leak_report();
    let bt = holder(object(&report, h), w)
        .first_held_at
        .as_ref()
        .expect("captured again")
        .to_string();
    assert!(bt.contains("second_site"), "{bt}");
    assert!(
        !bt.contains("first_site"),
        "the ended hold's backtrace was dropped: {bt}"
    );
    tx_next.send(()).expect("next");
    join(worker);
}

#[test]
fn an_empty_report_is_empty_and_says_so() {
    let reg: Registry<String> = Registry::new();
    let report = reg.leak_report();
    assert!(report.is_empty());
    assert_eq!(report.pending, 0);
    assert!(
        report.to_string().starts_with("0 object(s) still held"),
        "{report}"
    );

    let h = reg.insert("x".to_owned()).expect("insert");
    assert!(!reg.leak_report().is_empty());
    reg.release(h).expect("release");
    assert!(reg.leak_report().is_empty(), "nothing held any more");
}

#[test]
fn values_queued_for_finalization_are_pending_not_leaked() {
    let reg: Registry<String> = Registry::new();
    let h = reg.insert("x".to_owned()).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let r2 = reg.clone();
    join(spawn("remote-releaser", move || {
        let h = r2.claim(t).expect("claim");
        r2.release(h).expect("release")
    }));
    let report = reg.leak_report();
    assert!(report.is_empty(), "{report}");
    assert_eq!(report.pending, 1);
    assert!(
        report.to_string().contains("1 queued for finalization"),
        "{report}"
    );
    assert_eq!(reg.pump(), 1);
    assert_eq!(reg.leak_report().pending, 0);
}

#[test]
fn thread_exit_leak_shows_the_exited_holder() {
    let reg: Registry<String> = Registry::builder().thread_exit(ThreadExit::Leak).build();
    let h = reg.insert("x".to_owned()).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let r2 = reg.clone();
    let w = join(spawn("leaky", move || {
        r2.claim(t).expect("claim");
        me() // exits holding it
    }));
    let report = reg.leak_report();
    let o = object(&report, h);
    assert_eq!(o.holders.len(), 1);
    let x = holder(o, w);
    assert_eq!(x.name.as_deref(), Some("leaky"));
    assert_eq!((x.count, x.exited), (1, true));
    let text = report.to_string();
    assert!(text.contains("leaky"), "{text}");
    assert!(text.contains("(exited)"), "{text}");
}

#[test]
fn an_object_whose_home_exited_has_no_home() {
    let reg: Registry<String> = Registry::new();
    let r2 = reg.clone();
    let t = join(spawn("gone-home", move || {
        let h = r2.insert("x".to_owned()).expect("insert");
        r2.transfer(h).expect("transfer")
    }));
    let h = reg.claim(t).expect("claim");
    let report = reg.leak_report();
    let o = object(&report, h);
    assert_eq!((o.home, o.home_name.as_deref()), (None, None));
    assert_eq!(holder(o, me()).count, 1);
    assert!(report.to_string().contains("(exited)"), "{report}");
}

#[test]
fn an_object_kept_only_by_a_pin_or_a_raw_token_has_no_holders() {
    let reg: Registry<String> = Registry::new();
    let pinned = reg.insert("pinned".to_owned()).expect("insert");
    reg.pin(pinned).expect("pin");
    reg.release(pinned).expect("release");
    let tokened = reg.insert("tokened".to_owned()).expect("insert");
    let _raw = reg.transfer(tokened).expect("transfer").into_raw();
    let report = reg.leak_report();
    let (p, t) = (object(&report, pinned), object(&report, tokened));
    assert!(p.holders.is_empty() && t.holders.is_empty());
    assert_eq!((p.pins, p.transfers, t.pins, t.transfers), (1, 0, 0, 1));
    assert!(
        report.to_string().contains("none (kept by pins/transfers)"),
        "{report}"
    );
    let _: &dyn std::error::Error = &report; // usable as an error (shutdown's Err)
}

#[test]
fn each_holders_first_held_at_is_its_own_and_outlives_other_holders_ends() {
    let reg: Registry<String> = Registry::builder().capture_backtraces(true).build();
    let h = reg.insert("global".to_owned()).expect("insert");
    reg.pin(h).expect("pin: any thread may retain it");
    // Two workers, each holding from its own site; `b` starts after `a`.
    let mut workers = Vec::new();
    let mut ids = Vec::new();
    for (name, site) in [
        ("holder-a", first_site as fn(&Registry<String>, Handle)),
        ("holder-b", second_site),
    ] {
        let r2 = reg.clone();
        let (tx, rx) = mpsc::channel();
        let (tx_end, rx_end) = mpsc::channel::<()>();
        workers.push((
            spawn(name, move || {
                site(&r2, h);
                tx.send(me()).expect("holding");
                recv(&rx_end, "end");
                r2.release(h).expect("release: the hold ends");
            }),
            tx_end,
        ));
        ids.push(recv(&rx, "holding"));
    }
    let site_of = |report: &LeakReport, t: ThreadId| {
        holder(object(report, h), t)
            .first_held_at
            .as_ref()
            .unwrap_or_else(|| panic!("{t:?}'s hold has a backtrace:\n{report}"))
            .to_string()
    };
    let report = reg.leak_report();
    let (a, b) = (site_of(&report, ids[0]), site_of(&report, ids[1]));
    assert!(
        a.contains("first_site") && !a.contains("second_site"),
        "{a}"
    );
    assert!(
        b.contains("second_site") && !b.contains("first_site"),
        "{b}"
    );

    // `a`'s hold ends; `b`'s record is untouched.
    let (a_worker, a_end) = workers.remove(0);
    a_end.send(()).expect("end a");
    join(a_worker);
    let report = reg.leak_report();
    assert!(
        object(&report, h)
            .holders
            .iter()
            .all(|x| x.thread != ids[0]),
        "{report}"
    );
    assert!(site_of(&report, ids[1]).contains("second_site"));
    let (b_worker, b_end) = workers.remove(0);
    b_end.send(()).expect("end b");
    join(b_worker);
}

#[test]
fn a_finalized_objects_backtraces_are_let_go() {
    let reg: Registry<String> = Registry::builder().capture_backtraces(true).build();
    let h = reg.insert("short-lived".to_owned()).expect("insert");
    let inserted = object(&reg.leak_report(), h)
        .inserted_at
        .clone()
        .expect("captured");
    assert!(Arc::strong_count(&inserted) > 1, "the registry keeps it");
    reg.release(h).expect("release: finalized");
    assert_eq!(
        Arc::strong_count(&inserted),
        1,
        "a dead object's origin is not kept by the registry"
    );
    assert!(reg.leak_report().is_empty());
}

#[test]
fn display_shows_each_objects_age() {
    let reg: Registry<String> = Registry::builder().track_ages(true).build();
    let h = reg.insert("aged".to_owned()).expect("insert");
    let mut report = reg.leak_report();
    // The age itself is wall-clock time: pin it down to test the column.
    let row = |report: &LeakReport| {
        let text = report.to_string();
        text.lines()
            .find(|l| l.starts_with(&h.to_string()))
            .unwrap_or_else(|| panic!("a row for {h}:\n{text}"))
            .to_owned()
    };
    report.objects[0].age = Some(Duration::from_millis(250));
    assert!(row(&report).contains(" 250.0ms "), "{report}");
    report.objects[0].age = Some(Duration::from_millis(90_500));
    assert!(row(&report).contains(" 90.5s "), "{report}");
}

#[inline(never)]
fn inserting_site(reg: &Registry<String>) -> Handle {
    reg.insert("traced".to_owned())
        .expect("insert at the inserting site")
}

/// The lines of the backtrace printed under `inserted at:` (up to the next
/// section).
fn inserted_at_section(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|l| l.trim() != "inserted at:")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("first held by"))
        .collect()
}

/// The insert's caller's caller: a frame of its own in every profile (the
/// test function itself is inlined into the harness's `call_once` in a
/// release build). `black_box` keeps the call from becoming a tail call,
/// which would leave no frame.
#[inline(never)]
fn callers_caller(reg: &Registry<String>) -> Handle {
    std::hint::black_box(inserting_site(reg))
}

#[test]
fn display_shows_the_callers_frames_and_the_alternate_form_every_frame() {
    let reg: Registry<String> = Registry::builder().capture_backtraces(true).build();
    let h = callers_caller(&reg);
    let report = reg.leak_report();
    let short = report.to_string();
    let lines = inserted_at_section(&short);
    let frames: Vec<&str> = lines
        .iter()
        .map(|l| l.trim_start())
        .filter(|l| !l.starts_with("at "))
        .collect();
    // tether's own frames (and the capture's) at the top are left out: the
    // first frame is the caller's.
    assert!(
        frames.first().is_some_and(|f| f.contains("inserting_site")),
        "the insert's caller first:\n{short}"
    );
    assert!(
        frames.iter().any(|f| f.contains("callers_caller")),
        "the caller's caller too:\n{short}"
    );
    for internal in ["tether::", "std::backtrace::", "core::bool::"] {
        assert!(
            !lines.iter().any(|l| l.contains(internal)),
            "no {internal} frame in the short form:\n{short}"
        );
    }
    // ... and so are the runtime's frames below the test's own.
    assert!(
        !short.contains("__rust_begin_short_backtrace"),
        "no runtime frames in the short form:\n{short}"
    );
    assert!(short.contains(&h.to_string()));

    // `{:#}`: every frame.
    let full = format!("{report:#}");
    let lines = inserted_at_section(&full);
    // (A debug build also shows `core::bool` frames of the capture; a
    // release build inlines them.)
    for frame in ["tether::", "inserting_site", "__rust_begin_short_backtrace"] {
        assert!(
            lines.iter().any(|l| l.contains(frame)),
            "{frame} in the full form:\n{full}"
        );
    }
}

/// Issue 16, item 9: a cycle through the registry (a value holding a
/// `Transfer` of its own object) is never freed, like an `Arc` cycle; the
/// leak report shows it as kept by its transfer, with no holder thread.
#[test]
fn a_cycle_through_the_registry_shows_in_the_leak_report() {
    struct Node {
        next: std::sync::Mutex<Option<tether::Transfer<Node>>>,
    }
    let reg = Registry::new();
    let h = reg
        .insert(Node {
            next: std::sync::Mutex::new(None),
        })
        .unwrap_or_else(|_| panic!("insert"));
    let t = reg.transfer(h).expect("transfer");
    *reg.get(h).expect("home access").next.lock().unwrap() = Some(t);
    let report = reg
        .shutdown(std::time::Duration::from_millis(10))
        .expect_err("a cycle is never finalized");
    assert_eq!(report.objects.len(), 1);
    assert_eq!(report.objects[0].handle, h);
    assert_eq!(report.objects[0].transfers, 1);
    assert!(report.objects[0].holders.is_empty());
    let text = report.to_string();
    assert!(text.contains("kept by pins/transfers"), "{text}");
    // Breaking the cycle by hand frees it.
    let t = reg.get(h).expect("home access").next.lock().unwrap().take();
    drop(t);
    assert!(reg.is_empty());
}
