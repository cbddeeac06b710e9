//! The leak report: who still holds what, and since where.

use std::backtrace::Backtrace;
use std::fmt;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use crate::inner::Inner;
use crate::{Handle, Snapshot, ThreadSnapshot};

/// Every live object with its home thread, each holder and its count, pins,
/// transfers in flight, age and — where captured — backtraces.
///
/// From [`Registry::leak_report`](crate::Registry::leak_report), from
/// [`Registry::shutdown`](crate::Registry::shutdown) when holders did not let
/// go in time, and in [`Event::Leaked`](crate::Event::Leaked) when the last
/// `Registry` is dropped with objects still held. `Display` prints a table,
/// each object followed by the caller's frames of its backtraces (`{:#}`
/// prints the full backtraces):
///
/// ```
/// # use tether::Registry;
/// let reg = Registry::builder().track_ages(true).build();
/// let h = reg.insert("config")?;
/// reg.pin(h)?;
/// let report = reg.leak_report();
/// assert_eq!(report.objects[0].pins, 1);
/// assert!(report.objects[0].age.is_some());
/// println!("{report}");
/// # Ok::<(), tether::Error>(())
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LeakReport {
    /// Live objects, by slot index.
    pub objects: Vec<LeakedObject>,
    /// Values queued for finalization on their home threads (not live, not
    /// leaked: their homes will drop them at their next call or `pump()`).
    pub pending: usize,
    /// Where those values wait: each home thread whose inbox holds some,
    /// with how many (`pending`).
    pub pending_at: Vec<ThreadSnapshot>,
    /// Taken in a child process after `fork()`: nothing could be read (the
    /// registry's locks may have been held by a parent thread that does not
    /// exist in the child), so the report is empty.
    pub forked: bool,
}

/// One live object in a [`LeakReport`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LeakedObject {
    /// The object's handle.
    pub handle: Handle,
    /// Its home thread, or `None` if that thread has exited.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_impl::opt_thread")
    )]
    pub home: Option<ThreadId>,
    /// The home thread's name, if it has one.
    pub home_name: Option<String>,
    /// Each thread holding it.
    pub holders: Vec<LeakHolder>,
    /// Pins.
    pub pins: u32,
    /// Transfers in flight (raw tokens included).
    pub transfers: u32,
    /// Time since insert (kept with `track_ages(true)` or
    /// `capture_backtraces(true)`).
    pub age: Option<Duration>,
    /// Where it was inserted (with `capture_backtraces(true)`).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_impl::opt_backtrace")
    )]
    pub inserted_at: Option<Arc<Backtrace>>,
}

/// One thread's hold on a leaked object.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LeakHolder {
    /// The holding thread.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_impl::thread"))]
    pub thread: ThreadId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Its count (explicit references plus live proxies and guards).
    pub count: u32,
    /// The thread has exited (`ThreadExit::Leak`, or proxies outliving it).
    pub exited: bool,
    /// Where this thread took its first reference of the current hold
    /// (retain, get, proxy or claim; with `capture_backtraces(true)`). The
    /// home thread's insert is in [`LeakedObject::inserted_at`].
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_impl::opt_backtrace")
    )]
    pub first_held_at: Option<Arc<Backtrace>>,
}

impl LeakReport {
    pub(crate) fn take<T: Send + Sync + 'static>(inner: &Arc<Inner<T>>) -> LeakReport {
        let snapshot = Snapshot::take(inner);
        if snapshot.forked {
            return LeakReport {
                objects: Vec::new(),
                pending: 0,
                pending_at: Vec::new(),
                forked: true,
            };
        }
        let name = |id: ThreadId| {
            snapshot
                .threads
                .iter()
                .find(|t| t.thread == id)
                .and_then(|t| t.name.clone())
        };
        let objects = snapshot
            .objects
            .iter()
            .map(|o| {
                let origin = inner.diag.origin(o.handle);
                let first = |id: ThreadId| {
                    origin.as_ref().and_then(|v| {
                        v.first_held_at
                            .iter()
                            .find(|(t, _)| *t == id)
                            .map(|(_, bt)| Arc::clone(bt))
                    })
                };
                LeakedObject {
                    handle: o.handle,
                    home: o.home,
                    home_name: o.home.and_then(name),
                    holders: o
                        .holders
                        .iter()
                        .map(|h| LeakHolder {
                            thread: h.thread,
                            name: name(h.thread),
                            count: h.count,
                            exited: h.exited,
                            first_held_at: first(h.thread),
                        })
                        .collect(),
                    pins: o.pins,
                    transfers: o.transfers,
                    age: origin.as_ref().map(|v| v.age),
                    inserted_at: origin.and_then(|v| v.inserted_at),
                }
            })
            .collect();
        LeakReport {
            objects,
            pending: snapshot.pending(),
            pending_at: snapshot
                .threads
                .iter()
                .filter(|t| t.pending > 0)
                .cloned()
                .collect(),
            forked: false,
        }
    }

    /// `true` if nothing is held (values still queued for their homes, see
    /// [`pending`](LeakReport::pending), are not held).
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

fn thread_label(id: ThreadId, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{n} {id:?}"),
        None => format!("{id:?}"),
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.forked {
            return writeln!(
                f,
                "nothing could be read: the registry was used in a child process after fork()"
            );
        }
        writeln!(
            f,
            "{} object(s) still held, {} queued for finalization",
            self.objects.len(),
            self.pending
        )?;
        for t in &self.pending_at {
            writeln!(
                f,
                "  {} queued for {}{}",
                t.pending,
                thread_label(t.thread, t.name.as_deref()),
                if t.exited { " (exited)" } else { "" }
            )?;
        }
        if self.objects.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "{:<18} {:<22} {:>9} {:>4} {:>9}  holders (thread × count)",
            "handle", "home", "age", "pins", "transfers"
        )?;
        for o in &self.objects {
            let home = o.home.map_or_else(
                || "(exited)".to_owned(),
                |t| thread_label(t, o.home_name.as_deref()),
            );
            let age = o.age.map_or_else(|| "-".to_owned(), show_age);
            let holders: Vec<String> = o
                .holders
                .iter()
                .map(|h| {
                    format!(
                        "{} × {}{}",
                        thread_label(h.thread, h.name.as_deref()),
                        h.count,
                        if h.exited { " (exited)" } else { "" }
                    )
                })
                .collect();
            let holders = if holders.is_empty() {
                "none (kept by pins/transfers)".to_owned()
            } else {
                holders.join(", ")
            };
            writeln!(
                f,
                "{:<18} {:<22} {:>9} {:>4} {:>9}  {}",
                o.handle.to_string(),
                home,
                age,
                o.pins,
                o.transfers,
                holders
            )?;
            if let Some(bt) = &o.inserted_at {
                writeln!(f, "  inserted at:")?;
                write_indented(f, bt)?;
            }
            for h in &o.holders {
                if let Some(bt) = &h.first_held_at {
                    writeln!(
                        f,
                        "  first held by {} at:",
                        thread_label(h.thread, h.name.as_deref())
                    )?;
                    write_indented(f, bt)?;
                }
            }
        }
        Ok(())
    }
}

fn show_age(age: Duration) -> String {
    if age < Duration::from_secs(1) {
        format!("{:.1}ms", age.as_secs_f64() * 1e3)
    } else {
        format!("{:.1}s", age.as_secs_f64())
    }
}

/// Writes the caller's frames of `bt`, indented: tether's own frames at the
/// top and the runtime's below `__rust_begin_short_backtrace` are left out
/// (as in std's short panic backtraces). `{:#}` prints every frame.
fn write_indented(f: &mut fmt::Formatter<'_>, bt: &Backtrace) -> fmt::Result {
    let text = bt.to_string();
    if f.alternate() {
        for line in text.lines() {
            writeln!(f, "    {line}")?;
        }
        return Ok(());
    }
    for frame in short_frames(&text) {
        for line in frame {
            writeln!(f, "  {line}")?;
        }
    }
    Ok(())
}

/// The frames of a printed backtrace (a frame: its `N: symbol` line and the
/// `at file:line` lines below it), without tether's own leading frames and
/// the runtime's trailing ones.
fn short_frames(text: &str) -> Vec<Vec<&str>> {
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        let starts_frame = line
            .trim_start()
            .split_once(": ")
            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty());
        match frames.last_mut() {
            Some(frame) if !starts_frame => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    fn symbol<'t>(frame: &[&'t str]) -> &'t str {
        frame
            .first()
            .and_then(|l| l.trim_start().split_once(": "))
            .map_or("", |(_, s)| s)
    }
    // Legacy (`core::bool::<impl bool>::then`) and v0 (`<bool>::then`)
    // symbol forms alike.
    let internal = |s: &str| {
        let s = s.trim_start_matches('<');
        s.starts_with("tether::")
            || s.starts_with("core::bool::")
            || s.starts_with("bool>::then")
            || s.starts_with("std::backtrace::")
    };
    // With `debug = "line-tables-only"` an inlined frame is named without
    // its path (`inserted_slow`, `insert<alloc::string::String>`), so a
    // frame whose source is one of tether's own files is tether's too.
    let ours = tether_source();
    let cwd = std::env::current_dir().ok();
    let in_tether = |fr: &[&str]| {
        fr.iter()
            .any(|l| in_source(l, ours.as_deref(), cwd.as_deref()))
    };
    let start = frames
        .iter()
        .position(|fr| !internal(symbol(fr)) && !in_tether(fr))
        .unwrap_or(0);
    let end = frames
        .iter()
        .position(|fr| symbol(fr).contains("__rust_begin_short_backtrace"))
        .unwrap_or(frames.len())
        .max(start);
    frames.drain(start..end).collect()
}

/// tether's own `src/` directory, as the backtrace printer shows paths
/// under the current directory (`./src/diag.rs`) or absolute.
fn tether_source() -> Option<std::path::PathBuf> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    src.is_absolute().then_some(src)
}

/// Whether `line` is a frame's `at file:line:col` line naming a file under
/// `src` (tether's sources). A path the printer made relative (`./…`) is
/// taken from `cwd`, the current directory it was printed in. The `:line:col`
/// suffix stays on: it only lengthens the last component, so the path is
/// under `src` with it exactly when without it.
fn in_source(line: &str, src: Option<&std::path::Path>, cwd: Option<&std::path::Path>) -> bool {
    let Some(src) = src else { return false };
    let Some(at) = line.trim_start().strip_prefix("at ") else {
        return false;
    };
    let path = std::path::Path::new(at);
    if path.is_absolute() {
        return path.starts_with(src);
    }
    cwd.is_some_and(|cwd| cwd.join(path).starts_with(src))
}

impl std::error::Error for LeakReport {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The symbol line of each frame `short_frames` keeps.
    fn kept(text: &str) -> Vec<String> {
        short_frames(text)
            .iter()
            .map(|fr| fr[0].trim().to_owned())
            .collect()
    }

    /// Full debug info: every frame is named with its path.
    #[test]
    fn drops_tethers_frames_named_with_their_path() {
        let text = "   0: std::backtrace::Backtrace::capture
             at /rustc/x/library/std/src/backtrace.rs:296:9
   1: tether::diag::Diag::inserted_slow
             at ./src/diag.rs:399:35
   2: tether::registry::Registry<T>::insert
             at ./src/registry/mod.rs:79:20
   3: app::make
             at ./app/src/main.rs:7:9
   4: app::main
             at ./app/src/main.rs:3:5
   5: std::sys::backtrace::__rust_begin_short_backtrace
             at /rustc/x/library/std/src/sys/backtrace.rs:158:18
   6: main
";
        assert_eq!(kept(text), ["3: app::make", "4: app::main"]);
    }

    /// `debug = "line-tables-only"`: inlined frames carry no path in their
    /// name; their source file says they are tether's.
    #[test]
    fn drops_tethers_inlined_frames_known_by_their_file() {
        let src = tether_source().expect("CARGO_MANIFEST_DIR is absolute");
        let diag = src.join("diag.rs");
        let acquire = src.join("inner/acquire.rs");
        let text = format!(
            "   0: std::backtrace::Backtrace::capture
             at /rustc/x/library/std/src/backtrace.rs:296:9
   1: inserted_slow
             at {}:399:35
   2: insert<alloc::string::String>
             at {}:68:19
   3: tether::registry::Registry<T>::insert
             at ./src/registry/mod.rs:79:20
   4: make
             at /home/u/app/src/main.rs:7:9
   5: app::main
             at /home/u/app/src/main.rs:3:5
",
            diag.display(),
            acquire.display()
        );
        assert_eq!(kept(&text), ["4: make", "5: app::main"]);
    }

    #[test]
    fn a_location_is_tethers_only_under_its_source_directory() {
        let src = tether_source().expect("CARGO_MANIFEST_DIR is absolute");
        let cwd = std::env::current_dir().ok();
        let cwd = cwd.as_deref();
        let ours = format!("at {}:1:2", src.join("leak.rs").display());
        assert!(in_source(&ours, Some(&src), cwd));
        assert!(in_source(&format!("  {ours}"), Some(&src), cwd));
        let no_col = format!("at {}:12", src.join("leak.rs").display());
        assert!(in_source(&no_col, Some(&src), cwd));
        assert!(!in_source("at /elsewhere/src/leak.rs:1:2", Some(&src), cwd));
        // A directory whose name has a colon, and a file right in `src`.
        let odd = std::path::Path::new("/tmp/a:b/src");
        assert!(in_source("at /tmp/a:b/src/x.rs:7", Some(odd), cwd));
        assert!(!in_source("at /tmp/a:b/srcx.rs:7", Some(odd), cwd));
        assert!(!in_source("at /tmp/a:7", Some(odd), cwd));
        // Relative to the current directory, as std prints a path under
        // it (`cargo test` runs this crate's tests from its root).
        if cwd.is_some_and(|d| d.join("src") == src) {
            assert!(in_source("at ./src/leak.rs:1:2", Some(&src), cwd));
            assert!(!in_source("at ./tests/leak_report.rs:1:2", Some(&src), cwd));
        }
        assert!(!in_source("2: tether::x", Some(&src), cwd));
        assert!(!in_source(&ours, None, None));
    }
}
