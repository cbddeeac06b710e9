//! The scenario harness: where user code runs ([`Point`]), values that log
//! their drops ([`Val`]), threads driven one step at a time ([`Actor`]),
//! the arm that runs one [`Action`] at one point, and the checks every
//! scenario ends with.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;
use tether::{Event, Handle, Proxy, Registry};

use crate::actions::{self, Action};
use crate::common;

pub type Reg = Registry<Val>;

/// How long one step of a scenario may take before it counts as a
/// deadlock. Never a performance bound: steps take microseconds.
pub const STEP: Duration = Duration::from_secs(10);

/// A thread's part in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The thread that inserts the objects of the script (their home).
    Home,
    /// A thread that claims, uses and releases them.
    Worker,
    /// The home thread, after its body returned (its thread-locals,
    /// tether's exit hook among them, are being destroyed).
    HomeExiting,
    /// The worker, during its exit.
    WorkerExiting,
}

/// How a value reaches its `Drop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Its last explicit reference released on its home thread.
    Release,
    /// Its last proxy dropped on its home thread.
    ProxyDrop,
    /// Its last guard dropped on its home thread.
    GuardDrop,
    /// Released last on a worker, queued home, run by the home's `pump()`.
    Pump,
    /// Queued home, run by the home's next ordinary call (the opportunistic
    /// drain of a `retain`).
    Drain,
    /// Held by a thread that exits (`ThreadExit::Release`): dropped by the
    /// exit hook on that thread, its home.
    ThreadExit,
    /// Queued home; the home exits without pumping: its exit drains it.
    HomeExit,
    /// Released last on a worker after its home thread exited: dropped on
    /// the worker.
    Orphan,
    /// Pinned when the last `Registry` is dropped (its home has exited):
    /// dropped by the registry's teardown.
    RegistryDrop,
    /// Pinned when the last `Registry` is dropped on a worker while its
    /// home thread still runs.
    RegistryDropOnWorker,
    /// Held by a proxy in a thread-local of its home thread that is
    /// destroyed after tether's exit hook (a late proxy): dropped there,
    /// the thread's table already detached.
    LateProxy,
    /// Pinned when the last handle to the table, a proxy on its home thread
    /// (every `Registry` gone), is dropped there.
    LastProxyDrop,
    /// Pinned when the last handle to the table, an unclaimed transfer on a
    /// worker (every `Registry` gone, its home exited), is dropped there.
    LastTransferDrop,
    /// Queued home (with a second value behind it); the home's `shutdown`
    /// pumps it.
    Shutdown,
}

/// Interner user code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPoint {
    /// `init` of a new object.
    Init,
    /// The key's `Hash` (first call: the per-thread cache's hash, no lock).
    Hash,
    /// The key's `Eq` in the shared map's lookup (a second thread interning
    /// a key that another thread created).
    EqMap,
    /// The key's `Eq` in the calling thread's cache (interning a key it
    /// holds).
    EqCache,
    /// The key's `Clone` (the copy the interner stores).
    Clone,
    /// The key's `Drop` when the thread releases its last reference.
    DropAtRelease,
    /// The key's `Drop` when a thread holding it exits.
    DropAtExit,
    /// The event hook's `Transferred` event sent while `init`'s result is
    /// published to a waiting thread.
    MintHook,
}

/// Which of a key's user code ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCode {
    Init,
    Hash,
    Eq,
    Clone,
    Drop,
}

impl KeyPoint {
    fn code(self) -> Option<KeyCode> {
        Some(match self {
            KeyPoint::Init => KeyCode::Init,
            KeyPoint::Hash => KeyCode::Hash,
            KeyPoint::EqMap | KeyPoint::EqCache => KeyCode::Eq,
            KeyPoint::Clone => KeyCode::Clone,
            KeyPoint::DropAtRelease | KeyPoint::DropAtExit => KeyCode::Drop,
            KeyPoint::MintHook => return None,
        })
    }
}

/// A point where user code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The event hook, for the first event of this kind (its
    /// [`Event::name`]) on a thread in this role; the subject of the
    /// action is the event's object (the thread's spare if it has none).
    Hook(&'static str, Role),
    /// As `Hook`, with the thread's spare as the subject (for events whose
    /// object is dead or not the thread's: there, `Hook` tries to reach a
    /// dead object, this one re-enters with a live one).
    HookOnSpare(&'static str, Role),
    /// The `Drop` of a stored value reached this way.
    Drop(Path),
    /// Interner user code.
    Key(KeyPoint),
    /// The home's notifier (DESIGN §8), run on a worker right after its
    /// release queued a value home.
    Notify,
}

thread_local! {
    /// The thread's id, kept where thread-local destructors can read it.
    static MY_ID: Cell<Option<ThreadId>> = const { Cell::new(None) };
    /// Set by an actor when its body returned: what runs on it now runs
    /// during its exit.
    static EXITING: Cell<bool> = const { Cell::new(false) };
    /// The actor's spare object: an explicit reference it holds, the
    /// subject of actions that have no other.
    static SPARE: Cell<Option<Handle>> = const { Cell::new(None) };
}

thread_local! {
    /// Set by the driver once the actor has exited: values made on it may
    /// be dropped elsewhere after that (their home is gone).
    static HOME_GONE: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
    /// A proxy of the actor's own "lend" object: a user thread-local touched
    /// before tether's, so it is destroyed after tether's exit hook (a late
    /// proxy). User code on that thread reaches the registry through it
    /// (`Proxy::registry`) when no `Registry` value is left.
    static LENDER: RefCell<Option<Proxy<Val>>> = const { RefCell::new(None) };
}

/// The calling thread's id (readable during thread-local destruction).
pub fn me() -> ThreadId {
    MY_ID
        .try_with(Cell::get)
        .ok()
        .flatten()
        .unwrap_or_else(|| thread::current().id())
}

fn exiting() -> bool {
    EXITING.try_with(Cell::get).unwrap_or(true)
}

/// The calling thread's spare object, if it has one.
pub fn spare() -> Option<Handle> {
    SPARE.try_with(Cell::get).ok().flatten()
}

struct DropRecord {
    id: u64,
    on: ThreadId,
    home: ThreadId,
    home_gone: bool,
}

/// One run of one action at one point: the arm, the drop log, the
/// problems seen, and the registries user code can reach.
pub struct Scenario {
    pub point: Point,
    pub action: Action,
    enabled: AtomicBool,
    fired: AtomicBool,
    next_id: AtomicU64,
    created: Mutex<Vec<u64>>,
    drops: Mutex<Vec<DropRecord>>,
    /// The registry of the scenario, for user code (cleared before the
    /// last `Registry` is meant to go).
    pub slot: Mutex<Option<Reg>>,
    /// Another registry and a handle held by the thread that tears the
    /// scenario's registry down, for user code that runs then.
    pub other: Mutex<Option<(Reg, Handle)>>,
    /// The object an interner point is about, if it exists yet.
    pub key_object: Mutex<Option<Handle>>,
    roles: Mutex<HashMap<ThreadId, Role>>,
    problems: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
}

impl Scenario {
    pub fn new(point: Point, action: Action) -> Arc<Self> {
        quiet_intentional_panics();
        Arc::new(Scenario {
            point,
            action,
            enabled: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            created: Mutex::new(Vec::new()),
            drops: Mutex::new(Vec::new()),
            slot: Mutex::new(None),
            other: Mutex::new(None),
            key_object: Mutex::new(None),
            roles: Mutex::new(HashMap::new()),
            problems: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
        })
    }

    /// The scenario's registry, with the event hook of this scenario.
    pub fn registry(self: &Arc<Self>) -> Reg {
        let sc = Arc::clone(self);
        let reg = Registry::builder()
            .on_event(move |e| sc.on_event(e))
            .build();
        *self.slot.lock() = Some(reg.clone());
        reg
    }

    pub fn label(&self) -> String {
        format!("{:?} × {:?}", self.point, self.action)
    }

    /// A plain value, made on (and so homed at) the calling thread.
    pub fn val(self: &Arc<Self>) -> Val {
        self.make(false)
    }

    /// The value whose `Drop` runs the action.
    pub fn armed_val(self: &Arc<Self>) -> Val {
        self.make(true)
    }

    fn make(self: &Arc<Self>, armed: bool) -> Val {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.created.lock().push(id);
        Val {
            id,
            home: me(),
            home_gone: HOME_GONE.try_with(|g| g.borrow().clone()).ok().flatten(),
            sc: Arc::clone(self),
            armed,
        }
    }

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    pub fn set_role(&self, thread: ThreadId, role: Role) {
        self.roles.lock().insert(thread, role);
    }

    fn role_here(&self) -> Option<Role> {
        let base = *self.roles.lock().get(&me())?;
        Some(match (base, exiting()) {
            (Role::Home, true) => Role::HomeExiting,
            (Role::Worker, true) => Role::WorkerExiting,
            (role, _) => role,
        })
    }

    pub fn problem(&self, what: impl Into<String>) {
        self.problems.lock().push(what.into());
    }

    pub fn note(&self, what: impl Into<String>) {
        self.notes.lock().push(what.into());
    }

    /// The end of a script whose driver kept a `witness` proxy (it keeps the
    /// table alive once the actors dropped every `Registry`, and lends a
    /// registry for the checks): disarms, then nothing live, a panicking
    /// action counted as one hook panic, a fresh call works, every value
    /// dropped once at home.
    pub fn finish_with_witness(self: &Arc<Self>, witness: Proxy<Val>) {
        self.disable();
        let reg = witness.registry();
        drop(witness);
        let panics = u64::from(self.action == Action::Panic);
        self.check_registry(&reg, 0, panics, 0);
        self.check_fresh_call(&reg);
        drop(reg);
        self.check_drops();
        self.assert_clean();
    }

    /// Runs the action once, if armed: the point was reached.
    pub fn fire(self: &Arc<Self>, subject: Option<Handle>) {
        if !self.enabled.load(Ordering::SeqCst) || self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        self.note(format!("fired on {:?} ({:?})", self.role_here(), me()));
        actions::perform(self, subject);
    }

    /// The event hook.
    fn on_event(self: &Arc<Self>, e: &Event) {
        if !self.enabled.load(Ordering::SeqCst) {
            return;
        }
        match self.point {
            Point::Hook(kind, role) if e.name() == kind && self.role_here() == Some(role) => {
                let subject = match e {
                    Event::ThreadExited { .. } | Event::Leaked { .. } => None,
                    _ => e.handle(),
                };
                self.fire(subject);
            }
            Point::HookOnSpare(kind, role)
                if e.name() == kind && self.role_here() == Some(role) =>
            {
                self.fire(None);
            }
            Point::Key(KeyPoint::MintHook) if e.name() == "transferred" => self.fire(e.handle()),
            _ => {}
        }
    }

    /// A key's (or `init`'s) user code ran.
    pub fn key_code(self: &Arc<Self>, code: KeyCode) {
        if let Point::Key(p) = self.point {
            if p.code() == Some(code) {
                let subject = *self.key_object.lock();
                self.fire(subject);
            }
        }
    }

    /// The registry user code reaches here, and the object it acts on:
    /// the scenario's registry (a `Registry` value, or one lent by a
    /// proxy in a thread-local), else the other registry.
    pub fn context(&self, subject: Option<Handle>) -> Option<(Reg, Option<Handle>)> {
        if let Some(reg) = self.slot.lock().clone() {
            return Some((reg, subject.or_else(spare)));
        }
        let lent = LENDER
            .try_with(|l| l.try_borrow().ok()?.as_ref().map(Proxy::registry))
            .ok()
            .flatten();
        if let Some(reg) = lent {
            return Some((reg, subject.or_else(spare)));
        }
        self.other.lock().clone().map(|(reg, h)| (reg, Some(h)))
    }

    fn record_drop(&self, id: u64, home: ThreadId, home_gone: bool) {
        self.drops.lock().push(DropRecord {
            id,
            on: me(),
            home,
            home_gone,
        });
    }

    /// How many times value `id` was dropped.
    pub fn times_dropped(&self, id: u64) -> usize {
        self.drops.lock().iter().filter(|d| d.id == id).count()
    }

    /// The id the next value will get (to name a value before it exists).
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }

    /// Every value made was dropped exactly once, on its home thread
    /// unless that thread had exited.
    pub fn check_drops(&self) {
        let created = self.created.lock().clone();
        let drops = self.drops.lock();
        for id in created {
            let n = drops.iter().filter(|d| d.id == id).count();
            if n != 1 {
                self.problem(format!("value #{id} dropped {n} times, not once"));
            }
        }
        for d in drops.iter() {
            if d.on != d.home && !d.home_gone {
                self.problem(format!(
                    "value #{} dropped on {:?}, off its home {:?}, which was still running",
                    d.id, d.on, d.home
                ));
            }
        }
    }

    /// The state of the scenario's registry once every actor is gone:
    /// `expect_live` objects, no exited thread's table, the panics caught.
    pub fn check_registry(
        &self,
        reg: &Reg,
        expect_live: usize,
        hook_panics: u64,
        drop_panics: u64,
    ) {
        let live = reg.len();
        if live != expect_live {
            self.problem(format!(
                "len() is {live}, expected {expect_live}:\n{}",
                reg.leak_report()
            ));
        }
        let s = reg.snapshot();
        let exited: Vec<_> = s.threads.iter().filter(|t| t.exited).collect();
        if !exited.is_empty() {
            self.problem(format!("exited threads' tables are left: {exited:?}"));
        }
        if reg.hook_panics() != hook_panics {
            self.problem(format!(
                "hook_panics() is {}, expected {hook_panics}",
                reg.hook_panics()
            ));
        }
        if s.drop_panics != drop_panics {
            self.problem(format!(
                "snapshot().drop_panics is {}, expected {drop_panics}",
                s.drop_panics
            ));
        }
    }

    /// A fresh call works: an insert and its release (or `Closed`, if the
    /// action closed the registry), a pump and a snapshot.
    pub fn check_fresh_call(self: &Arc<Self>, reg: &Reg) {
        match reg.insert(self.val()) {
            Ok(h) => {
                let r = reg.release(h);
                if r != Ok(tether::Released::Finalized) {
                    self.problem(format!("a fresh insert's release gave {r:?}"));
                }
            }
            Err(e) if e.error() == tether::Error::Closed && reg.is_closed() => {}
            Err(e) => self.problem(format!("a fresh insert failed: {e}")),
        }
        reg.pump();
        let _ = reg.snapshot().to_string();
    }

    /// Panics with every problem seen (and what happened), if any; also if
    /// the point was never reached.
    pub fn assert_clean(&self) {
        if !self.fired() {
            self.problem("the point was never reached: the action did not run");
        }
        let problems = self.problems.lock();
        if std::env::var_os("CALLBACKS_VERBOSE").is_some() {
            eprintln!("{}: {:?}", self.label(), self.notes.lock());
        }
        if problems.is_empty() {
            return;
        }
        let mut msg = format!("{}:\n", self.label());
        for p in problems.iter() {
            let _ = writeln!(msg, "  - {p}");
        }
        let _ = writeln!(msg, "  what happened:");
        for n in self.notes.lock().iter() {
            let _ = writeln!(msg, "    {n}");
        }
        panic!("{msg}");
    }
}

/// A stored value: logs its drop (where, and whether its home was gone);
/// an armed one runs the scenario's action in its `Drop`.
pub struct Val {
    pub id: u64,
    home: ThreadId,
    home_gone: Option<Arc<AtomicBool>>,
    sc: Arc<Scenario>,
    armed: bool,
}

impl Drop for Val {
    fn drop(&mut self) {
        let gone = self
            .home_gone
            .as_ref()
            .is_some_and(|g| g.load(Ordering::SeqCst));
        self.sc.record_drop(self.id, self.home, gone);
        if self.armed {
            self.sc.fire(None);
        }
    }
}

/// What an actor's steps share: its registry, proxies it keeps, the
/// scenario.
pub struct Local {
    pub reg: Option<Reg>,
    pub keep: Vec<Proxy<Val>>,
    pub sc: Arc<Scenario>,
}

impl Local {
    pub fn reg(&self) -> &Reg {
        self.reg.as_ref().expect("this actor dropped its registry")
    }

    /// Inserts the actor's spare (an explicit reference, see [`spare`]) and,
    /// with `lend`, a "lend" object whose proxy goes into the actor's
    /// late thread-local.
    pub fn setup(&mut self, lend: bool) -> Handle {
        let reg = self.reg().clone();
        let h = reg.insert(self.sc.val()).expect("insert the spare");
        SPARE.with(|s| s.set(Some(h)));
        if lend {
            self.lend(self.sc.val());
        }
        h
    }

    /// Inserts `v` as the actor's lend object: its proxy goes into the
    /// actor's late thread-local.
    pub fn lend(&self, v: Val) {
        let p = self.reg().insert_proxy(v).expect("insert the lend object");
        LENDER.with(|l| *l.borrow_mut() = Some(p));
    }
}

type Job = Box<dyn FnOnce(&mut Local) + Send>;

/// A thread that runs the driver's steps one at a time; its body returns
/// (and its thread-locals are destroyed) when told to exit.
pub struct Actor {
    pub name: &'static str,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    gone: Arc<AtomicBool>,
}

/// A step started with [`Actor::start`].
pub struct Pending<R> {
    what: String,
    rx: Receiver<thread::Result<R>>,
}

impl<R> Pending<R> {
    pub fn wait(self) -> R {
        match self.rx.recv_timeout(STEP) {
            Ok(Ok(r)) => r,
            Ok(Err(payload)) => resume_unwind(payload),
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: not done after {STEP:?}: deadlock", self.what)
            }
            Err(RecvTimeoutError::Disconnected) => panic!("{}: the actor is gone", self.what),
        }
    }
}

impl Actor {
    /// A new actor in `role` with its own clone of `reg`.
    pub fn spawn(sc: &Arc<Scenario>, role: Role, reg: &Reg) -> Actor {
        let name = match role {
            Role::Home | Role::HomeExiting => "home",
            Role::Worker | Role::WorkerExiting => "worker",
        };
        let (jobs, rx) = mpsc::channel::<Job>();
        let gone = Arc::new(AtomicBool::new(false));
        let (id_tx, id_rx) = mpsc::channel();
        let (reg, sc2) = (reg.clone(), Arc::clone(sc));
        let home_gone = Arc::clone(&gone);
        let thread = common::spawn(name, move || {
            MY_ID.with(|m| m.set(Some(thread::current().id())));
            // Touched before any registry call: destroyed after tether's
            // exit hook (thread-locals go in reverse order of first use).
            HOME_GONE.with(|g| *g.borrow_mut() = Some(home_gone));
            LENDER.with(|_| {});
            let _ = id_tx.send(thread::current().id());
            let mut local = Local {
                reg: Some(reg),
                keep: Vec::new(),
                sc: sc2,
            };
            for job in rx {
                job(&mut local);
            }
            drop(local);
            EXITING.with(|e| e.set(true));
        });
        let id = common::recv(&id_rx, "actor id");
        sc.set_role(id, role);
        Actor {
            name,
            jobs: Some(jobs),
            thread: Some(thread),
            gone,
        }
    }

    /// Starts a step; [`Pending::wait`] for its result.
    pub fn start<R: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Local) -> R + Send + 'static,
    ) -> Pending<R> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |local| {
            let r = catch_unwind(AssertUnwindSafe(|| f(local)));
            let _ = tx.send(r);
        });
        self.jobs
            .as_ref()
            .expect("actor already exited")
            .send(job)
            .expect("the actor is gone");
        Pending {
            what: format!("{}: {what}", self.name),
            rx,
        }
    }

    /// Runs a step and returns its result (re-raising its panic).
    pub fn run<R: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Local) -> R + Send + 'static,
    ) -> R {
        self.start(what, f).wait()
    }

    /// Lets the actor's body return and joins it (a deadlock during its
    /// exit fails the scenario); values homed there may now be dropped
    /// elsewhere.
    pub fn exit(mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            common::join(t);
        }
        self.gone.store(true, Ordering::SeqCst);
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        // A failed scenario: let the thread end on its own, never wait.
        drop(self.jobs.take());
    }
}

/// A guard parked in a thread-local together with the registry it borrows.
pub struct ParkedGuard {
    guard: Option<tether::Guard<'static, Val>>,
    reg: *mut Reg,
}

impl ParkedGuard {
    /// A guard of `h` from a clone of `reg`, to be parked.
    pub fn new(reg: &Reg, h: Handle) -> Result<ParkedGuard, tether::Error> {
        let reg: *mut Reg = Box::into_raw(Box::new(reg.clone()));
        // SAFETY: the box is freed only by `ParkedGuard::drop` (below, or on
        // error here), after the guard that borrows it is gone.
        let borrowed: &'static Reg = unsafe { &*reg };
        match borrowed.get(h) {
            Ok(g) => Ok(ParkedGuard {
                guard: Some(g),
                reg,
            }),
            Err(e) => {
                // SAFETY: from `Box::into_raw` above; no borrow of it is left.
                drop(unsafe { Box::from_raw(reg) });
                Err(e)
            }
        }
    }

    pub fn handle(&self) -> Option<Handle> {
        self.guard.as_ref().map(|g| g.handle())
    }
}

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        // SAFETY: from `Box::into_raw` in `new`, freed once, here, after the
        // guard borrowing it was dropped.
        drop(unsafe { Box::from_raw(self.reg) });
    }
}

/// Drops the intentional panics' messages (they contain "(test)") instead
/// of printing each; every other panic prints as usual.
fn quiet_intentional_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains("intentional panic") {
                default(info);
            }
        }));
    });
}
