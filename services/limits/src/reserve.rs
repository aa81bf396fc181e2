//! Tokens a node takes ahead from busy shared buckets. A bucket of a high rate (≥ 100/s) hands
//! the node that charged it, in the same script, up to 1 % of a second's worth of further
//! tokens (at most 256) when it has room for them; the node spends those on its next requests
//! without a round trip. Nothing is ever admitted beyond what the shared bucket allowed when
//! the tokens were taken — the limit stays cluster-wide and never over-admits — and tokens not
//! spent within [`RESERVE_TTL`] are dropped, so a node that stops receiving a bucket's requests
//! holds back at most that small slice (under 1 % of the rate, for a quarter of a second).
//! Buckets below 100/s are never reserved: each request is decided in Redis, exactly.
//!
//! A refusal is remembered too: when Redis answers that a bucket is full for another `w`, it
//! stays full at least that long whatever any node does (a theoretical arrival time only moves
//! forward), so the node refuses that bucket's requests itself until then — counted from when
//! it *sent* the check, so never longer than Redis would. A flood over a limit then costs Redis
//! one script per bucket and refill interval instead of one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use marina_core::settings::Rate;

/// How long tokens taken ahead may wait to be spent.
pub(crate) const RESERVE_TTL: Duration = Duration::from_millis(250);

/// The most tokens taken ahead at once for one bucket.
const MAX_AHEAD: u64 = 256;

/// Tokens to take ahead for a bucket of `rate` (0: none, every request goes to Redis).
pub(crate) fn ahead(rate: Rate) -> u64 {
    let per_sec = rate.count as f64 / rate.period.as_secs_f64();
    ((per_sec / 100.0) as u64).min(MAX_AHEAD)
}

#[derive(Debug)]
struct Reserve {
    tokens: u64,
    until: Instant,
    /// The bucket is full until then (see the module's comment).
    full_until: Option<Instant>,
}

impl Reserve {
    /// No tokens, nothing known.
    fn empty() -> Self {
        Self {
            tokens: 0,
            until: Instant::now(),
            full_until: None,
        }
    }
}

/// What this node can say about a request without Redis.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Local {
    /// The bucket at `index` is known to be full for another `wait`.
    Full { index: usize, wait: Duration },
    /// Which buckets a token was spent from (the others go to Redis).
    Taken(Vec<bool>),
}

/// This node's tokens taken ahead, per bucket key.
#[derive(Debug, Default)]
pub(crate) struct Reserves(Mutex<Map>);

type Map = HashMap<String, Reserve, foldhash::fast::RandomState>;

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

impl Reserves {
    /// A bucket of `keys` known to be full; else spend one token of each of `keys` that has a
    /// live reserve and say which ones were spent.
    pub(crate) fn take(&self, keys: &[&str]) -> Local {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // One probe per key: spend as we go, and put the tokens back in the rare case a later
        // bucket turns out to be full.
        let mut taken = vec![false; keys.len()];
        let mut full: Option<(usize, Duration)> = None;
        for (i, k) in keys.iter().enumerate() {
            let Some(r) = map.get_mut(*k) else { continue };
            if let Some(until) = r.full_until.filter(|u| *u > now) {
                let wait = until - now;
                if full.is_none_or(|(_, w)| wait > w) {
                    full = Some((i, wait));
                }
            } else if full.is_none() && r.tokens > 0 && r.until > now {
                r.tokens -= 1;
                taken[i] = true;
            }
        }
        match full {
            Some((index, wait)) => {
                give_back(&mut map, keys, &taken);
                Local::Full { index, wait }
            }
            None => Local::Taken(taken),
        }
    }

    /// Redis said bucket `key` is full until `until` (this node's clock, counted from when the
    /// check was sent).
    pub(crate) fn full(&self, key: &str, until: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            sweep(&mut map, Instant::now());
        }
        let r = map.entry(key.to_owned()).or_insert_with(Reserve::empty);
        r.full_until = Some(until);
    }

    /// Return the tokens [`Self::take`] spent for a request that was refused after all.
    pub(crate) fn give_back(&self, keys: &[&str], taken: &[bool]) {
        give_back(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()), keys, taken);
    }

    /// Keep `granted` tokens of each of `keys`, taken ahead just now.
    pub(crate) fn add(&self, keys: &[&str], granted: &[u64]) {
        if granted.iter().all(|g| *g == 0) {
            return;
        }
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            sweep(&mut map, now);
        }
        for (k, g) in keys.iter().zip(granted).filter(|(_, g)| **g > 0) {
            let r = map.entry((*k).to_owned()).or_insert_with(Reserve::empty);
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

fn give_back(map: &mut Map, keys: &[&str], taken: &[bool]) {
    for (k, _) in keys.iter().zip(taken).filter(|(_, t)| **t) {
        if let Some(r) = map.get_mut(*k) {
            r.tokens += 1;
        }
    }
}

/// Drop what no longer says anything: spent or expired tokens, past refusals.
fn sweep(map: &mut Map, now: Instant) {
    map.retain(|_, r| (r.until > now && r.tokens > 0) || r.full_until.is_some_and(|u| u > now));
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
        let taken = |v: [bool; 2]| Local::Taken(v.to_vec());
        assert_eq!(r.take(&keys), taken([false, false]));
        r.add(&[a], &[2]);
        assert_eq!(r.take(&keys), taken([true, false]));
        r.give_back(&keys, &[true, false]);
        assert_eq!(r.take(&keys), taken([true, false]));
        assert_eq!(r.take(&keys), taken([true, false]));
        assert_eq!(r.take(&keys), taken([false, false]), "two tokens, spent");
        r.add(&[b], &[1]);
        r.0.lock().unwrap().get_mut("b").unwrap().until = Instant::now();
        assert_eq!(r.take(&keys), taken([false, false]), "expired");
        // A bucket known to be full refuses at once, and only until then.
        r.full(b, Instant::now() + Duration::from_secs(60));
        assert!(matches!(r.take(&keys), Local::Full { index: 1, wait } if wait > Duration::from_secs(50)));
        r.full(b, Instant::now());
        assert_eq!(r.take(&keys), taken([false, false]));
    }
}
