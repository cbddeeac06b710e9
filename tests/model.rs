//! Model-based property test (issue 5, item 1).
//!
//! proptest generates scripts of operations that run one step at a time on 3
//! real worker threads, next to a reference model that keeps per-thread
//! counts in ordinary maps. After every step the registry and the model must
//! agree on the call's result (`Ok` value or exact `Error`), the live objects
//! (`len()`), the acting thread's `count()` of every handle, every thread's
//! count (`holders()`), pins, in-flight transfers and pending queues
//! (`snapshot()`), and the values dropped during the step (exactly once, on
//! the right thread).
//!
//! The scripts, workers, reference model and checks live in `tests/model/`
//! (its module docs give the exact rules, e.g. which calls drain the home
//! queue) and are shared with the fuzz target `fuzz/fuzz_targets/model.rs`;
//! this file only generates and shrinks scripts.
//!
//! Run more cases with `TETHER_PROPTEST_CASES=10000 cargo test --test model`.

#[path = "model/mod.rs"]
mod model;

use model::{run, Forge, Op, Raw, Script, Step, H, WORKERS};
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

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
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
    ]
}

fn script_strategy() -> impl Strategy<Value = Script> {
    (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop::collection::vec(
            (0..WORKERS, op_strategy()).prop_map(|(thread, op)| Step { thread, op }),
            1..60,
        ),
    )
        .prop_map(|(home_finalization, thread_exit_release, steps)| Script {
            home_finalization,
            thread_exit_release,
            steps,
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
