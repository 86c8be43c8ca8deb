//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: a gateway's question about one
//! request, decided over the replica's view and counters exactly as the HTTP layers decide.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderName;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit as CurrentLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Duration as ProtoDuration, Struct, Value};
use tonic::{Request, Response, Status};

use super::descriptors::{self, Asked, Selects};
use super::metrics::{GrpcMetrics, Outcome};
use crate::auth::{identify_in, known};
use crate::domain::Role;
use crate::enforce::{Observer, POLICY, RATELIMIT, rate_limit_fields, refuses, why_frozen, why_refused};
use crate::limit::{Decision, Subject, Verdict, binding};
use crate::mode::effective;
use crate::replica::{Replica, View};

/// A problem type of the IETF rate-limit headers draft: its URI and its title.
struct ProblemType {
    uri: &'static str,
    title: &'static str,
}

/// A refusal by a rule.
const QUOTA_EXCEEDED: ProblemType = ProblemType {
    uri: "https://iana.org/assignments/http-problem-types#quota-exceeded",
    title: "Request cannot be satisfied as assigned quota has been exceeded",
};
/// A refusal by the freeze, or by a `closed` rule during an outage.
const REDUCED_CAPACITY: ProblemType = ProblemType {
    uri: "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
    title: "Request cannot be satisfied due to temporary reduced capacity",
};
/// The dynamic metadata key that marks a refusal that is not the client's doing (the freeze, a
/// `closed` rule while the counters are unreachable), which HTTP answers 503. Envoy answers
/// every `OVER_LIMIT` with one status; its local reply mapper can match this key (under the
/// filter's namespace, `envoy.filters.http.ratelimit`) and answer 503 (examples/envoy/).
pub const REFUSAL_KEY: &str = "valhalla_refusal";

/// The rate limit service over a replica.
pub struct RateLimiter {
    pub replica: Arc<Replica>,
    /// The domain this service decides for (`--grpc-domain`); another one has no rules here.
    pub domain: String,
    /// Whether callers authenticate by a client certificate that the TLS layer verified.
    pub mtls: bool,
    /// Called with every decision, as the HTTP limiter calls it (metrics, the status page).
    pub observe: Option<Observer>,
    pub metrics: GrpcMetrics,
}

#[tonic::async_trait]
impl RateLimitService for RateLimiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = Instant::now();
        let (outcome, answer) = match self.decide(&request).await {
            Ok((outcome, answer)) => (outcome, Ok(Response::new(answer))),
            Err((outcome, status)) => (outcome, Err(status)),
        };
        self.metrics.record(outcome, started.elapsed().as_secs_f64());
        answer
    }
}

type Failure = (Outcome, Status);

impl RateLimiter {
    async fn decide(
        &self,
        request: &Request<RateLimitRequest>,
    ) -> Result<(Outcome, RateLimitResponse), Failure> {
        let view = self.replica.view().await.map_err(|e| {
            let message = crate::text::one_line(&format!("the state cannot be read: {e}"));
            (Outcome::Unavailable, Status::unavailable(message))
        })?;
        self.authorize(request, &view)?;
        let call = request.get_ref();
        if call.domain != self.domain {
            // As envoyproxy/ratelimit answers a domain it has no configuration for.
            return Ok((Outcome::UnknownDomain, unlimited(call.descriptors.len())));
        }
        let asked = descriptors::read(&call.descriptors)
            .map_err(|e| (Outcome::InvalidArgument, Status::invalid_argument(e.to_string())))?;
        let presented = asked.key.and_then(|key| known(key, &view.clients));
        let now = (self.replica.clock)();
        let mode = effective(&view.maintenance, now);
        let admin = || Ok::<_, Infallible>(presented.is_some_and(|c| c.role == Role::Admin));
        let Ok(refused) = refuses(mode.mode, asked.write, admin);
        if refused {
            let (message, retry) = why_frozen(&mode, now);
            let retry = retry.and_then(|seconds| u64::try_from(seconds).ok());
            return Ok((Outcome::Frozen, frozen(asked.selects.len(), &message, retry)));
        }
        // The client an API key entry identifies counts under its name, as over HTTP.
        let client = asked.client.or(presented.map(|c| c.name.as_str()));
        let subject = Subject {
            global: true,
            ip: asked.ip,
            client,
            user: asked.user,
        };
        let hits = descriptors::hits(call.hits_addend, &call.descriptors);
        let matched = view.table.matching(&subject);
        let decision = self.replica.check_hits(&matched, hits).await;
        if let Some(observe) = &self.observe {
            observe(&decision, &subject);
        }
        let outcome = if decision.allowed {
            Outcome::Ok
        } else {
            Outcome::OverLimit
        };
        Ok((outcome, answer(&decision, &asked)))
    }

    /// Lets through a caller allowed to count: one whose client certificate the TLS layer
    /// verified, or one presenting the key of an active `gateway` client or of an operator or
    /// an admin. A reader may not spend budgets.
    fn authorize(&self, request: &Request<RateLimitRequest>, view: &View) -> Result<(), Failure> {
        if self.mtls && request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            return Ok(());
        }
        let unauthenticated = |message: &str| (Outcome::Unauthenticated, Status::unauthenticated(message));
        let caller = identify_in(request.metadata().as_ref(), &view.clients)
            .map_err(|e| unauthenticated(&e.to_string()))?
            .ok_or_else(|| {
                unauthenticated(
                    "present the API key of a gateway client in `authorization: Bearer <key>` metadata, or a client certificate",
                )
            })?;
        if caller.may_count() {
            Ok(())
        } else {
            Err((
                Outcome::PermissionDenied,
                Status::permission_denied(format!(
                    "client {} is a {} with role {}: every decision counts, so only a gateway client or an operator may ask",
                    caller.name, caller.client_type, caller.role
                )),
            ))
        }
    }
}

/// The answer for a domain without rules: OK for every descriptor.
fn unlimited(descriptors: usize) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![status(Code::Ok, None); descriptors],
        ..RateLimitResponse::default()
    }
}

/// The answer while the freeze refuses: every descriptor over the limit, with a problem body of
/// type `temporary-reduced-capacity`, and `Retry-After` when the mode's end is known (as HTTP
/// says it: an open-ended freeze names no time to come back).
fn frozen(descriptors: usize, message: &str, retry_seconds: Option<u64>) -> RateLimitResponse {
    let mut reset = status(Code::OverLimit, None);
    reset.duration_until_reset = retry_seconds.map(|s| seconds(s.saturating_mul(1000)));
    let mut headers = vec![problem_type()];
    headers.extend(retry_seconds.map(retry_after));
    RateLimitResponse {
        dynamic_metadata: Some(refusal("freeze")),
        overall_code: Code::OverLimit as i32,
        statuses: vec![reset; descriptors],
        response_headers_to_add: headers,
        raw_body: problem(&REDUCED_CAPACITY, message, &[]),
        ..RateLimitResponse::default()
    }
}

/// The answer for a decision: one status per descriptor (the binding verdict among the rules
/// it selects), the `RateLimit-Policy`/`RateLimit` headers, and on a refusal `Retry-After`
/// and a problem body.
fn answer(decision: &Decision, asked: &Asked<'_>) -> RateLimitResponse {
    let statuses = asked
        .selects
        .iter()
        .map(|selects| descriptor_status(decision, *selects))
        .collect();
    let mut headers = Vec::with_capacity(4);
    if let Some((policy, state)) = rate_limit_fields(decision) {
        headers.extend([header(&POLICY, policy), header(&RATELIMIT, state)]);
    }
    let mut raw_body = Vec::new();
    let mut dynamic_metadata = None;
    if !decision.allowed
        && let Some(binding) = decision.binding()
    {
        headers.extend([retry_after(binding.reset_seconds()), problem_type()]);
        let kind = if decision.unavailable() {
            dynamic_metadata = Some(refusal("counters_unreachable"));
            &REDUCED_CAPACITY
        } else {
            &QUOTA_EXCEEDED
        };
        let violated: Vec<&str> = decision
            .verdicts
            .iter()
            .filter(|v| !v.allowed && !v.rule.shadow)
            .map(|v| v.rule.header_name().trim_matches('"'))
            .collect();
        raw_body = problem(kind, &why_refused(decision), &violated);
    }
    RateLimitResponse {
        overall_code: if decision.allowed {
            Code::Ok
        } else {
            Code::OverLimit
        } as i32,
        statuses,
        response_headers_to_add: headers,
        raw_body,
        dynamic_metadata,
        ..RateLimitResponse::default()
    }
}

/// One descriptor's status: the binding verdict among the rules it selects (a refusing
/// enforced one, else the enforced one with the least left, else a shadow one); OK without a
/// limit when none applies.
fn descriptor_status(decision: &Decision, selects: Selects) -> DescriptorStatus {
    let own = decision
        .verdicts
        .iter()
        .filter(|v| selects.includes(v.rule.scope));
    let Some(binding) = binding(own) else {
        return status(Code::Ok, None);
    };
    let refused = !binding.allowed && !binding.rule.shadow;
    let mut status = status(if refused { Code::OverLimit } else { Code::Ok }, Some(binding));
    status.limit_remaining = binding.remaining;
    status.duration_until_reset = Some(seconds(binding.reset_ms));
    status
}

fn status(code: Code, verdict: Option<&Verdict>) -> DescriptorStatus {
    DescriptorStatus {
        code: code as i32,
        current_limit: verdict.map(current_limit),
        ..DescriptorStatus::default()
    }
}

/// A rule's budget as Envoy reads it: requests per SECOND, MINUTE, HOUR or DAY when the window
/// is exactly one of them, named as the `RateLimit` header names the rule (`user:alice`). Any
/// other window is not rescaled (a gateway would then report a budget nobody set): its unit
/// is UNKNOWN and its name carries the window in seconds (`user:alice;w=10`).
pub fn current_limit(verdict: &Verdict) -> CurrentLimit {
    let rule = &verdict.rule;
    let unit = match rule.quota.window_ms {
        1_000 => Unit::Second,
        60_000 => Unit::Minute,
        3_600_000 => Unit::Hour,
        86_400_000 => Unit::Day,
        _ => Unit::Unknown,
    };
    let name = rule.header_name().trim_matches('"');
    CurrentLimit {
        name: match unit {
            Unit::Unknown => format!("{name};w={}", rule.quota.window_ms / 1000),
            _ => name.to_owned(),
        },
        requests_per_unit: rule.quota.max,
        unit: unit as i32,
    }
}

fn seconds(ms: u64) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from(ms % 1000 * 1_000_000).unwrap_or(0),
    }
}

fn retry_after(seconds: u64) -> HeaderValue {
    header(&RETRY_AFTER, seconds.max(1).to_string())
}

/// The type of the problem body that goes with every refusal.
fn problem_type() -> HeaderValue {
    header(&CONTENT_TYPE, "application/problem+json".into())
}

fn header(name: &HeaderName, value: String) -> HeaderValue {
    HeaderValue {
        key: name.as_str().to_owned(),
        value,
        ..HeaderValue::default()
    }
}

/// The dynamic metadata of a refusal that is not the client's doing: `{REFUSAL_KEY: why}`.
fn refusal(why: &str) -> Struct {
    let value = Value {
        kind: Some(Kind::StringValue(why.to_owned())),
    };
    Struct {
        fields: [(REFUSAL_KEY.to_owned(), value)].into(),
    }
}

/// An RFC 9457 problem document (JSON), as the body the gateway answers a refusal with.
fn problem(kind: &ProblemType, detail: &str, violated: &[&str]) -> Vec<u8> {
    let mut problem = serde_json::json!({ "type": kind.uri, "title": kind.title, "detail": detail });
    if !violated.is_empty() {
        problem["violated-policies"] = violated.into();
    }
    problem.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;
    use crate::limit::{Quota, Rule};

    fn verdict(scope: Scope, key: &str, window_s: u64, allowed: bool, remaining: u32) -> Verdict {
        Verdict {
            rule: Arc::new(Rule::new(
                1,
                scope,
                key.into(),
                Quota {
                    window_ms: window_s * 1000,
                    max: 10,
                },
                false,
                crate::domain::OnOutage::DEFAULT,
            )),
            allowed,
            remaining,
            reset_ms: 2_500,
            outage: false,
        }
    }

    #[test]
    fn each_descriptor_reports_the_rules_it_selects() {
        let decision = Decision {
            allowed: false,
            verdicts: vec![
                verdict(Scope::Global, "*", 60, true, 8),
                verdict(Scope::User, "alice", 10, false, 0),
            ],
        };
        let asked = Asked {
            selects: vec![
                Selects::default(),
                Selects {
                    user: true,
                    ..Selects::default()
                },
            ],
            ..Asked::default()
        };
        let answer = answer(&decision, &asked);
        assert_eq!(answer.overall_code, Code::OverLimit as i32);
        let [global, user] = &answer.statuses[..] else {
            panic!("two statuses")
        };
        assert_eq!(global.code, Code::Ok as i32);
        assert_eq!(global.limit_remaining, 8);
        let limit = global.current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, limit.unit), (10, Unit::Minute as i32));
        assert_eq!(user.code, Code::OverLimit as i32);
        let limit = user.current_limit.as_ref().unwrap();
        // Ten seconds is no unit of Envoy's: the exact quota is in the name.
        assert_eq!(limit.unit, Unit::Unknown as i32);
        assert_eq!(limit.name, "user:alice;w=10");
        assert_eq!(user.duration_until_reset, Some(seconds(2_500)));
        let headers: Vec<(&str, &str)> = answer
            .response_headers_to_add
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        assert!(headers.contains(&("retry-after", "3")), "{headers:?}");
        assert!(headers.iter().any(|(k, _)| *k == "ratelimit-policy"));
        let body: serde_json::Value = serde_json::from_slice(&answer.raw_body).unwrap();
        assert_eq!(body["type"], QUOTA_EXCEEDED.uri);
        assert_eq!(body["violated-policies"], serde_json::json!(["user:alice"]));
    }

    #[test]
    fn a_freeze_refuses_every_descriptor_with_reduced_capacity() {
        let answer = frozen(2, "the platform is in maintenance", Some(30));
        assert_eq!(answer.overall_code, Code::OverLimit as i32);
        assert_eq!(answer.statuses.len(), 2);
        assert!(answer.statuses.iter().all(|s| s.code == Code::OverLimit as i32));
        let body: serde_json::Value = serde_json::from_slice(&answer.raw_body).unwrap();
        assert_eq!(body["type"], REDUCED_CAPACITY.uri);
        let headers: Vec<(&str, &str)> = answer
            .response_headers_to_add
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("content-type", "application/problem+json"),
                ("retry-after", "30")
            ]
        );
        assert_eq!(answer.dynamic_metadata, Some(refusal("freeze")));
        // An open-ended freeze names no time to come back, as over HTTP.
        let open = frozen(1, "the platform is in maintenance", None);
        assert_eq!(open.response_headers_to_add.len(), 1);
        assert_eq!(open.statuses[0].duration_until_reset, None);
    }
}
