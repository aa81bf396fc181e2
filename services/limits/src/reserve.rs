//! Tokens a node takes ahead from busy shared buckets. A bucket of a high rate (≥ 100/s) hands
//! the node that charged it, in the same script, up to 1 % of a second's worth of further
//! tokens (at most 64) when it has room for them; the node spends those on its next requests
//! without a round trip. Nothing is ever admitted beyond what the shared bucket allowed when
//! the tokens were taken — the limit stays cluster-wide and never over-admits — and tokens not
//! spent within [`RESERVE_TTL`] are dropped, so a node that stops receiving a bucket's requests
//! holds back at most that small slice (under 1 % of the rate, for a quarter of a second).
//! Buckets below 100/s are never reserved: each request is decided in Redis, exactly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use marina_core::settings::Rate;

/// How long tokens taken ahead may wait to be spent.
pub(crate) const RESERVE_TTL: Duration = Duration::from_millis(250);

/// The most tokens taken ahead at once for one bucket.
const MAX_AHEAD: u64 = 64;

/// Tokens to take ahead for a bucket of `rate` (0: none, every request goes to Redis).
pub(crate) fn ahead(rate: Rate) -> u64 {
    let per_sec = rate.count as f64 / rate.period.as_secs_f64();
    ((per_sec / 100.0) as u64).min(MAX_AHEAD)
}

#[derive(Debug)]
struct Reserve {
    tokens: u64,
    until: Instant,
}

/// This node's tokens taken ahead, per bucket key.
#[derive(Debug, Default)]
pub(crate) struct Reserves(Mutex<HashMap<String, Reserve>>);

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

impl Reserves {
    /// Spend one token of each of `keys` that has a live reserve; which ones were spent.
    pub(crate) fn take(&self, keys: &[&str]) -> Vec<bool> {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .map(|k| match map.get_mut(*k) {
                Some(r) if r.tokens > 0 && r.until > now => {
                    r.tokens -= 1;
                    true
                }
                _ => false,
            })
            .collect()
    }

    /// Return the tokens [`Self::take`] spent for a request that was refused after all.
    pub(crate) fn give_back(&self, keys: &[&str], taken: &[bool]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (k, _) in keys.iter().zip(taken).filter(|(_, t)| **t) {
            if let Some(r) = map.get_mut(*k) {
                r.tokens += 1;
            }
        }
    }

    /// Keep `granted` tokens of each of `keys`, taken ahead just now.
    pub(crate) fn add(&self, keys: &[&str], granted: &[u64]) {
        if granted.iter().all(|g| *g == 0) {
            return;
        }
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, r| r.until > now && r.tokens > 0);
        }
        for (k, g) in keys.iter().zip(granted).filter(|(_, g)| **g > 0) {
            let r = map.entry((*k).to_owned()).or_insert(Reserve {
                tokens: 0,
                until: now,
            });
            // Older tokens left over are dropped with the old deadline: never more than one
            // slice is held.
            if r.until <= now {
                r.tokens = 0;
            }
            r.tokens = (r.tokens + g).min(2 * MAX_AHEAD);
            r.until = now + RESERVE_TTL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busy_buckets_are_reserved_and_only_a_slice() {
        let rate = |s: &str| s.parse::<Rate>().unwrap();
        assert_eq!(ahead(rate("20/s")), 0);
        assert_eq!(ahead(rate("5999/min")), 0);
        assert_eq!(ahead(rate("1000/s")), 10);
        assert_eq!(ahead(rate("1000000/s")), MAX_AHEAD);
    }

    #[test]
    fn tokens_are_spent_returned_and_expire() {
        let r = Reserves::default();
        let (a, b) = ("a", "b");
        let keys = [a, b];
        assert_eq!(r.take(&keys), [false, false]);
        r.add(&[a], &[2]);
        assert_eq!(r.take(&keys), [true, false]);
        r.give_back(&keys, &[true, false]);
        assert_eq!(r.take(&keys), [true, false]);
        assert_eq!(r.take(&keys), [true, false]);
        assert_eq!(r.take(&keys), [false, false], "two tokens, spent");
        r.add(&[b], &[1]);
        r.0.lock().unwrap().get_mut("b").unwrap().until = Instant::now();
        assert_eq!(r.take(&keys), [false, false], "expired");
    }
}
