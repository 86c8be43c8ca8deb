//! The rate limit service's metrics: calls by outcome and their latency, on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a `ShouldRateLimit` call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decided: every enforced rule admits (shadow refusals included).
    Ok,
    /// Decided: a rule refuses.
    OverLimit,
    /// Refused by the maintenance freeze, before any rule counted.
    Frozen,
    /// Another domain than this service's: no rule applies.
    UnknownDomain,
    Unauthenticated,
    PermissionDenied,
    InvalidArgument,
    /// The state could not be read.
    Unavailable,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::OverLimit,
        Outcome::Frozen,
        Outcome::UnknownDomain,
        Outcome::Unauthenticated,
        Outcome::PermissionDenied,
        Outcome::InvalidArgument,
        Outcome::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::OverLimit => "over_limit",
            Outcome::Frozen => "frozen",
            Outcome::UnknownDomain => "unknown_domain",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::PermissionDenied => "permission_denied",
            Outcome::InvalidArgument => "invalid_argument",
            Outcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    outcome: &'static str,
}

/// Calls and latency; cheap to clone (the counters are shared).
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    /// One counter per outcome, made up front so counting takes no lookup.
    calls: [Counter; Outcome::ALL.len()],
    family: Family<CallLabels, Counter>,
    latency: Histogram,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        let family = Family::<CallLabels, Counter>::default();
        let calls = Outcome::ALL.map(|outcome| {
            family
                .get_or_create(&CallLabels {
                    outcome: outcome.label(),
                })
                .clone()
        });
        GrpcMetrics {
            calls,
            family,
            // 50 µs to about 1.6 s.
            latency: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
        }
    }
}

impl GrpcMetrics {
    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_ratelimit_calls",
            "ShouldRateLimit calls of the gateways by outcome",
            self.family.clone(),
        );
        registry.register(
            "grpc_ratelimit_call_duration_seconds",
            "ShouldRateLimit latency, from the decoded request to the answer",
            self.latency.clone(),
        );
    }

    /// Counts one call that ended with `outcome` after `seconds`.
    pub fn record(&self, outcome: Outcome, seconds: f64) {
        self.calls[outcome as usize].inc();
        self.latency.observe(seconds);
    }

    /// Calls that ended with `outcome` so far.
    pub fn calls(&self, outcome: Outcome) -> u64 {
        self.calls[outcome as usize].get()
    }
}
