//! A value that is read often and replaced whole now and then: what a reload swaps.

use std::sync::{Arc, RwLock};

/// Readers get the current `Arc<T>`; [`Swap::replace`] puts in a new one in one step, so no
/// reader sees half of an old value and half of a new one. Cloning shares the same slot.
#[derive(Debug)]
pub struct Swap<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Swap(self.0.clone())
    }
}

impl<T> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The value in force now.
    pub fn current(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value; holders of the old one keep it until they drop it.
    pub fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clone sees a replacement; a value taken before it stays as it was.
    #[test]
    fn replace_is_seen_by_every_clone() {
        let swap = Swap::new(1);
        let other = swap.clone();
        let before = swap.current();
        other.replace(2);
        assert_eq!((*before, *swap.current()), (1, 2));
    }
}
