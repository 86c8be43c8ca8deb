//! What the counter store reports to `/metrics`: calls to Redis and their latency, refusals
//! answered locally, outages, and the verdicts an outage policy made.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::OnOutage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: &'static str,
}

/// How a call to the shared counters ended.
#[derive(Debug, Clone, Copy)]
pub enum CallOutcome {
    Ok,
    Error,
    Timeout,
}

/// The counter store's metrics (clones count together).
#[derive(Debug, Clone)]
pub struct CountingMetrics {
    calls: [Counter; 3],
    call_seconds: Histogram,
    /// 1 while counting works as configured, 0 while the shared counters are unreachable.
    pub up: Gauge,
    pub outages: Counter,
    pub local_refusals: Counter,
    /// Script calls sent to Redis for decisions: fewer than the decisions when several wait
    /// for one call.
    pub script_calls: Counter,
    outage_verdicts: [Counter; 3],
    calls_family: Family<CallLabels, Counter>,
    policy_family: Family<PolicyLabels, Counter>,
}

impl Default for CountingMetrics {
    fn default() -> Self {
        let calls_family = Family::<CallLabels, Counter>::default();
        let calls = ["ok", "error", "timeout"]
            .map(|outcome| calls_family.get_or_create(&CallLabels { outcome }).clone());
        let policy_family = Family::<PolicyLabels, Counter>::default();
        let outage_verdicts = [OnOutage::Open, OnOutage::Closed, OnOutage::Local].map(|p| {
            policy_family
                .get_or_create(&PolicyLabels { policy: p.as_str() })
                .clone()
        });
        let up = Gauge::default();
        up.set(1);
        CountingMetrics {
            calls,
            // 0.1 ms to about 0.8 s.
            call_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            up,
            outages: Counter::default(),
            local_refusals: Counter::default(),
            script_calls: Counter::default(),
            outage_verdicts,
            calls_family,
            policy_family,
        }
    }
}

impl CountingMetrics {
    /// Counts one call to the shared counters and its latency.
    pub fn call(&self, outcome: CallOutcome, seconds: f64) {
        self.calls[outcome as usize].inc();
        self.call_seconds.observe(seconds);
    }

    /// Decisions asked of the shared counters so far, whatever their outcome.
    pub fn calls(&self) -> u64 {
        self.calls.iter().map(Counter::get).sum()
    }

    /// Counts a verdict made by a rule's outage policy.
    pub fn outage_verdict(&self, policy: OnOutage) {
        let index = match policy {
            OnOutage::Open => 0,
            OnOutage::Closed => 1,
            OnOutage::Local => 2,
        };
        self.outage_verdicts[index].inc();
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shared_counters_calls",
            "Decisions asked of the shared rate-limit counters (Redis) by outcome: ok, error, timeout",
            self.calls_family.clone(),
        );
        registry.register(
            "shared_counters_script_calls",
            "Script calls sent to the shared rate-limit counters; each carries every decision that arrived while the one before was in flight",
            self.script_calls.clone(),
        );
        registry.register(
            "shared_counters_call_duration_seconds",
            "Latency of calls to the shared rate-limit counters",
            self.call_seconds.clone(),
        );
        registry.register(
            "shared_counters_up",
            "1 while rate-limit counting works as configured; 0 while the shared counters are unreachable and rules follow their on_outage policy",
            self.up.clone(),
        );
        registry.register(
            "shared_counters_outages",
            "Times the shared rate-limit counters became unreachable",
            self.outages.clone(),
        );
        registry.register(
            "ratelimit_local_refusals",
            "Requests refused from this replica's memory of a shared refusal, without a call",
            self.local_refusals.clone(),
        );
        registry.register(
            "ratelimit_outage_verdicts",
            "Rate-limit verdicts made by a rule's on_outage policy while the shared counters were unreachable",
            self.policy_family.clone(),
        );
    }
}
