//! Locks spread over names: [`Stripes`].
//!
//! A daemon that must order updates of one name (a publisher's job and its
//! placements, a box's landing and expiry of one file) but not of different
//! names takes the lock of the name's stripe. One lock for everything, held
//! across a durable commit, serialises every name and keeps the store from
//! grouping commits; one lock per name is a map that grows with the names.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

/// `n` locks of type `L`; a name always maps to the same one.
#[derive(Debug)]
pub struct Stripes<L> {
    locks: Box<[L]>,
}

impl<L: Default> Stripes<L> {
    /// `n` locks (at least one).
    pub fn new(n: usize) -> Self {
        Stripes {
            locks: (0..n.max(1)).map(|_| L::default()).collect(),
        }
    }
}

impl<L> Stripes<L> {
    /// The lock of `name`'s stripe. The hash is fixed (not randomly keyed), so
    /// which names share a stripe is the same in every run.
    pub fn of(&self, name: &str) -> &L {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
        let stripe = usize::try_from(hash % self.locks.len() as u64).unwrap_or(0);
        &self.locks[stripe]
    }

    /// Every lock, always in the same order: whoever takes them all takes them
    /// in this order, and everyone else takes one.
    pub fn all(&self) -> impl Iterator<Item = &L> {
        self.locks.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::Stripes;

    #[test]
    fn a_name_always_gets_its_stripe_and_names_spread() {
        let stripes: Stripes<std::sync::Mutex<()>> = Stripes::new(8);
        let of = |name: &str| std::ptr::from_ref(stripes.of(name));
        assert_eq!(of("live/seg1.ts"), of("live/seg1.ts"));
        let distinct: std::collections::HashSet<_> =
            (0..64).map(|i| of(&format!("live/seg{i}.ts"))).collect();
        assert!(
            distinct.len() >= 6,
            "64 names over 8 stripes: {}",
            distinct.len()
        );
        assert!(distinct.len() <= 8);
        let one: Stripes<std::sync::Mutex<()>> = Stripes::new(0);
        assert_eq!(
            std::ptr::from_ref(one.of("a")),
            std::ptr::from_ref(one.of("b")),
            "asked for none, it still has one"
        );
    }
}
