//! Where a replica counts: in its own memory (the default), or in one Redis that every replica
//! shares, with each rule's `on_outage` policy deciding while Redis is unreachable.

mod circuit;
mod metrics;
mod redis;
mod refusals;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::metrics::CountingMetrics;
pub use self::redis::{Ask, CallError, RedisCounters, RedisOptions, SharedDecision, UrlError, WindowClock};

use self::circuit::Circuit;
use self::metrics::CallOutcome;
use self::refusals::Refusals;
use crate::domain::{CounterStore, OnOutage};
use crate::limit::{CounterKey, Decision, Limiter, Reading, Rule, Verdict};

/// How often a replica asks an unreachable Redis whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// How often a replica checks that reachable shared counters still do what requests need,
/// whether or not requests reach them (refusals remembered in memory, or no traffic at all):
/// `/readyz`, `/metrics` and the status page report what was probed, not what was inferred.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// How long a probe waits: one slow answer on a loaded machine is not an outage (a request's
/// own 50 ms timeout is for the request's sake; three of those in a row open the circuit).
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// What a `closed` rule tells a refused client while Redis is unreachable: retry in a second.
const CLOSED_RETRY_MS: u64 = 1_000;

/// The default key prefix in Redis.
pub const DEFAULT_PREFIX: &str = "valhalla-ops";

/// The default time a decision waits for Redis.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// How the counter store is doing, for `/readyz`, `/metrics` and the status page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub store: CounterStore,
    /// False while the shared counters are unreachable.
    pub reachable: bool,
    /// How long they have been unreachable, in whole seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable_seconds: Option<u64>,
}

/// A replica's counters: its memory, and the shared ones when configured.
#[derive(Debug)]
pub struct Counting {
    /// This replica's own counters: all of them without Redis, the `local` rules' during an
    /// outage with it.
    pub memory: Limiter,
    shared: Option<Arc<SharedCounters>>,
    pub metrics: CountingMetrics,
}

/// The shared counters and what a replica keeps beside them.
#[derive(Debug)]
struct SharedCounters {
    redis: RedisCounters,
    circuit: Circuit,
    refusals: Refusals,
    /// Shared counts this replica saw since its last snapshot: (window start, count) by counter.
    seen: std::sync::Mutex<std::collections::HashMap<CounterKey, (u64, u32)>>,
    /// The most counts `seen` holds (the memory counters' capacity).
    seen_capacity: usize,
}

impl Counting {
    /// Counting in this replica's memory only, holding at most about `capacity` counters.
    pub fn memory(capacity: usize) -> Counting {
        Counting {
            memory: Limiter::new(capacity),
            shared: None,
            metrics: CountingMetrics::default(),
        }
    }

    /// Counting in `redis`, shared by every replica that uses it.
    pub fn shared(capacity: usize, redis: RedisCounters) -> Counting {
        let mut metrics = CountingMetrics::default();
        metrics.script_calls = redis.script_calls.clone();
        Counting {
            metrics,
            shared: Some(Arc::new(SharedCounters {
                redis,
                circuit: Circuit::default(),
                refusals: Refusals::default(),
                seen: Default::default(),
                seen_capacity: capacity,
            })),
            ..Counting::memory(capacity)
        }
    }

    /// Which store counts.
    pub fn store(&self) -> CounterStore {
        match self.shared {
            None => CounterStore::Memory,
            Some(_) => CounterStore::Redis,
        }
    }

    /// How the store is doing.
    pub fn health(&self) -> Health {
        let open_for = self.shared.as_ref().and_then(|s| s.circuit.open_for());
        Health {
            store: self.store(),
            reachable: open_for.is_none(),
            unreachable_seconds: open_for.map(|d| d.as_secs()),
        }
    }

    /// Whether the shared counters are unreachable now, and how many outages this replica has
    /// seen begin; `None` without shared counters.
    pub fn outages(&self) -> Option<(bool, u64)> {
        self.shared
            .as_ref()
            .map(|s| (!s.circuit.is_closed(), s.circuit.openings()))
    }

    /// Completes after the shared counters next go down or come back; never without them.
    pub async fn outage_changed(&self) {
        match &self.shared {
            Some(s) => s.circuit.changed().await,
            None => std::future::pending().await,
        }
    }

    /// The counters when they are this replica's memory alone: then a decision needs no
    /// waiting.
    pub fn memory_only(&self) -> Option<&Limiter> {
        self.shared.is_none().then_some(&self.memory)
    }

    /// Decides about one request against the rules it matched (each with its counter) and
    /// counts it, as [`Limiter::check`] does, in the configured store. `now_ms` is this
    /// replica's clock: the memory counters' time, and the time of remembered refusals.
    pub async fn check(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64) -> Decision {
        self.decide(matched, now_ms, 1).await
    }

    /// [`check`](Self::check) for `hits` requests at once (a gateway's `hits_addend`): admitted
    /// and counted only if all of them fit, as [`Limiter::check_hits`] decides.
    pub async fn check_hits(
        &self,
        matched: &[(&Arc<Rule>, CounterKey)],
        now_ms: u64,
        hits: NonZeroU32,
    ) -> Decision {
        self.decide(matched, now_ms, hits.get()).await
    }

    /// What [`check`](Self::check) would decide, counting nothing: for a caller who may ask
    /// about a subject but not spend its budget.
    pub async fn peek(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64) -> Decision {
        self.decide(matched, now_ms, 0).await
    }

    /// Counts `hits` requests as [`check_hits`](Self::check_hits) does, or only asks about one
    /// as [`peek`](Self::peek) does when `hits` is 0.
    async fn decide(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64, hits: u32) -> Decision {
        let Some(shared) = &self.shared else {
            return self.in_memory(matched, now_ms, hits);
        };
        if matched.is_empty() {
            return Decision {
                allowed: true,
                verdicts: Vec::new(),
            };
        }
        // A shadow rule counts even the requests others refuse, so only Redis can answer
        // a request that one applies to.
        let shadowed = matched.iter().any(|(rule, _)| rule.shadow);
        if !shadowed && let Some(refused) = shared.refusals.check(matched, now_ms) {
            self.metrics.local_refusals.inc();
            return refused;
        }
        if !shared.circuit.is_closed() {
            return self.outage(matched, now_ms, hits);
        }
        let started = Instant::now();
        let ask = redis::Ask {
            matched,
            now_ms,
            hits,
        };
        let outcome = tokio::time::timeout(shared.redis.timeout, shared.redis.decide(ask)).await;
        let seconds = started.elapsed().as_secs_f64();
        let failure = match outcome {
            Ok(Ok(answer)) => {
                self.metrics.call(CallOutcome::Ok, seconds);
                shared.circuit.succeeded();
                shared.remember_counts(&answer.counted);
                if !answer.decision.allowed {
                    shared.refusals.remember(matched, &answer.decision, now_ms);
                }
                return answer.decision;
            }
            Ok(Err(e @ redis::CallError::NoAnswer(_))) => {
                self.metrics.call(CallOutcome::Timeout, seconds);
                redis::failure(&e)
            }
            Ok(Err(e)) => {
                self.metrics.call(CallOutcome::Error, seconds);
                redis::failure(&e)
            }
            Err(_) => {
                self.metrics.call(CallOutcome::Timeout, seconds);
                format!("no answer within {} ms", shared.redis.timeout.as_millis())
            }
        };
        if shared.circuit.failed() {
            unreachable(shared, &self.metrics, &failure);
        }
        self.outage(matched, now_ms, hits)
    }

    /// The decision in this replica's memory, counting `hits` (0: only asking).
    fn in_memory(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64, hits: u32) -> Decision {
        match NonZeroU32::new(hits) {
            Some(hits) => self.memory.check_hits(matched, now_ms, hits),
            None => self.memory.peek_matched(matched, now_ms),
        }
    }

    /// The decision while the shared counters are unreachable: `open` rules are left out,
    /// an enforced `closed` rule refuses (counting nothing), and `local` rules are decided
    /// in this replica's memory (counting `hits`).
    fn outage(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64, hits: u32) -> Decision {
        let policy = |p: OnOutage| move |(rule, _): &&(&Arc<Rule>, CounterKey)| rule.on_outage == p;
        for (rule, _) in matched {
            self.metrics.outage_verdict(rule.on_outage);
        }
        let closed: Vec<Verdict> = matched
            .iter()
            .filter(policy(OnOutage::Closed))
            .map(|(rule, _)| Verdict {
                rule: Arc::clone(rule),
                allowed: false,
                remaining: 0,
                reset_ms: CLOSED_RETRY_MS,
                outage: true,
            })
            .collect();
        if closed.iter().any(|v| !v.rule.shadow) {
            return Decision {
                allowed: false,
                verdicts: closed,
            };
        }
        let local: Vec<(&Arc<Rule>, CounterKey)> =
            matched.iter().filter(policy(OnOutage::Local)).copied().collect();
        let mut decision = self.in_memory(&local, now_ms, hits);
        for verdict in &mut decision.verdicts {
            verdict.outage = true;
        }
        decision.verdicts.extend(closed);
        decision
    }

    /// Counters counted since the last call, for the snapshot writer: this replica's own, and
    /// the shared ones it saw. Idle memory counters are forgotten.
    pub fn take_readings(&self, now_ms: u64) -> Vec<(CounterStore, Reading)> {
        let mut readings: Vec<(CounterStore, Reading)> = self
            .memory
            .take_dirty()
            .into_iter()
            .map(|r| (CounterStore::Memory, r))
            .collect();
        self.memory.sweep(now_ms);
        if let Some(shared) = &self.shared {
            let seen = std::mem::take(&mut *shared.seen.lock().unwrap_or_else(|e| e.into_inner()));
            readings.extend(seen.into_iter().map(|(key, (window_start_ms, count))| {
                let reading = Reading {
                    key,
                    window_start_ms,
                    count,
                };
                (CounterStore::Redis, reading)
            }));
        }
        readings
    }

    /// Connects to the shared counters at start, and from then on checks every
    /// `HEALTH_EVERY` that they do what requests need, for as long as this replica counts.
    /// If they do not, the replica is in an outage (said once, probing until they are back)
    /// instead of failing its first requests or reporting a health it only inferred.
    pub async fn connect(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        check_health(shared, &self.metrics).await;
        // The task ends with the counters it watches.
        let (watched, metrics) = (Arc::downgrade(shared), self.metrics.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEALTH_EVERY).await;
                let Some(shared) = watched.upgrade() else { return };
                check_health(&shared, &metrics).await;
            }
        });
    }

    /// The shared counters' URL without its password, when configured.
    pub fn shown_url(&self) -> Option<&str> {
        self.shared.as_ref().map(|s| s.redis.shown.as_str())
    }
}

/// Probes the shared counters while the circuit is closed; a failed probe opens it.
async fn check_health(shared: &Arc<SharedCounters>, metrics: &CountingMetrics) {
    if !shared.circuit.is_closed() {
        return; // The recovery probe is at work.
    }
    if let Err(failure) = shared.probe().await
        && shared.circuit.open()
    {
        unreachable(shared, metrics, &failure);
    }
}

/// Reports an outage (once: the circuit just opened) and starts probing for its end.
fn unreachable(shared: &Arc<SharedCounters>, metrics: &CountingMetrics, failure: &str) {
    metrics.outages.inc();
    metrics.up.set(0);
    tracing::error!(
        "the shared rate-limit counters at {} are unreachable ({}); each rule follows its on_outage policy until they answer again",
        shared.redis.shown,
        crate::text::one_line(failure)
    );
    recover(Arc::clone(shared), metrics.clone());
}

/// Asks Redis every [`PROBE_EVERY`] whether it does what requests need again, and closes the
/// circuit when it does.
fn recover(shared: Arc<SharedCounters>, metrics: CountingMetrics) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            if let Ok(()) = shared.probe().await {
                if let Some(down) = shared.circuit.close() {
                    metrics.up.set(1);
                    tracing::warn!(
                        "the shared rate-limit counters at {} answer again after {:.1} s; counting is shared again",
                        shared.redis.shown,
                        down.as_secs_f64()
                    );
                }
                return;
            }
        }
    });
}

impl SharedCounters {
    /// What requests need, asked of Redis within [`PROBE_WAIT`] (or the request timeout, if
    /// longer); the failure as the log says it.
    async fn probe(&self) -> Result<(), String> {
        let wait = self.redis.timeout.max(PROBE_WAIT);
        match tokio::time::timeout(wait, self.redis.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(redis::failure(&e)),
            Err(_) => Err(format!("no answer within {} ms", wait.as_millis())),
        }
    }

    /// Keeps the latest shared count of each counter this replica counted in, for snapshots.
    fn remember_counts(&self, counted: &[Reading]) {
        if counted.is_empty() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for r in counted {
            if seen.len() >= self.seen_capacity && !seen.contains_key(&r.key) {
                // A snapshot is an audit, not the count itself: past capacity, new subjects
                // wait for the next interval.
                continue;
            }
            let entry = seen.entry(r.key).or_insert((r.window_start_ms, r.count));
            if (r.window_start_ms, r.count) > *entry {
                *entry = (r.window_start_ms, r.count);
            }
        }
    }
}

#[cfg(test)]
mod tests;
