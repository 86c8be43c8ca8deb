//! One sink's HTTP client: the body its type takes, a signature for a webhook, an address check
//! at every resolution, no redirect followed, no proxy, and a time limit on every call.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    CONTENT_TYPE, Origin, SIGNATURE_HEADER, Target, TargetError, cloudevent, pagerduty, signature, slack,
};
use crate::domain::SinkType;
use crate::event::Event;
use crate::model::Sink;

/// How long one call may take, connection included: a slow receiver costs its own delivery
/// this much, never anything else.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a receiver's answer kept (for `notify test` and a delivery's last error).
const ANSWER_MAX: usize = 512;

/// Why a sink cannot send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: environment variable {var} is not set")]
    Unset { sink: String, var: String },
    #[error("sink {sink}: {error}")]
    Target { sink: String, error: TargetError },
    #[error("sink {sink}: cannot make its HTTP client ({0})", .reason)]
    Client { sink: String, reason: String },
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// How long it asked to be left alone (`Retry-After`, in seconds or as an HTTP date).
    pub retry_after: Option<Duration>,
    /// The start of its body, on one line.
    pub body: String,
}

impl Answer {
    /// Whether the event was taken (any 2xx).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A sink ready to send: its declaration, its URL and secret read from the environment, and a
/// client whose resolver refuses what the URL check refuses.
pub struct Sender {
    sink: Sink,
    target: Target,
    secret: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and the URL's path and query are never shown.
        f.debug_struct("Sender")
            .field("sink", &self.sink.name)
            .field("target", &self.target.shown())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Reads `sink`'s URL and secret from the environment through `env` and checks the URL.
    pub fn new(sink: &Sink, env: impl Fn(&str) -> Option<String>) -> Result<Sender, SinkError> {
        let name = sink.name.to_string();
        let read = |var: &str| {
            env(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| SinkError::Unset {
                    sink: name.clone(),
                    var: var.to_owned(),
                })
        };
        let url = read(sink.url_env.as_str())?;
        let secret = sink.secret_env.as_ref().map(|v| read(v.as_str())).transpose()?;
        let target = Target::parse(&url, sink.allow_link_local).map_err(|error| SinkError::Target {
            sink: name.clone(),
            error,
        })?;
        let client = client(&target).map_err(|reason| SinkError::Client { sink: name, reason })?;
        Ok(Sender {
            sink: sink.clone(),
            target,
            secret,
            client,
        })
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// The URL as it may be shown: scheme, host and port.
    pub fn shown(&self) -> String {
        self.target.shown()
    }

    /// Sends `event` at `now`; an error is one line that never holds the URL's path, its query
    /// or the secret.
    pub async fn send(&self, event: &Event, origin: &Origin, now: DateTime<Utc>) -> Result<Answer, String> {
        let (body, content_type) = match self.sink.sink_type {
            SinkType::Webhook => (cloudevent(event, origin), CONTENT_TYPE),
            SinkType::Slack => (slack(event, origin), "application/json"),
            SinkType::Pagerduty => (
                pagerduty(event, self.secret.as_deref().unwrap_or_default(), origin),
                "application/json",
            ),
        };
        let body = body.to_string().into_bytes();
        let mut request = self
            .client
            .post(self.target.url().clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(
                reqwest::header::USER_AGENT,
                concat!("valhalla-ops/", env!("CARGO_PKG_VERSION")),
            );
        if let (SinkType::Webhook, Some(secret)) = (self.sink.sink_type, &self.secret) {
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret.as_bytes(), now.timestamp(), &body),
            );
        }
        let response = request.body(body).send().await.map_err(|e| self.failure(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, now));
        let bytes = response.bytes().await.unwrap_or_default();
        let end = bytes.len().min(ANSWER_MAX);
        let body = crate::text::one_line(&String::from_utf8_lossy(&bytes[..end]));
        let body = scrubbed(body, &self.secrets());
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// What must never be shown of the sink: its secret, and its URL's path and query (where a
    /// Slack webhook's token is).
    fn secrets(&self) -> Vec<&str> {
        let url = self.target.url();
        let path = url.path();
        [
            self.secret.as_deref(),
            Some(url.as_str()),
            Some(path),
            url.query(),
        ]
        .into_iter()
        .flatten()
        .filter(|s| s.len() > 1)
        .collect()
    }

    /// A failed call in one line: what failed, with the URL shown as [`Target::shown`] does.
    fn failure(&self, e: &reqwest::Error) -> String {
        let what = if e.is_timeout() {
            format!("no answer within {}s", CALL_TIMEOUT.as_secs())
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the call failed".to_owned()
        };
        // The innermost cause says why (refused, reset, the address check); reqwest's own
        // message names the whole URL, which is left out.
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        let cause = crate::text::one_line(&cause.to_string());
        format!("{what} ({}): {cause}", self.target.shown())
    }
}

/// The client for one target: no redirects (a receiver cannot send the event elsewhere), no
/// proxy from the environment (it would resolve, and so check, nothing), rustls with the
/// Mozilla roots, and a resolver that checks every address it gives.
fn client(target: &Target) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT)
        .dns_resolver(Arc::new(Checked(target.clone())))
        .build()
        .map_err(|e| e.to_string())
}

/// A resolver that refuses a name resolving to an address the target may not reach (the
/// metadata service behind a harmless-looking name); the call then connects only to the
/// addresses checked, so a second, different answer cannot slip in between.
struct Checked(Target);

impl reqwest::dns::Resolve for Checked {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let target = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            target.check_resolved(&ips)?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// `text` with each of `secrets` in it replaced by `(hidden)`, longest first (a receiver that
/// echoes what it was sent, or its own URL, must not show a routing key or a token to readers).
fn scrubbed(mut text: String, secrets: &[&str]) -> String {
    let mut secrets = secrets.to_vec();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        text = text.replace(secret, crate::model::SECRET_HIDDEN);
    }
    text
}

/// The most a receiver may ask to wait: a longer `Retry-After` is taken as this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// A `Retry-After` value (seconds, or an HTTP date) as a wait from `now`.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{EnvName, EventPattern, Severity, SinkName};

    fn sink(sink_type: SinkType, secret: bool) -> Sink {
        Sink {
            name: SinkName::parse("oncall").unwrap(),
            sink_type,
            url_env: EnvName::parse("HOOK_URL").unwrap(),
            secret_env: secret.then(|| EnvName::parse("HOOK_SECRET").unwrap()),
            events: vec![EventPattern::All],
            min_severity: Severity::Info,
            allow_link_local: false,
        }
    }

    #[test]
    fn an_answer_never_shows_the_secret_or_the_url_s_path_and_query() {
        let sender = Sender::new(&sink(SinkType::Webhook, true), |v| {
            Some(match v {
                "HOOK_URL" => "https://hooks.example.com/services/T0/B0/t0ken?sig=abc123".into(),
                _ => "whsec_key".into(),
            })
        })
        .unwrap();
        let echoed = "bad signature whsec_key for https://hooks.example.com/services/T0/B0/t0ken?sig=abc123 \
                      (path /services/T0/B0/t0ken, query sig=abc123)";
        let shown = scrubbed(echoed.into(), &sender.secrets());
        assert_eq!(
            shown,
            "bad signature (hidden) for (hidden) (path (hidden), query (hidden))"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 3, 0, 0).unwrap();
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Sat, 05 Dec 2026 03:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sat, 05 Dec 2026 02:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("999999", now), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn a_sink_needs_its_variables_and_a_url_it_may_send_to() {
        let none = |_: &str| None;
        let err = Sender::new(&sink(SinkType::Webhook, true), none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sink oncall: environment variable HOOK_URL is not set"
        );
        let url_only = |v: &str| (v == "HOOK_URL").then(|| "http://127.0.0.1:9/hook".to_owned());
        let err = Sender::new(&sink(SinkType::Webhook, true), url_only).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sink oncall: environment variable HOOK_SECRET is not set"
        );
        let metadata = |_: &str| Some("http://169.254.169.254/latest/meta-data/".to_owned());
        let err = Sender::new(&sink(SinkType::Slack, false), metadata).unwrap_err();
        assert!(err.to_string().contains("link-local"), "{err}");
        assert!(!err.to_string().contains("meta-data"), "{err}");
        let ok = Sender::new(&sink(SinkType::Slack, false), |_| {
            Some("http://127.0.0.1:9/x/y".into())
        })
        .unwrap();
        assert_eq!(
            format!("{ok:?}"),
            "Sender { sink: SinkName(\"oncall\"), target: \"http://127.0.0.1:9/…\", .. }"
        );
    }
}
