//! The shared counters in Redis: one script call decides a request over every rule that applies
//! to it, atomically, on one multiplexed connection that every request of the replica shares.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::limit::{CounterKey, Decision, Reading, Rule, Verdict};

/// The decision script (see its header for the arguments and the reply).
const SCRIPT: &str = include_str!("decide.lua");

/// Whose clock decides the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowClock {
    /// Redis's (`TIME`): one clock for every replica, whatever theirs say. The default.
    #[default]
    Redis,
    /// The caller's: for tests and simulations that set the time.
    Caller,
}

/// How to reach the shared counters.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db`, or `rediss://…` for TLS.
    pub url: String,
    /// Put before every key, so that several deployments can share one Redis.
    pub prefix: String,
    /// How long a decision waits for Redis before the rules' outage policies decide instead.
    pub timeout: Duration,
    pub clock: WindowClock,
}

/// Why the shared counters cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid counter store URL {url}: {reason}")]
pub struct UrlError {
    url: String,
    reason: String,
}

/// A connection to the shared counters.
pub struct RedisCounters {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    pub timeout: Duration,
    clock: WindowClock,
    /// The URL without its password, for logs.
    pub shown: String,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What one call decided, with the counts it left for the snapshots.
#[derive(Debug)]
pub struct SharedDecision {
    pub decision: Decision,
    /// The counters this request was counted in, with their counts after it.
    pub counted: Vec<Reading>,
}

impl RedisCounters {
    /// The shared counters at `options.url`. Nothing is sent yet: the connection is made on
    /// first use and remade after a failure, so a replica starts (degraded) while Redis is down.
    pub fn new(options: &RedisOptions) -> Result<RedisCounters, UrlError> {
        let shown = crate::text::url(&options.url);
        let invalid = |reason: String| UrlError {
            url: shown.clone(),
            reason,
        };
        if !(options.url.starts_with("redis://") || options.url.starts_with("rediss://")) {
            return Err(invalid("use redis://host:port/db, or rediss:// for TLS".into()));
        }
        let client = redis::Client::open(options.url.as_str()).map_err(|e| invalid(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| invalid(e.to_string()))?;
        Ok(RedisCounters {
            connection,
            script: redis::Script::new(SCRIPT),
            prefix: options.prefix.clone(),
            timeout: options.timeout,
            clock: options.clock,
            shown,
        })
    }

    /// Decides about `hits` requests at once in one script call, counting them if they fit
    /// (0: decides about one, only asking); `now_ms` is used only with the caller's clock.
    pub async fn decide(
        &self,
        matched: &[(&Arc<Rule>, CounterKey)],
        now_ms: u64,
        hits: u32,
    ) -> Result<SharedDecision, redis::RedisError> {
        let clock = match self.clock {
            WindowClock::Redis => None,
            WindowClock::Caller => Some(now_ms),
        };
        let counters = matched
            .iter()
            .map(|(rule, key)| (self.key(key), rule.quota.window_ms, rule.quota.max, rule.shadow));
        let reply = self.run(clock, hits, counters).await?;
        parse(matched, &reply, hits > 0).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the decision script answered in an unexpected shape",
            ))
        })
    }

    /// Whether Redis does what a request needs: the decision script, counting (a write) in a
    /// probe counter of its own. A PING would answer where requests fail: a replica that became
    /// read-only after a failover answers PING and refuses every count with READONLY.
    pub async fn probe(&self) -> Result<(), redis::RedisError> {
        let counter = (
            format!("{}:probe", self.prefix),
            1_000,
            crate::domain::MaxRequests::MAX,
            false,
        );
        self.run(None, 1, [counter]).await.map(drop)
    }

    /// Runs the decision script (its header lists the arguments) at `now_ms` (`None`: Redis's
    /// own clock), counting `hits` requests (0: only asking), over `counters`: each its key, window in
    /// milliseconds, limit, and whether it is a shadow rule's.
    async fn run(
        &self,
        now_ms: Option<u64>,
        hits: u32,
        counters: impl IntoIterator<Item = (String, u64, u32, bool)>,
    ) -> Result<Vec<i64>, redis::RedisError> {
        let mut invocation = self.script.prepare_invoke();
        match now_ms {
            None => invocation.arg(""),
            Some(now_ms) => invocation.arg(now_ms),
        };
        invocation.arg(hits);
        for (key, window_ms, max, shadow) in counters {
            invocation
                .key(key)
                .arg(window_ms.max(1))
                .arg(max)
                .arg(u8::from(shadow));
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async(&mut connection).await
    }

    /// The Redis key of a counter: `prefix:rule:window_ms`, and the address for a network rule.
    fn key(&self, key: &CounterKey) -> String {
        match key.addr {
            None => format!("{}:{}:{}", self.prefix, key.rule, key.window_ms),
            Some(addr) => format!("{}:{}:{}:{}", self.prefix, key.rule, key.window_ms, Address(addr)),
        }
    }
}

/// What a failed call says about the shared counters, for the log: down, or up but refusing
/// what requests need (which a PING would not show).
pub fn failure(e: &redis::RedisError) -> String {
    let said = crate::text::one_line(&e.to_string());
    match e.code() {
        Some("READONLY") => {
            format!("it answers but refuses writes, as a read-only replica does after a failover: {said}")
        }
        Some("LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "BUSY") => {
            format!("it answers but cannot serve yet: {said}")
        }
        Some("NOSCRIPT" | "NOPERM") => format!("it refuses the decision script: {said}"),
        _ => said,
    }
}

/// An address as a key part (IPv6 written in full brackets, so a key reads unambiguously).
struct Address(IpAddr);

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// The script's reply as a decision: `{allowed, then per counter: allowed, remaining, reset_ms,
/// count, window start}`; a call that was not `counting` counted nothing.
fn parse(matched: &[(&Arc<Rule>, CounterKey)], reply: &[i64], counting: bool) -> Option<SharedDecision> {
    let (&allowed, per_counter) = reply.split_first()?;
    if per_counter.len() != matched.len() * 5 {
        return None;
    }
    let allowed = allowed == 1;
    let mut verdicts = Vec::with_capacity(matched.len());
    let mut counted = Vec::new();
    for ((rule, key), fields) in matched.iter().zip(per_counter.chunks_exact(5)) {
        let [admits, remaining, reset_ms, count, start] = fields else {
            return None;
        };
        let admits = *admits == 1;
        verdicts.push(Verdict {
            rule: Arc::clone(rule),
            allowed: admits,
            remaining: u32::try_from(*remaining).ok()?,
            reset_ms: u64::try_from(*reset_ms).ok()?,
            outage: false,
        });
        let was_counted = counting && if rule.shadow { admits } else { allowed };
        if was_counted {
            counted.push(Reading {
                key: *key,
                window_start_ms: u64::try_from(*start).ok()?,
                count: u32::try_from(*count).ok()?,
            });
        }
    }
    Some(SharedDecision {
        decision: Decision { allowed, verdicts },
        counted,
    })
}
