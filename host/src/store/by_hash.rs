//! Values derived from a stored definition, kept by the definition's hash so
//! that the thousands of executions sharing one definition (stored once, by
//! hash) parse and check it once per process, not once per replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Values by definition hash, at most [`ByHash::CAPACITY`] of them (all are
/// dropped when it is full: a host runs a handful of definitions, and a
/// flood of distinct ones only costs the parsing this saves).
pub(crate) struct ByHash<V> {
    entries: Mutex<HashMap<String, Arc<V>>>,
}

impl<V> Default for ByHash<V> {
    fn default() -> Self {
        Self { entries: Mutex::new(HashMap::new()) }
    }
}

impl<V> ByHash<V> {
    /// Most values kept.
    pub(crate) const CAPACITY: usize = 1024;

    /// The value kept for `hash`, or the one `make` builds (kept when it is
    /// built; an error is returned and nothing kept). `make` runs without
    /// the lock held: two callers may build the same value, one is kept.
    pub(crate) fn get_or_try_make<E>(&self, hash: &str, make: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        if let Some(value) = self.entries.lock().expect("by-hash lock").get(hash) {
            return Ok(value.clone());
        }
        let value = Arc::new(make()?);
        let mut entries = self.entries.lock().expect("by-hash lock");
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        Ok(entries.entry(hash.to_string()).or_insert(value).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_per_hash_and_an_error_is_not_kept() {
        let kept = ByHash::<String>::default();
        let made = std::cell::Cell::new(0);
        let make = |text: &str| {
            made.set(made.get() + 1);
            Ok::<_, String>(text.to_string())
        };
        let first = kept.get_or_try_make("a", || make("one")).unwrap();
        let again = kept.get_or_try_make("a", || make("two")).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!((*again).as_str(), "one");
        assert_eq!(made.get(), 1);
        assert_eq!(kept.get_or_try_make("b", || Err::<String, _>("bad".to_string())), Err("bad".to_string()));
        assert_eq!(*kept.get_or_try_make("b", || make("fine")).unwrap(), "fine");
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let kept = ByHash::<usize>::default();
        for n in 0..ByHash::<usize>::CAPACITY * 2 + 1 {
            kept.get_or_try_make(&n.to_string(), || Ok::<_, ()>(n)).unwrap();
            assert!(kept.entries.lock().unwrap().len() <= ByHash::<usize>::CAPACITY);
        }
    }
}
