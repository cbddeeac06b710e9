//! Raw transfer tokens: unpredictable, unique while live, typed on misuse.
//!
//! [`Transfer::into_raw`](crate::Transfer::into_raw) turns a transfer into a
//! `u64` that crosses into JS or C. It is a capability (invariant 5): a
//! token that was not handed to you — a neighbour of yours, a successor, a
//! stale variable — must give nothing. So a token is not a counter. Its
//! bits, from the least significant:
//!
//! | bits   | field                                                       |
//! |--------|-------------------------------------------------------------|
//! | 0..45  | the transfer's serial under a keyed permutation of 2^45 values |
//! | 45..53 | registry tag (a token of another registry is `Invalid`)     |
//!
//! The permutation is a 6-round Feistel network over 46 bits with round keys
//! drawn per registry from std's randomly seeded `RandomState`, walked
//! until it lands below 2^45 (cycle walking keeps it a permutation of
//! `0..2^45`). Consequences:
//!
//! * Tokens are unique while live (a permutation of distinct serials), below
//!   2^53 and never 0 (the tag is never 0).
//! * A token's neighbours (`t ± 1`, `t ^ 1`, ...) decode to serials spread
//!   over 2^45 values: the chance one names a live transfer is at most
//!   (live transfers) / 2^45 — and it is an error, never a panic, when it
//!   does not.
//! * Claiming a token whose serial was issued and has since been claimed
//!   (or taken back) is [`Error::TransferClaimed`]; anything else that does
//!   not name a live transfer is [`Error::Invalid`].
//!
//! The keys are not secret from code running in the same process, and this
//! is not cryptography: the aim is that no mistake and no guess from
//! another thread's view of the numbers claims somebody else's transfer.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::limits::{GEN_BITS, INDEX_BITS, RAW_LIMIT};
use crate::{Error, Handle};

/// Bits of a raw transfer token below the registry tag.
const SERIAL_BITS: u32 = INDEX_BITS + GEN_BITS;
/// Serials (and permuted serials) are below this.
const SERIAL_LIMIT: u64 = 1 << SERIAL_BITS;
/// The Feistel network works on two halves of this many bits (46 in all, one
/// more than the domain, so the halves are equal).
const HALF_BITS: u32 = SERIAL_BITS.div_ceil(2);
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
const ROUNDS: usize = 6;

/// A keyed permutation of `0..2^45`.
#[derive(Clone)]
struct Permutation {
    keys: [u64; ROUNDS],
}

impl Permutation {
    /// Round keys from std's per-process random seed, varied per registry
    /// (`salt`).
    fn random(salt: u64) -> Self {
        let state = std::collections::hash_map::RandomState::new();
        let mut keys = [0; ROUNDS];
        for (i, k) in keys.iter_mut().enumerate() {
            let mut h = state.build_hasher();
            h.write_u64(salt);
            h.write_usize(i);
            *k = h.finish();
        }
        Permutation { keys }
    }

    /// The round function: 23 pseudo-random bits of `half` under `key`.
    #[inline]
    fn round(key: u64, half: u64) -> u64 {
        // splitmix64's finalizer: every input bit moves every output bit.
        let mut z = half.wrapping_add(key);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) & HALF_MASK
    }

    /// One pass of the network over `0..2^46`.
    fn encrypt_once(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> HALF_BITS, x & HALF_MASK);
        for &k in &self.keys {
            (l, r) = (r, l ^ Self::round(k, r));
        }
        l << HALF_BITS | r
    }

    /// The inverse of [`Permutation::encrypt_once`].
    fn decrypt_once(&self, y: u64) -> u64 {
        let (mut l, mut r) = (y >> HALF_BITS, y & HALF_MASK);
        for &k in self.keys.iter().rev() {
            (l, r) = (r ^ Self::round(k, l), l);
        }
        l << HALF_BITS | r
    }

    /// `x < 2^45` to its image below 2^45 (cycle walking: the 46-bit
    /// network is applied until the value falls in the domain again; on
    /// average twice).
    fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < SERIAL_LIMIT);
        let mut y = self.encrypt_once(x);
        while y >= SERIAL_LIMIT {
            y = self.encrypt_once(y);
        }
        y
    }

    /// The inverse of [`Permutation::apply`].
    fn invert(&self, y: u64) -> u64 {
        debug_assert!(y < SERIAL_LIMIT);
        let mut x = self.decrypt_once(y);
        while x >= SERIAL_LIMIT {
            x = self.decrypt_once(x);
        }
        x
    }
}

/// Raw transfer tokens in flight, and how to make and read them.
pub(crate) struct RawTransfers {
    /// Token → the transfer's handle (the transfer's hold is the registry's
    /// until the token is claimed or taken back).
    live: HashMap<u64, Handle>,
    /// Serials `1..next` have been issued (0 never is).
    next: u64,
    perm: Permutation,
}

impl RawTransfers {
    /// An empty set for a registry with the given salt (its serial).
    pub(crate) fn new(salt: u64) -> Self {
        RawTransfers {
            live: HashMap::new(),
            next: 1,
            perm: Permutation::random(salt),
        }
    }

    /// Registers a transfer of `h` and returns its token, for a registry
    /// with tag `tag`.
    pub(crate) fn issue(&mut self, tag: u64, h: Handle) -> u64 {
        loop {
            let serial = self.next;
            // 2^45 serials take years of transfers; then serials wrap,
            // skipping any token still live.
            self.next = if serial + 1 >= SERIAL_LIMIT {
                1
            } else {
                serial + 1
            };
            let token = tag << SERIAL_BITS | self.perm.apply(serial);
            if let std::collections::hash_map::Entry::Vacant(v) = self.live.entry(token) {
                v.insert(h);
                return token;
            }
        }
    }

    /// Takes the transfer of `token` out of the set: its hold is the
    /// caller's after `Ok`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a token this registry (tag `tag`) never issued,
    /// [`Error::TransferClaimed`] for one it issued that was claimed or taken
    /// back already.
    pub(crate) fn redeem(&mut self, tag: u64, token: u64) -> Result<Handle, Error> {
        if token >= RAW_LIMIT || token >> SERIAL_BITS != tag {
            return Err(Error::Invalid(token));
        }
        if let Some(h) = self.live.remove(&token) {
            return Ok(h);
        }
        let serial = self.perm.invert(token & (SERIAL_LIMIT - 1));
        Err(if serial != 0 && serial < self.next {
            Error::TransferClaimed
        } else {
            Error::Invalid(token)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permutation_inverts_and_stays_in_its_domain() {
        let p = Permutation::random(7);
        let mut x = 0x1234_5678_9abc_u64 % SERIAL_LIMIT;
        for i in 0..20_000u64 {
            for v in [i, SERIAL_LIMIT - 1 - i, x] {
                let y = p.apply(v);
                assert!(y < SERIAL_LIMIT);
                assert_eq!(p.invert(y), v);
            }
            x = (x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407))
                % SERIAL_LIMIT;
        }
    }

    #[test]
    fn consecutive_serials_give_unrelated_tokens() {
        let p = Permutation::random(1);
        let tokens: Vec<u64> = (1..1000).map(|s| p.apply(s)).collect();
        let close = tokens
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) < 1 << 10)
            .count();
        // Independent uniform values over 2^45 are within 2^10 of each
        // other with probability about 2^-34 per pair.
        assert_eq!(close, 0);
    }

    #[test]
    fn registries_get_different_keys() {
        let a = Permutation::random(1);
        let b = Permutation::random(2);
        assert_ne!(a.apply(1), b.apply(1));
    }

    #[test]
    fn tokens_are_classified() {
        let mut r = RawTransfers::new(3);
        let h = Handle::from_raw(1).unwrap();
        let t = r.issue(5, h);
        assert_eq!(t >> SERIAL_BITS, 5);
        assert_eq!(r.redeem(5, t + 1).err(), Some(Error::Invalid(t + 1)));
        assert_eq!(r.redeem(4, t).err(), Some(Error::Invalid(t)));
        assert_eq!(r.redeem(5, t), Ok(h));
        assert_eq!(r.redeem(5, t).err(), Some(Error::TransferClaimed));
    }
}
