//! The rate-limit layer: each request is checked against every rule that applies to it (global,
//! its IP, its client, its `X-User-Id`); over a limit it gets 429 with `Retry-After`, and every
//! limited answer carries the `RateLimit-Policy` and `RateLimit` fields of the IETF httpapi draft.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{Enforcer, Gate, Gating, Passage, bad_request, caller, client_ip};
use crate::api_error::ApiError;
use crate::auth::user_id;
use crate::domain::ClientName;
use crate::limit::{Decision, Subject};
use crate::replica::View;

/// The rate limiter: every enforced rule that applies must admit the request.
pub struct RateLimit;

impl Gate for RateLimit {
    fn pass(enforcer: &Arc<Enforcer>, mut request: Request) -> Gating {
        if (enforcer.unlimited)(request.uri().path()) {
            return Gating::Now(Passage::Admitted(request, HeaderMap::new()));
        }
        let replica = &enforcer.replica;
        if let Some(memory) = replica.counting.memory_only()
            && let Some(view) = replica.view_now()
        {
            let now_ms = replica.now_ms();
            let mut client = None;
            let outcome = match subject(enforcer, &view, &mut request, &mut client) {
                Ok(Some(subject)) => {
                    let decision = memory.check_matched(&view.table.matching(&subject), now_ms);
                    verdict(enforcer, &decision, &subject)
                }
                Ok(None) => Ok(HeaderMap::new()),
                Err(refusal) => Err(refusal),
            };
            return Gating::Now(passage(request, outcome));
        }
        let enforcer = Arc::clone(enforcer);
        Gating::Later(Box::pin(async move {
            let replica = &enforcer.replica;
            let view = match replica.view().await {
                Ok(view) => view,
                Err(e) => return Passage::Refused(ApiError::from(e).into_response()),
            };
            let mut client = None;
            let outcome = match subject(&enforcer, &view, &mut request, &mut client) {
                Ok(Some(subject)) => {
                    let decision = replica.check(&view.table, &subject).await;
                    verdict(&enforcer, &decision, &subject)
                }
                Ok(None) => Ok(HeaderMap::new()),
                Err(refusal) => Err(refusal),
            };
            passage(request, outcome)
        }))
    }
}

/// Whom a request is counted as, when `view` has rules: every rule's subject (the caller's
/// client, kept in `client`; the client's address; the end user), or the answer to ambiguous
/// identity headers.
#[expect(
    clippy::result_large_err,
    reason = "the refusal is this request's answer, moved once on its way out"
)]
fn subject<'r>(
    enforcer: &Enforcer,
    view: &View,
    request: &'r mut Request,
    client: &'r mut Option<ClientName>,
) -> Result<Option<Subject<'r>>, Response> {
    if view.table.is_empty() {
        return Ok(None);
    }
    *client = caller(request, view).map_err(bad_request)?.map(|c| c.name);
    let request = &*request;
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_ip(c.0.ip(), request.headers(), &enforcer.trusted_proxies));
    // A second `X-User-Id` would otherwise be a fresh budget for every request.
    let user = user_id(request.headers()).map_err(bad_request)?;
    let client = client.as_ref().map(|c| c.as_str());
    if (enforcer.own_rules_only)(request.uri().path()) {
        return Ok(Some(Subject {
            global: false,
            ip: None,
            client,
            user: None,
        }));
    }
    Ok(Some(Subject {
        global: true,
        ip,
        client,
        user,
    }))
}

/// What a decision means for the request: the rate-limit headers to add to its answer, or the
/// refusal (with them).
#[expect(
    clippy::result_large_err,
    reason = "the refusal is this request's answer, moved once on its way out"
)]
fn verdict(enforcer: &Enforcer, decision: &Decision, subject: &Subject<'_>) -> Result<HeaderMap, Response> {
    if let Some(observe) = &enforcer.observe {
        observe(decision, subject);
    }
    let mut headers = HeaderMap::new();
    rate_limit_headers(decision, &mut headers);
    if decision.allowed {
        Ok(headers)
    } else {
        let mut response = refusal(decision);
        response.headers_mut().extend(headers);
        Err(response)
    }
}

fn passage(request: Request, outcome: Result<HeaderMap, Response>) -> Passage {
    match outcome {
        Ok(headers) => Passage::Admitted(request, headers),
        Err(refusal) => Passage::Refused(refusal),
    }
}

/// The 429 for a refused request, with `Retry-After`; a 503 when a `closed` rule refuses
/// because the shared counters are unreachable.
fn refusal(decision: &Decision) -> Response {
    let message = why_refused(decision);
    let Some(binding) = decision.binding() else {
        return ApiError::RateLimited(message).into_response();
    };
    let error = if decision.unavailable() {
        ApiError::CountersUnreachable(message)
    } else {
        ApiError::RateLimited(message)
    };
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(binding.reset_seconds()));
    response
}

/// Why `decision` refuses, in one line, for HTTP and the gateways alike.
pub fn why_refused(decision: &Decision) -> String {
    let Some(binding) = decision.binding() else {
        return "rate limit exceeded".into();
    };
    let rule = &binding.rule;
    if decision.unavailable() {
        format!(
            "the rate-limit counters are unreachable and the {} rule {} refuses while they are (on_outage: closed); retry in {} s",
            rule.scope,
            rule.key,
            binding.reset_seconds()
        )
    } else if rule.quota.max == 0 {
        format!("requests are blocked by the {} rule {}", rule.scope, rule.key)
    } else if binding.remaining > 0 {
        // More at once than are left (a gateway's `hits_addend`).
        format!(
            "rate limit exceeded: the {} rule {} has {} of {} requests per {} s left, fewer than asked at once; retry in {} s",
            rule.scope,
            rule.key,
            binding.remaining,
            rule.quota.max,
            rule.quota.window_ms / 1000,
            binding.reset_seconds()
        )
    } else {
        format!(
            "rate limit exceeded: the {} rule {} allows {} requests per {} s; retry in {} s",
            rule.scope,
            rule.key,
            rule.quota.max,
            rule.quota.window_ms / 1000,
            binding.reset_seconds()
        )
    }
}

/// The `RateLimit-Policy` header of the IETF draft.
pub static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header of the IETF draft.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Sets `RateLimit-Policy` (each rule that applies: `q` requests per `w` seconds) and
/// `RateLimit` (what is left: `r` requests, `t` seconds until the quota comes back). Shadow
/// rules are listed with a `shadow:` prefix; they never refuse.
pub fn rate_limit_headers(decision: &Decision, headers: &mut HeaderMap) {
    let Some((policy, state)) = rate_limit_fields(decision) else {
        return;
    };
    for (header, value) in [(&POLICY, policy), (&RATELIMIT, state)] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(header.clone(), value);
        }
    }
}

/// The values of `RateLimit-Policy` and `RateLimit` for `decision`, none when no rule applies:
/// what [`rate_limit_headers`] sets, for a gateway to set.
pub fn rate_limit_fields(decision: &Decision) -> Option<(String, String)> {
    if decision.verdicts.is_empty() {
        return None;
    }
    let mut policy = String::with_capacity(128);
    let mut state = String::with_capacity(128);
    // Numbers by `itoa`: this runs for every limited request, and `format!` cost more than the
    // counting.
    let mut number = itoa::Buffer::new();
    for (i, verdict) in decision.verdicts.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        policy.push_str(separator);
        policy.push_str(&verdict.rule.policy);
        state.push_str(separator);
        state.push_str(verdict.rule.header_name());
        state.push_str(";r=");
        state.push_str(number.format(verdict.remaining));
        state.push_str(";t=");
        state.push_str(number.format(verdict.reset_seconds()));
    }
    Some((policy, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;
    use crate::limit::{Quota, Rule, Verdict};

    fn verdict(scope: Scope, key: &str, shadow: bool, remaining: u32) -> Verdict {
        Verdict {
            rule: Arc::new(Rule::new(
                9,
                scope,
                key.into(),
                Quota {
                    window_ms: 60_000,
                    max: 100,
                },
                shadow,
                crate::domain::OnOutage::DEFAULT,
            )),
            allowed: true,
            remaining,
            reset_ms: 30_500,
            outage: false,
        }
    }

    #[test]
    fn headers_follow_the_draft_syntax() {
        let decision = Decision {
            allowed: true,
            verdicts: vec![
                verdict(Scope::Global, "*", false, 99),
                verdict(Scope::Ip, "2001:db8::/32", true, 3),
                verdict(Scope::User, "a\"b\\c", false, 7),
                verdict(Scope::User, "jöhn", false, 7),
            ],
        };
        let mut headers = HeaderMap::new();
        rate_limit_headers(&decision, &mut headers);
        assert_eq!(
            headers["ratelimit-policy"],
            r#""global:*";q=100;w=60, "shadow:ip:2001:db8::/32";q=100;w=60, "user:a\"b\\c";q=100;w=60, "rule-9";q=100;w=60"#
        );
        assert_eq!(
            headers["ratelimit"],
            r#""global:*";r=99;t=31, "shadow:ip:2001:db8::/32";r=3;t=31, "user:a\"b\\c";r=7;t=31, "rule-9";r=7;t=31"#
        );
    }
}
