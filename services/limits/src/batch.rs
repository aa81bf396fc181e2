//! Coalescing of concurrent rate-limit checks. Every request's buckets are still decided
//! atomically — all charged or none — by one Redis script, but the checks of one tenant that
//! arrive while a script of that tenant is running wait for it to finish and then share the next
//! execution: one round trip, one script call, each bucket read and written once per batch. An
//! idle node sends a lone check at once (no added latency); a busy one sends fewer, larger
//! scripts, which is what keeps the limiter's cost per call small on the gateway and on Redis.
//!
//! Batches never mix tenants: every key of one script carries the same `{tenant}` hash tag, so
//! the limiter works unchanged on Redis Cluster. The batch runs in a task of its own, so a
//! request that goes away while it waits cannot strand the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use marina_core::store::{RedisStore, StoreError};
use tokio::sync::oneshot;

/// The most checks one script carries (its keys stay well within what Redis takes at once).
const MAX_BATCH: usize = 64;

/// One request's buckets: their keys, and for each its interval and tolerance (µs) and how many
/// tokens beyond the request's own to take ahead for the node, if the bucket has room for them.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) keys: Vec<String>,
    pub(crate) params: Vec<(u64, u64, u64)>,
}

/// The script's verdict on one check: `Ok(extra tokens granted per bucket)` when charged,
/// `Err((index, wait µs))` when the bucket at `index` is full (and nothing was charged).
pub(crate) type Verdict = Result<Vec<u64>, (usize, u64)>;

#[derive(Debug)]
struct Waiting {
    check: Check,
    tx: oneshot::Sender<Result<Verdict, StoreError>>,
}

/// Checks waiting per tenant. A tenant is present while batches of its checks are running; the
/// checks queued under it go in the next one.
#[derive(Debug, Default)]
struct Lanes(Mutex<HashMap<String, Lane>>);

#[derive(Debug, Default)]
struct Lane {
    queue: Vec<Waiting>,
    /// Tasks sending this tenant's batches (at most [`MAX_IN_FLIGHT`]).
    drivers: usize,
}

/// Batches of one tenant in flight at once: two, so that the gateway goes on serving (and
/// queueing the next batch) while Redis runs one, instead of waiting idle for it.
const MAX_IN_FLIGHT: usize = 2;

/// Sends the checks of each tenant to Redis in batches (see the module's comment).
#[derive(Debug, Clone)]
pub(crate) struct Coalescer {
    store: Arc<RedisStore>,
    script: Arc<redis::Script>,
    lanes: Arc<Lanes>,
}

impl Coalescer {
    pub(crate) fn new(store: Arc<RedisStore>) -> Self {
        Self {
            store,
            script: Arc::new(redis::Script::new(GCRA_BATCH)),
            lanes: Arc::default(),
        }
    }

    /// Decide `check` for `tenant`, in the next batch of that tenant's checks.
    pub(crate) async fn check(&self, tenant: &str, check: Check) -> Result<Verdict, StoreError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut lanes = self.lanes.0.lock().unwrap_or_else(|p| p.into_inner());
            let lane = match lanes.get_mut(tenant) {
                Some(lane) => lane,
                None => lanes.entry(tenant.to_owned()).or_default(),
            };
            lane.queue.push(Waiting { check, tx });
            let start = lane.drivers < MAX_IN_FLIGHT;
            if start {
                lane.drivers += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().drive(tenant.to_owned()));
        }
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the rate-limit batch was dropped".into())))
    }

    /// Run batches of `tenant`'s checks until none is waiting.
    async fn drive(self, tenant: String) {
        loop {
            let batch: Vec<Waiting> = {
                let mut lanes = self.lanes.0.lock().unwrap_or_else(|p| p.into_inner());
                let Some(lane) = lanes.get_mut(&tenant) else {
                    return;
                };
                if lane.queue.is_empty() {
                    lane.drivers -= 1;
                    if lane.drivers == 0 {
                        lanes.remove(&tenant);
                    }
                    return;
                }
                let n = lane.queue.len().min(MAX_BATCH);
                lane.queue.drain(..n).collect()
            };
            let (mut keys, mut args) = (Vec::new(), Vec::<u64>::new());
            for w in &batch {
                args.push(w.check.keys.len() as u64);
                for (key, (interval, tolerance, extra)) in w.check.keys.iter().zip(&w.check.params) {
                    keys.push(key.clone());
                    args.extend([*interval, *tolerance, *extra]);
                }
            }
            let reply: Result<Vec<String>, StoreError> =
                self.store.eval_script(&self.script, keys, args).await;
            match reply {
                Ok(verdicts) if verdicts.len() == batch.len() => {
                    for (w, v) in batch.into_iter().zip(verdicts) {
                        let _ = w.tx.send(parse(&v));
                    }
                }
                Ok(_) => {
                    for w in batch {
                        let _ = w.tx.send(Err(StoreError::Corrupt(
                            "unexpected rate-limit script reply".into(),
                        )));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for w in batch {
                        let _ = w.tx.send(Err(StoreError::Unavailable(msg.clone())));
                    }
                }
            }
        }
    }
}

/// `1[:<extra granted>...]`, or `0:<index>:<wait µs>`.
fn parse(v: &str) -> Result<Verdict, StoreError> {
    let corrupt = || StoreError::Corrupt("unexpected rate-limit script reply".into());
    let mut parts = v.split(':');
    match parts.next() {
        Some("1") => parts
            .map(|g| g.parse().map_err(|_| corrupt()))
            .collect::<Result<Vec<u64>, _>>()
            .map(Ok),
        Some("0") => match (parts.next().map(str::parse), parts.next().map(str::parse)) {
            (Some(Ok(i)), Some(Ok(wait))) => Ok(Err((i, wait))),
            _ => Err(corrupt()),
        },
        _ => Err(corrupt()),
    }
}

/// GCRA over a batch of checks, in order, atomically. ARGV per check: the number of its buckets,
/// then per bucket its interval and tolerance (µs) and the tokens wanted ahead; KEYS: the
/// buckets of every check, in order. Returns one verdict per check: `1:<granted>...` when all
/// its buckets had room (each is charged one, plus the tokens ahead that fit within its
/// tolerance: never more than the bucket allows), else `0:<index of the fullest>:<µs to wait>`
/// (none is charged). Each key is read once and written once, with its final theoretical
/// arrival time; the clock is Redis's.
const GCRA_BATCH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats, out = {}, {}
local k, a = 1, 1
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  a = a + 1
  local worst, worst_i, news = 0, 0, {}
  for i = 1, n do
    local key = KEYS[k + i - 1]
    local interval, tolerance, extra = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    local tat = tats[key]
    if tat == nil then tat = tonumber(redis.call('GET', key) or now) end
    if tat < now then tat = now end
    local wait = tat - now - tolerance
    if wait > worst then worst, worst_i = wait, i end
    news[i] = {tat + interval, interval, tolerance, extra}
  end
  if worst > 0 then
    out[#out + 1] = '0:' .. (worst_i - 1) .. ':' .. string.format('%.0f', worst)
  else
    local verdict = '1'
    for i = 1, n do
      local tat, interval, tolerance, extra = news[i][1], news[i][2], news[i][3], news[i][4]
      local room = math.floor((now + tolerance - tat) / interval) + 1
      local granted = math.max(0, math.min(extra, room))
      tats[KEYS[k + i - 1]] = tat + granted * interval
      verdict = verdict .. ':' .. granted
    end
    out[#out + 1] = verdict
  end
  k = k + n
end
for key, tat in pairs(tats) do
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return out";
