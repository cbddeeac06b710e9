//! Model-based property test (issue 5, item 1; limits and the RAII layer,
//! issue 15).
//!
//! proptest generates scripts of operations that run one step at a time on 3
//! real worker threads, next to a reference model that keeps per-thread
//! counts in ordinary maps. After every step the registry and the model must
//! agree on the call's result (`Ok` value or exact `Error`), the live objects
//! (`len()`), the acting thread's `count()` of every handle, every thread's
//! count (`holders()`), pins, in-flight transfers, homes, pending queues and
//! retired slots (`snapshot()`), the interner's keys, the values dropped
//! during the step (exactly once, on the right thread) and the events the
//! `on_event` hook saw.
//!
//! Scripts use small limits (capacity, `max_count`, generation limit) so
//! `Full`, `Overflow` and slot retirement are reached, a capacity above the
//! drain batch so a bounded drain leaves values queued, and proxies,
//! `Transfer::claim`, the interner, `close` and `shutdown` beside the
//! explicit layer. The tests after the property run fixed scripts that reach
//! each of those every time.
//!
//! The scripts, workers, reference model and checks live in `tests/model/`
//! (its module docs give the exact rules, e.g. which calls drain the home
//! queue) and are shared with the fuzz target `fuzz/fuzz_targets/model.rs`;
//! this file only generates and shrinks scripts.
//!
//! Run more cases with `TETHER_PROPTEST_CASES=10000 cargo test --test model`.

#[path = "model/mod.rs"]
mod model;

use model::{run, Forge, Op, Raw, Script, Step, BIG_CAPACITY, H, KEYS, WORKERS};
use proptest::prelude::*;

fn handle_strategy() -> impl Strategy<Value = H> {
    prop_oneof![
        6 => (0usize..8).prop_map(H::Obj),
        8 => (0usize..4).prop_map(H::Mine),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::WrongTag(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::ZeroTag(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::FutureGen(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::BigIndex(i))),
    ]
}

fn raw_strategy() -> impl Strategy<Value = Raw> {
    prop_oneof![
        3 => (0usize..8).prop_map(Raw::Issued),
        4 => (0usize..4).prop_map(Raw::Live),
        2 => (0u16..12).prop_map(Raw::Serial),
        1 => any::<u64>().prop_map(Raw::Any),
    ]
}

/// Ops; `batches` weights batches of inserts (and drops of every transfer)
/// up, for scripts whose capacity lets more than a drain batch queue.
fn op_strategy(batches: u32) -> impl Strategy<Value = Op> {
    let explicit = prop_oneof![
        6 => Just(Op::Insert),
        4 => handle_strategy().prop_map(Op::Retain),
        8 => handle_strategy().prop_map(Op::Release),
        3 => handle_strategy().prop_map(Op::Get),
        2 => handle_strategy().prop_map(Op::Pin),
        2 => handle_strategy().prop_map(Op::Unpin),
        8 => (handle_strategy(), any::<bool>()).prop_map(|(h, raw)| Op::Transfer { h, raw }),
        6 => (0usize..4).prop_map(Op::Claim),
        2 => (0usize..4).prop_map(Op::DropTransfer),
        4 => raw_strategy().prop_map(Op::ClaimRaw),
        2 => raw_strategy().prop_map(Op::FromRawDrop),
        2 => Just(Op::Pump),
        1 => Just(Op::Exit),
    ];
    let raii = prop_oneof![
        3 => Just(Op::InsertProxy),
        2 => handle_strategy().prop_map(Op::Proxy),
        3 => (0usize..4, any::<bool>()).prop_map(|(i, checked)| Op::CloneProxy { i, checked }),
        3 => (0usize..4).prop_map(Op::DropProxy),
        2 => (0usize..4).prop_map(Op::ProxyTransfer),
        3 => (0usize..4).prop_map(Op::ClaimProxy),
        4 => (0..KEYS, prop::bool::weighted(0.2)).prop_map(|(key, fail)| Op::Intern { key, fail }),
        1 => (0..KEYS).prop_map(Op::InternProxy),
        // Either a few, or more than a drain batch (up to the big capacity).
        batches => prop_oneof![1u8..8, 33u8..=BIG_CAPACITY as u8].prop_map(Op::InsertMany),
        batches + 1 => Just(Op::DropTransfers),
        1 => prop_oneof![Just(Op::Close), Just(Op::Shutdown)],
    ];
    prop_oneof![50 => explicit, 30 => raii]
}

fn script_strategy() -> impl Strategy<Value = Script> {
    prop_oneof![2 => 3usize..=6, 1 => Just(BIG_CAPACITY)].prop_flat_map(|capacity| {
        let batches = if capacity == BIG_CAPACITY { 6 } else { 1 };
        (
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            prop_oneof![1 => Just(0u32), 1 => Just(1), 1 => Just(2), 2 => Just(3), 3 => Just(u32::MAX)],
            prop_oneof![1 => Just(0u32), 2 => Just(1), 2 => Just(2), 3 => Just(u32::MAX)],
            prop::collection::vec(
                (0..WORKERS, op_strategy(batches)).prop_map(|(thread, op)| Step { thread, op }),
                1..60,
            ),
        )
            .prop_map(
                move |(home_finalization, thread_exit_release, max_count, limit, steps)| Script {
                    home_finalization,
                    thread_exit_release,
                    capacity,
                    max_count,
                    generation_limit: limit,
                    steps,
                },
            )
    })
}

fn cases() -> u32 {
    std::env::var("TETHER_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The registry and the reference model agree after every step.
    #[test]
    fn registry_matches_model(script in script_strategy()) {
        if let Err(e) = run(&script) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// A fixed script on the default settings (capacity 4), with `edit`'s
/// changes. Each step names the thread, the op and what its outcome must
/// contain (its `Debug`; `""` for anything): the model checks every step
/// exactly, this checks that the script reaches what it is meant to.
fn check(steps: &[(usize, Op, &str)], edit: impl FnOnce(&mut Script)) {
    let mut s = Script {
        home_finalization: true,
        thread_exit_release: true,
        capacity: 4,
        max_count: u32::MAX,
        generation_limit: u32::MAX,
        steps: (steps.iter())
            .map(|&(thread, op, _)| Step { thread, op })
            .collect(),
    };
    edit(&mut s);
    let outcomes = run(&s).unwrap_or_else(|e| panic!("{e}\nscript: {s:?}"));
    for (k, (&(.., want), got)) in steps.iter().zip(&outcomes).enumerate() {
        assert!(got.contains(want), "step {k}: {got}, meant to be {want}");
    }
}

fn intern(key: u8) -> Op {
    Op::Intern { key, fail: false }
}

fn intern_failing(key: u8) -> Op {
    Op::Intern { key, fail: true }
}

fn clone(i: usize) -> Op {
    Op::CloneProxy { i, checked: false }
}

fn try_clone(i: usize) -> Op {
    Op::CloneProxy { i, checked: true }
}

/// 40 values queued to one home: its next call drains 32, the next 8 more.
#[test]
fn a_drain_batch_leaves_the_rest_queued() {
    #[rustfmt::skip]
    let steps = [
        (0, Op::InsertMany(40), "InsertedMany"),
        (1, Op::DropTransfers, "Ok"),
        (0, Op::Retain(H::Obj(0)), "Stale"), // drains 32, 8 stay queued
        (0, Op::Insert, "Ok"),               // drains the other 8
        (1, Op::InsertMany(3), "InsertedMany"),
        (0, Op::DropTransfers, "Ok"),
        (1, Op::Pump, "Pumped(3)"),
    ];
    check(&steps, |s| s.capacity = BIG_CAPACITY);
}

/// A thread's exit releases its references in slot-index order, which is
/// the order their values queue at their home: here the reverse of the
/// insertion order (the home's free cache hands out its fresh slots last
/// first), so which of them the home's next bounded drain takes follows the
/// indices. (A proptest seed found the model assuming insertion order.)
#[test]
fn an_exit_queues_its_releases_home_in_slot_order() {
    #[rustfmt::skip]
    let steps = [
        (1, Op::InsertMany(34), "InsertedMany"),
        (0, Op::Claim(0), "Ok"),
        (0, Op::Claim(0), "Ok"),
        (0, Op::Claim(0), "Ok"),
        (2, Op::DropTransfers, "Ok"), // 31 values queued at thread 1
        (0, Op::Exit, "Exited"),      // 3 more, in slot-index order
        (1, Op::Insert, "Ok"),        // drains 32 of the 34
        (1, Op::Pump, "Pumped(2)"),
    ];
    check(&steps, |s| s.capacity = BIG_CAPACITY);
}

/// `max_count(2)`: every way of taking a third reference is `Overflow`,
/// and a refused claim drops its transfer (a raw token is used up).
#[test]
fn every_way_past_max_count_overflows() {
    let a = H::Obj(0); // the only object until the interner's
    #[rustfmt::skip]
    let steps = [
        (0, Op::Insert, "Ok"),
        (0, Op::Retain(a), "Ok(2)"),
        (0, Op::Retain(a), "Overflow"),
        (0, Op::Get(a), "Overflow"),
        (0, Op::Proxy(a), "Overflow"),
        (0, Op::Release(a), "Held(1)"),
        (0, Op::Proxy(a), "Ok"),
        (0, try_clone(0), "Overflow"),
        (0, clone(0), "Overflow"), // run as try_clone
        (0, Op::Transfer { h: a, raw: false }, "Ok"),
        (0, clone(0), "Ok"),
        (0, Op::Claim(0), "Overflow"), // the transfer is dropped
        (0, Op::DropProxy(0), "Ok"),
        (0, Op::Retain(a), "Ok(2)"),
        (0, Op::Transfer { h: a, raw: true }, "Ok"),
        (0, Op::Proxy(a), "Ok"),
        (0, Op::ClaimRaw(Raw::Live(0)), "Overflow"), // the token is used up
        (0, Op::ClaimRaw(Raw::Issued(0)), "TransferClaimed"),
        (0, Op::FromRawDrop(Raw::Issued(0)), "TransferClaimed"),
        (0, Op::ProxyTransfer(0), "Ok"),
        (0, Op::Proxy(a), "Ok"),
        (0, Op::ClaimProxy(0), "Overflow"), // the transfer is dropped
        (2, intern(0), "Ok"),
        (2, intern(0), "Ok"),
        (2, intern(0), "Overflow"),
        (2, Op::InternProxy(0), "Overflow"),
        (1, intern(1), "Ok"),
        (1, intern_failing(1), "Ok"), // init does not run
        (1, Op::Release(H::Mine(0)), "Held(1)"),
        (1, Op::InternProxy(1), "Overflow"), // after its interned reference
        (1, intern_failing(2), "Init(1002)"),
        (1, intern(2), "true"), // init runs again
    ];
    check(&steps, |s| s.max_count = 2);
}

/// `max_count(1)`: a new object's only reference is all a thread may have;
/// `intern_proxy` of a new key gives the object up at once.
#[test]
fn max_count_one() {
    #[rustfmt::skip]
    let steps = [
        (0, Op::Insert, "Ok"),
        (0, Op::Get(H::Obj(0)), "Overflow"),
        (1, Op::InternProxy(2), "Overflow"), // finalized at once
        (1, intern(2), "true"),              // a new object
        (1, clone(0), "Skipped"),            // no proxy
        (0, Op::InsertProxy, "Ok"),
        (0, clone(0), "Overflow"),
    ];
    check(&steps, |s| s.max_count = 1);
}

/// Generation limit 1 on 3 slots: each slot holds two objects, then
/// retires; then `Full` for good. Stale, never-issued and forged ids of
/// retired slots are told apart.
#[test]
fn exhausted_slots_retire() {
    let mut steps = Vec::new();
    for _ in 0..5 {
        steps.push((0, Op::Insert, "Ok"));
        steps.push((1, Op::Retain(H::Obj(0)), "NotHeld"));
        steps.push((0, Op::Release(H::Obj(0)), "Finalized"));
        steps.push((2, Op::Get(H::Obj(0)), "Stale"));
        steps.push((2, Op::Release(H::Forged(Forge::FutureGen(1))), "Invalid"));
    }
    // The probe used one slot's first generation: 5 objects in all.
    steps.push((0, Op::Insert, "Full"));
    steps.push((1, Op::InsertProxy, "Full"));
    check(&steps, |s| {
        s.capacity = 3;
        s.generation_limit = 1;
    });
}

/// Closed: no new objects or claims (a refused claim releases its
/// transfer), interning an existing key only by the access rule, holders
/// keep working; `shutdown` reports what is still live and succeeds once
/// nothing is.
#[test]
fn close_then_shutdown() {
    // Objects, most recent first: B, K (key 0), A.
    let (b, k, a) = (H::Obj(0), H::Obj(1), H::Obj(2));
    #[rustfmt::skip]
    let steps = [
        (0, Op::Insert, "Ok"),
        (0, intern(0), "Ok"),
        (0, Op::Insert, "Ok"),
        (0, Op::Transfer { h: b, raw: false }, "Ok"),
        (0, Op::Transfer { h: a, raw: true }, "Ok"),
        (1, Op::Close, "Ok"),
        (1, Op::Insert, "Closed"),
        (1, Op::Claim(0), "Closed"),               // B is queued home
        (1, Op::ClaimRaw(Raw::Live(0)), "Closed"), // A is queued home
        (1, intern(0), "Closed"),                  // no access
        (0, intern(0), "Ok"),                      // held: a second reference
        (0, Op::Pin(k), "Ok"),
        (1, intern(0), "Ok"),                      // pinned: allowed
        (2, intern(1), "Closed"),                  // before init
        (0, Op::InsertProxy, "Closed"),
        (2, Op::Shutdown, "Shutdown(Err"),         // K is live
        (0, Op::Get(k), "Ok"),                     // drains A and B
        (0, Op::Release(k), "Held(1)"),
        (0, Op::Release(k), "Held(0)"),
        (1, Op::Release(k), "Held(0)"),
        (2, Op::Unpin(k), "Ok"),
        (0, Op::Shutdown, "Shutdown(Ok"),
    ];
    check(&steps, |_| {});
}

/// Proxies through transfers, clones and drops on three threads; exits with
/// proxies alive, under both thread-exit policies; a pinned object left for
/// the leak report.
#[test]
fn proxies_travel_and_die_with_their_thread() {
    #[rustfmt::skip]
    let steps = [
        (0, Op::InsertProxy, "Ok"),
        (0, clone(0), "Ok((0, 2))"),
        (0, Op::ProxyTransfer(0), "Ok"),
        (1, Op::ClaimProxy(0), "Ok((0, 1))"),
        (1, try_clone(0), "Ok((0, 2))"),
        (1, Op::ProxyTransfer(1), "Ok"),
        (2, Op::Claim(0), "Ok"),
        (0, Op::DropProxy(0), "Ok"),
        (1, Op::Exit, "Exited"),             // with a proxy
        (2, Op::Release(H::Mine(0)), "Queued"),
        (0, Op::Pump, "Pumped(1)"),
        (2, Op::InternProxy(1), "Ok"),
        (1, Op::InternProxy(1), "Ok"),
        (2, Op::Exit, "Exited"),             // with a proxy
        (0, Op::Insert, "Ok"),
        (0, Op::Pin(H::Obj(0)), "Ok"),       // the leak report names it
    ];
    for release in [true, false] {
        check(&steps, |s| s.thread_exit_release = release);
    }
}
