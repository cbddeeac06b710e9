//! Invariant 5 for raw transfer tokens: a token is a capability. A token
//! that was not handed to you — a neighbour of yours, a successor, a value
//! off by a bit — claims nothing and is refused with a typed error
//! (issue 15, item 2).

mod common;

use std::collections::HashSet;
use std::sync::mpsc;

use common::{join, spawn, DropLog, Tracked};
use tether::{Error, Registry};

const LIMIT: u64 = 1 << 53;

/// The measured break: two workers each given a raw token; worker A claimed
/// `its_token + 1` and got B's object, and B's own claim then failed.
#[test]
fn a_worker_claiming_its_neighbours_token_gets_nothing() {
    let log = DropLog::new();
    let reg = Registry::new();
    let ha = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let hb = reg.insert(Tracked::new(&log, 2)).expect("insert");
    let ta = reg.transfer(ha).expect("transfer").into_raw();
    let tb = reg.transfer(hb).expect("transfer").into_raw();
    let (ra, rb) = (reg.clone(), reg.clone());
    let a = spawn("worker-a", move || {
        let mut stolen = Vec::new();
        for guess in [ta.wrapping_add(1), ta.wrapping_sub(1), ta ^ 1, ta + 2] {
            match ra.claim_raw(guess) {
                Ok(h) => stolen.push(h),
                Err(e) => assert!(
                    matches!(e, Error::Invalid(t) if t == guess) || e == Error::TransferClaimed,
                    "a mistaken token must be a typed error, got {e:?}"
                ),
            }
        }
        let mine = ra.claim_raw(ta).expect("my own token");
        assert_eq!(ra.release(mine).map(|_| ()), Ok(()));
        stolen
    });
    let stolen = join(a);
    assert!(stolen.is_empty(), "worker A claimed {stolen:?}");
    let b = spawn("worker-b", move || {
        let mine = rb.claim_raw(tb).expect("B's own token is still B's");
        rb.get(mine).expect("B holds its object").id
    });
    assert_eq!(join(b), 2);
    assert_eq!(reg.pump(), 2);
    assert!(reg.is_empty());
}

/// Thousands of live tokens, every other one given to a guesser thread.
/// It claims every near neighbour of its own tokens (±1..=64, each single
/// bit flipped) and thousands of random values with the registry's tag: not
/// one claims a transfer that was not given to it, every refusal is
/// `Invalid` (none of those values was ever issued), and every token still
/// claims its own object afterwards.
#[test]
fn near_and_random_neighbours_of_live_tokens_never_claim() {
    const LIVE: usize = 2000;
    let log = DropLog::new();
    let reg = Registry::new();
    let mut tokens = Vec::with_capacity(LIVE);
    for i in 0..LIVE {
        let h = reg.insert(Tracked::new(&log, i as u64)).expect("insert");
        tokens.push((reg.transfer(h).expect("transfer").into_raw(), h));
    }
    let live: HashSet<u64> = tokens.iter().map(|&(t, _)| t).collect();
    assert_eq!(live.len(), LIVE, "tokens are unique while live");
    let (mine, others): (Vec<_>, Vec<_>) = tokens.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mine: Vec<(u64, tether::Handle)> = mine.into_iter().map(|(_, &t)| t).collect();
    let others: Vec<(u64, tether::Handle)> = others.into_iter().map(|(_, &t)| t).collect();
    let my_set: HashSet<u64> = mine.iter().map(|&(t, _)| t).collect();
    let mut guesses = Vec::new();
    for &(t, _) in &mine {
        for d in 1..=64u64 {
            guesses.push(t.wrapping_add(d));
            guesses.push(t.wrapping_sub(d));
        }
        for bit in 0..53 {
            guesses.push(t ^ (1 << bit));
        }
    }
    // Random values carrying the registry's tag (bits 45..53 of a token).
    let tag_bits = tokens[0].0 & !((1u64 << 45) - 1);
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        guesses.push(tag_bits | (x & ((1 << 45) - 1)));
    }
    guesses.retain(|g| !my_set.contains(g));
    let n = guesses.len();
    let r = reg.clone();
    let (stolen, invalid) = join(spawn("guesser", move || {
        let mut stolen = Vec::new();
        let mut invalid = 0usize;
        for g in guesses {
            match r.claim_raw(g) {
                Ok(h) => stolen.push(h),
                Err(Error::Invalid(t)) => {
                    assert_eq!(t, g);
                    invalid += 1;
                }
                Err(e) => panic!("guess {g:#x}: unexpected {e:?}"),
            }
        }
        // Its own tokens are its own.
        for (t, h) in mine {
            assert_eq!(r.claim_raw(t), Ok(h));
            assert!(r.release(h).is_ok());
        }
        (stolen, invalid)
    }));
    assert!(
        stolen.is_empty(),
        "guesses claimed {} transfers",
        stolen.len()
    );
    assert_eq!(invalid, n, "every guess is Invalid: none was ever issued");
    // Nothing was lost: each other token still claims its own object.
    for (t, h) in others {
        assert!(t != 0 && t < LIMIT);
        assert_eq!(reg.claim_raw(t), Ok(h));
        assert_eq!(reg.count(h), Ok(1));
    }
    reg.pump();
    assert_eq!(log.count(), LIVE / 2);
    assert!(live.len() == LIVE);
}

/// Consecutive transfers do not give consecutive (or nearby) tokens, and a
/// token claimed or taken back is `TransferClaimed`, not `Invalid`.
#[test]
fn tokens_are_not_sequential_and_a_used_one_says_claimed() {
    let reg = Registry::new();
    let h = reg.insert(1u32).expect("insert");
    let mut prev = None;
    let mut used = Vec::new();
    for _ in 0..1000 {
        reg.retain(h).expect("retain");
        let t = reg.transfer(h).expect("transfer").into_raw();
        if let Some(p) = prev {
            let d: u64 = t.abs_diff(p);
            // Uniform over 2^45: within 2^10 with probability ~2^-34 a pair.
            assert!(d > 1 << 10, "tokens {p:#x} and {t:#x} are {d} apart");
        }
        prev = Some(t);
        used.push(t);
    }
    let (tx, rx) = mpsc::channel();
    let r = reg.clone();
    let tokens = used.clone();
    join(spawn("claimer", move || {
        for t in tokens {
            let h = r.claim_raw(t).expect("claim");
            r.release(h).expect("release");
        }
        tx.send(()).unwrap();
    }));
    rx.recv().unwrap();
    for t in used {
        assert_eq!(reg.claim_raw(t), Err(Error::TransferClaimed));
    }
    assert_eq!(reg.count(h), Ok(1));
}
