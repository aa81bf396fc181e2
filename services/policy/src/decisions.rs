//! The decisions of one tenant's policy, remembered per (access, action, object). A lookup
//! borrows its key — no allocation and no bookkeeping on the hot path, where a general cache
//! (moka) needs an owned key per lookup and records every read for its eviction policy. A
//! decision is cheap to recompute, so when the cap is reached the cache simply starts over.

use std::collections::HashMap;
use std::sync::RwLock;

use marina_core::access::Access;

/// access → action → object → allowed.
type Map = HashMap<Access, HashMap<String, HashMap<String, bool>>>;

/// Remembered decisions, at most `cap`.
#[derive(Debug)]
pub(crate) struct Decisions {
    cap: usize,
    inner: RwLock<(Map, usize)>,
}

impl Decisions {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: RwLock::new((HashMap::new(), 0)),
        }
    }

    /// The remembered decision, or `decide`'s (then remembered).
    pub(crate) fn get_or(
        &self,
        who: &Access,
        object: &str,
        action: &str,
        decide: impl FnOnce() -> bool,
    ) -> bool {
        {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if let Some(&allowed) = inner
                .0
                .get(who)
                .and_then(|by_action| by_action.get(action))
                .and_then(|by_object| by_object.get(object))
            {
                return allowed;
            }
        }
        let allowed = decide();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let (map, len) = &mut *inner;
        if *len >= self.cap {
            map.clear();
            *len = 0;
        }
        let by_object = map
            .entry(who.clone())
            .or_default()
            .entry(action.to_owned())
            .or_default();
        if by_object.insert(object.to_owned(), allowed).is_none() {
            *len += 1;
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_remembered_per_access_action_and_object_up_to_the_cap() {
        let d = Decisions::new(3);
        let (alice, bob) = (Access::new("alice", vec![]), Access::new("bob", vec!["x".into()]));
        let asked = std::cell::Cell::new(0);
        let ask = |v| {
            asked.set(asked.get() + 1);
            v
        };
        assert!(d.get_or(&alice, "tool:a", "call", || ask(true)));
        assert!(d.get_or(&alice, "tool:a", "call", || ask(false)), "remembered");
        assert!(
            !d.get_or(&alice, "tool:a", "read", || ask(false)),
            "another action"
        );
        assert!(!d.get_or(&bob, "tool:a", "call", || ask(false)), "another access");
        assert_eq!(asked.get(), 3);
        // The cap is reached: the next new decision starts the cache over.
        assert!(d.get_or(&bob, "tool:b", "call", || ask(true)));
        assert!(
            !d.get_or(&alice, "tool:a", "call", || ask(false)),
            "forgotten, asked again"
        );
        assert_eq!(asked.get(), 5);
    }
}
