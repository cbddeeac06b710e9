//! Registry tags: allocated among the registries alive, not by creation.
//!
//! A handle carries its registry's tag (8 bits, `1..=MAX_TAG`), so a handle
//! of one registry used with another is [`Error::ForeignRegistry`]
//! (invariant 4). Tags are assigned from a process-wide free set:
//!
//! * While at most [`MAX_TAG`] (255) registries are alive, every live
//!   registry has its own tag, whatever was created and dropped before:
//!   foreign detection between live registries is exact.
//! * A dropped registry's tag goes to the *back* of the free queue, so it is
//!   reused as late as possible: a handle of a dropped registry is also
//!   rejected (`ForeignRegistry`) until 255 more registries have been
//!   created after it — more precisely, until its tag comes round again.
//! * Beyond 255 live registries, a new registry shares the tag of the live
//!   registry that has held its tag the longest (round robin over sharers,
//!   see [`TagAlloc::alloc`]). Two registries sharing a tag cannot tell each
//!   other's handles apart from their own: such a handle is then checked as
//!   if it were the registry's own — `Invalid`, `Stale` or `NotHeld` unless
//!   it happens to name a live object the calling thread may access there.
//!   A tag is free again only when its last sharer is dropped.
//!
//! [`Error::ForeignRegistry`]: crate::Error::ForeignRegistry

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::limits::MAX_TAG;

/// The process-wide tag allocator.
///
/// A std mutex, outside loom's model: tags are not part of any protocol
/// between a registry's threads, only between registries.
static TAGS: Mutex<TagAlloc> = Mutex::new(TagAlloc::new());

/// Free tags in the order they were freed, and how many live registries use
/// each tag.
#[derive(Debug)]
struct TagAlloc {
    /// Free tags, least recently freed first. Filled with `1..=MAX_TAG` on
    /// first use.
    free: VecDeque<u8>,
    /// `users[t]`: live registries with tag `t` (index 0 unused).
    users: [u32; MAX_TAG as usize + 1],
    /// Whether `free` was filled.
    ready: bool,
    /// Where the next shared tag is looked for when none is free.
    share_next: u8,
}

impl TagAlloc {
    const fn new() -> Self {
        TagAlloc {
            free: VecDeque::new(),
            users: [0; MAX_TAG as usize + 1],
            ready: false,
            share_next: 1,
        }
    }

    /// The least recently freed tag, or, with none free, a tag shared with
    /// live registries: round robin, so sharing spreads evenly.
    fn alloc(&mut self) -> u8 {
        if !self.ready {
            self.free.extend(1..=MAX_TAG as u8);
            self.ready = true;
        }
        let tag = match self.free.pop_front() {
            Some(tag) => tag,
            None => {
                let tag = self.share_next;
                self.share_next = if tag as u64 == MAX_TAG { 1 } else { tag + 1 };
                tag
            }
        };
        self.users[tag as usize] += 1;
        tag
    }

    /// One user of `tag` fewer; the tag is free when it has none.
    fn free(&mut self, tag: u8) {
        let users = &mut self.users[tag as usize];
        debug_assert!(*users > 0, "tag {tag} freed more often than allocated");
        *users = users.saturating_sub(1);
        if *users == 0 {
            self.free.push_back(tag);
        }
    }
}

/// A tag for a new registry (see the module docs).
///
/// In a child process after `fork()` the allocator's lock may have been held
/// by a parent thread that does not exist here: the child gets tag 1 without
/// locking (every call on a registry fails with `Forked` there anyway).
pub(crate) fn alloc() -> u64 {
    if crate::fork::forked() {
        return 1;
    }
    let mut tags = TAGS.lock().unwrap_or_else(|e| e.into_inner());
    u64::from(tags.alloc())
}

/// Gives a dropped registry's tag back (never in a forked child: see
/// [`alloc`]).
pub(crate) fn free(tag: u64) {
    if crate::fork::forked() {
        return;
    }
    let Ok(tag) = u8::try_from(tag) else {
        return;
    };
    let mut tags = TAGS.lock().unwrap_or_else(|e| e.into_inner());
    tags.free(tag);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_tags_are_distinct_whatever_was_dropped_before() {
        let mut a = TagAlloc::new();
        let x = a.alloc();
        for _ in 0..10_000 {
            let t = a.alloc();
            assert_ne!(t, x);
            a.free(t);
        }
        let live: Vec<u8> = (0..MAX_TAG - 1).map(|_| a.alloc()).collect();
        let mut all = live.clone();
        all.push(x);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), MAX_TAG as usize, "255 live registries, 255 tags");
    }

    #[test]
    fn a_freed_tag_is_reused_last() {
        let mut a = TagAlloc::new();
        let t = a.alloc();
        a.free(t);
        // Every other tag comes first.
        for _ in 0..MAX_TAG - 1 {
            assert_ne!(a.alloc(), t);
        }
        assert_eq!(a.alloc(), t);
    }

    #[test]
    fn beyond_255_live_tags_are_shared_and_freed_with_their_last_user() {
        let mut a = TagAlloc::new();
        let first: Vec<u8> = (0..MAX_TAG).map(|_| a.alloc()).collect();
        let shared = a.alloc();
        assert_eq!(shared, first[0], "the first shared tag is tag 1");
        // Tag 1 has two users: freeing one keeps it taken.
        a.free(first[0]);
        assert_eq!(a.alloc(), 2, "nothing free: the next tag is shared");
        // Its last user gone, tag 1 is free and comes back.
        a.free(shared);
        assert_eq!(a.alloc(), 1);
    }
}
