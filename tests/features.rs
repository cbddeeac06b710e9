//! Issue 6, parts 1.1 and 1.6, behind cargo features: with `serde`,
//! `Snapshot` and `LeakReport` serialize for tools (handles as numbers,
//! thread ids as strings, backtraces as text); with `tracing`, every event is
//! also a `tracing` event with structured fields (misuse and leaks at WARN).
//!
//! Run with `cargo test --all-features --test features`.
#![cfg(any(feature = "serde", feature = "tracing"))]

mod common;

use std::sync::mpsc;
use std::thread::{self, JoinHandle, ThreadId};

use common::{join, me, spawn};
use tether::{Handle, Registry};

/// A registry whose object `h` is held by this thread and by a named worker
/// ("serde-worker", parked until the returned sender is dropped), and pinned.
#[allow(dead_code)]
fn shared_object(reg: &Registry<String>) -> (Handle, ThreadId, mpsc::Sender<()>, JoinHandle<()>) {
    let h = reg.insert("x".to_owned()).expect("insert");
    reg.retain(h).expect("retain");
    reg.pin(h).expect("pin");
    let t = reg.transfer(h).expect("transfer");
    let (tx_ready, rx_ready) = mpsc::channel();
    let (tx_done, rx_done) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let worker = spawn("serde-worker", move || {
        let h = r2.claim(t).expect("claim");
        tx_ready.send(me()).expect("ready");
        let _ = rx_done.recv();
        r2.release(h).expect("release");
    });
    let w = rx_ready.recv().expect("ready");
    (h, w, tx_done, worker)
}

#[cfg(feature = "serde")]
mod serde_form {
    use serde_json::Value;

    use super::*;

    fn thread_str(t: ThreadId) -> Value {
        Value::String(format!("{t:?}"))
    }

    #[test]
    fn a_snapshot_serializes_handles_as_numbers_and_thread_ids_as_strings() {
        let reg: Registry<String> = Registry::new();
        let (h, w, done, worker) = shared_object(&reg);
        let json = serde_json::to_value(reg.snapshot()).expect("serialize");
        let o = &json["objects"][0];
        assert_eq!(o["handle"], Value::from(h.to_raw()), "{json}");
        assert!(o["handle"].is_u64());
        assert_eq!(o["home"], thread_str(me()));
        assert_eq!(
            (o["pins"].as_u64(), o["transfers"].as_u64()),
            (Some(1), Some(0))
        );
        let holders = o["holders"].as_array().expect("holders");
        assert_eq!(holders.len(), 2, "{json}");
        for x in holders {
            assert!(x["thread"].is_string(), "{x}");
            assert!(x["count"].is_u64(), "{x}");
            assert_eq!(x["exited"], Value::Bool(false));
        }
        assert!(holders.iter().any(|x| x["thread"] == thread_str(w)));
        let threads = json["threads"].as_array().expect("threads");
        let worker_entry = threads
            .iter()
            .find(|t| t["thread"] == thread_str(w))
            .expect("the worker's table");
        assert_eq!(worker_entry["name"], Value::from("serde-worker"));
        assert_eq!(json["live"], Value::from(1));
        drop(done);
        join(worker);
    }

    #[test]
    fn a_leak_report_serializes_handles_as_numbers_thread_ids_as_strings_and_backtraces_as_text() {
        // Without diagnostics: no age, no backtraces.
        let reg: Registry<String> = Registry::new();
        let (h, w, done, worker) = shared_object(&reg);
        let json = serde_json::to_value(reg.leak_report()).expect("serialize");
        let o = &json["objects"][0];
        assert_eq!(o["handle"], Value::from(h.to_raw()), "{json}");
        assert_eq!(o["home"], thread_str(me()));
        assert!(o["age"].is_null() && o["inserted_at"].is_null(), "{o}");
        let x = o["holders"]
            .as_array()
            .expect("holders")
            .iter()
            .find(|x| x["thread"] == thread_str(w))
            .expect("the worker holds it")
            .clone();
        assert_eq!(x["name"], Value::from("serde-worker"));
        assert_eq!(x["count"], Value::from(1));
        assert!(x["first_held_at"].is_null());
        assert_eq!(json["pending"], Value::from(0));
        drop(done);
        join(worker);

        // With backtraces: age and backtraces as text.
        let reg: Registry<String> = Registry::builder().capture_backtraces(true).build();
        let (h, w, done, worker) = shared_object(&reg);
        let json = serde_json::to_value(reg.leak_report()).expect("serialize");
        let o = &json["objects"][0];
        assert_eq!(o["handle"], Value::from(h.to_raw()));
        assert!(o["age"].is_object(), "{o}");
        assert!(o["inserted_at"].is_string(), "{o}");
        let x = o["holders"]
            .as_array()
            .expect("holders")
            .iter()
            .find(|x| x["thread"] == thread_str(w))
            .expect("the worker holds it")
            .clone();
        assert!(x["first_held_at"].is_string(), "{x}");
        drop(done);
        join(worker);
    }

    #[test]
    fn a_shutdown_leak_report_serializes_too() {
        let reg: Registry<String> = Registry::new();
        let h = reg.insert("stuck".to_owned()).expect("insert");
        let report = reg.shutdown(std::time::Duration::ZERO).expect_err("held");
        let text = serde_json::to_string(&report).expect("serialize");
        assert!(
            text.contains(&format!("\"handle\":{}", h.to_raw())),
            "{text}"
        );
        reg.release(h).expect("release");
    }
}

#[cfg(feature = "tracing")]
mod tracing_form {
    use std::io;
    use std::sync::Arc;

    // Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
    use parking_lot::{Mutex, MutexGuard};
    use tether::{Error, Event};

    use super::*;

    /// A `tracing_subscriber` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock()).into_owned()
        }
    }

    /// Runs `f` with a subscriber capturing every level on this thread, and
    /// returns what it printed.
    fn captured(f: impl FnOnce()) -> String {
        let _serial = one_at_a_time();
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        buf.text()
    }

    fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn a_misuse_is_a_warn_event_with_event_misuse_and_structured_fields() {
        let mut h = None;
        let text = captured(|| {
            let reg: Registry<String> = Registry::new();
            let x = reg.insert("x".to_owned()).expect("insert");
            assert_eq!(reg.unpin(x), Err(Error::NotPinned(x)));
            h = Some(x);
        });
        let h = h.expect("ran");
        let misuse = lines_with(&text, "event=\"misuse\"");
        assert_eq!(misuse.len(), 1, "{text}");
        let line = misuse[0];
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("operation=\"unpin\""), "{line}");
        assert!(line.contains(&format!("handle={}", h.to_raw())), "{line}");
        assert!(line.contains(&format!("{:?}", me())), "{line}");
        assert!(line.contains("not pinned"), "the error's message: {line}");
    }

    #[test]
    fn lifecycle_events_are_trace_events_named_after_their_kind() {
        let text = captured(|| {
            let reg: Registry<String> = Registry::new();
            let x = reg.insert("x".to_owned()).expect("insert");
            reg.pin(x).expect("pin");
            reg.unpin(x).expect("unpin");
            reg.release(x).expect("release");
        });
        for kind in [
            "inserted",
            "first_reference",
            "pinned",
            "unpinned",
            "last_reference",
            "finalized",
        ] {
            let lines = lines_with(&text, &format!("event=\"{kind}\""));
            assert_eq!(lines.len(), 1, "{kind}: {text}");
            assert!(lines[0].contains("TRACE"), "{}", lines[0]);
        }
        assert!(lines_with(&text, "WARN").is_empty(), "{text}");
    }

    #[test]
    fn dropping_the_last_registry_with_objects_held_warns_with_the_leak_report() {
        let mut h = None;
        let text = captured(|| {
            let reg: Registry<String> = Registry::new();
            let x = reg.insert("x".to_owned()).expect("insert");
            h = Some(x);
            drop(reg);
        });
        let h = h.expect("ran");
        let leaked = lines_with(&text, "event=\"leaked\"");
        assert_eq!(leaked.len(), 1, "{text}");
        let head = lines_with(&text, "registry dropped with objects still held");
        assert_eq!(head.len(), 1, "{text}");
        assert!(head[0].contains("WARN"), "{text}");
        assert!(text.contains("still held"), "{text}");
        assert!(text.contains(&h.to_string()), "the report is in it: {text}");
    }

    #[test]
    fn tracing_and_the_hook_both_see_an_event() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let text = captured(move || {
            let reg: Registry<String> = Registry::builder()
                .on_event(move |e: &Event| sink.lock().push(e.name()))
                .build();
            let x = reg.insert("x".to_owned()).expect("insert");
            let _ = reg.release(x);
            let _ = reg.release(x);
        });
        assert_eq!(lines_with(&text, "event=\"misuse\"").len(), 1, "{text}");
        assert_eq!(
            *seen.lock(),
            [
                "inserted",
                "first_reference",
                "last_reference",
                "finalized",
                "misuse"
            ]
        );
    }

    /// Tracing tests run one at a time: while one is inside `with_default`,
    /// events of other threads that have no subscriber of their own do not
    /// reach the global one (tracing's scoped dispatch).
    fn one_at_a_time() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock()
    }

    /// A process-wide subscriber recording each event as `name: field=value
    /// ...`, for events emitted where no thread-local subscriber can be in
    /// scope: a thread's exit hook runs in a thread-local destructor, after
    /// its closure returned. It keeps no thread-local state of its own
    /// (`tracing_subscriber::fmt` does, and is unusable there).
    fn global() -> &'static Mutex<Vec<String>> {
        static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(Recorder)
                .expect("the only global subscriber of this test binary");
        });

        struct Recorder;
        struct Fields(String);

        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }

        impl tracing::Subscriber for Recorder {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, event: &tracing::Event<'_>) {
                let mut fields = Fields(format!("{}:", event.metadata().name()));
                event.record(&mut fields);
                LINES.lock().push(fields.0);
            }
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }

        &LINES
    }

    #[test]
    fn a_thread_exit_event_carries_what_it_released_and_kept() {
        let _serial = one_at_a_time();
        let lines = global();
        let reg: Registry<String> = Registry::new();
        let a = reg.insert("a".to_owned()).expect("insert");
        let b = reg.insert("b".to_owned()).expect("insert");
        let (ta, tb) = (
            reg.transfer(a).expect("transfer"),
            reg.transfer(b).expect("transfer"),
        );
        let r2 = reg.clone();
        let w = join(spawn("traced-exit", move || {
            r2.claim(ta).expect("claim");
            r2.claim(tb).expect("claim");
            me() // exits holding both
        }));
        let thread = format!("thread=\"{w:?}\"");
        let exits: Vec<String> = lines
            .lock()
            .iter()
            .filter(|l| l.contains("event=\"thread_exited\"") && l.contains(&thread))
            .cloned()
            .collect();
        assert_eq!(exits.len(), 1, "{exits:?}");
        assert!(exits[0].contains(" released=2"), "{}", exits[0]);
        assert!(exits[0].contains(" kept=0"), "{}", exits[0]);
        assert_eq!(reg.pump(), 2);
    }

    #[test]
    fn a_finalized_event_says_whether_the_drop_panicked() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                if !thread::panicking() {
                    panic!("intentional panic in Drop of Bomb (test)");
                }
            }
        }
        let mut handles = None;
        let text = captured(|| {
            let reg: Registry<Option<Bomb>> = Registry::new();
            let calm = reg.insert(None).expect("insert");
            let bomb = reg.insert(Some(Bomb)).expect("insert");
            reg.release(calm).expect("release");
            reg.release(bomb).expect("release: the panic is caught");
            handles = Some((calm, bomb));
        });
        let (calm, bomb) = handles.expect("ran");
        let finalized = |h: Handle| {
            let lines: Vec<&str> = lines_with(&text, "event=\"finalized\"")
                .into_iter()
                .filter(|l| l.contains(&format!("handle={}", h.to_raw())))
                .collect();
            assert_eq!(lines.len(), 1, "{text}");
            lines[0].to_owned()
        };
        assert!(finalized(calm).contains("panicked=false"), "{text}");
        assert!(finalized(bomb).contains("panicked=true"), "{text}");
    }
}
