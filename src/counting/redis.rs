//! The shared counters in Redis: the decisions that arrive while a script call is in flight go
//! together in the next one, in arrival order, on one multiplexed connection that every request
//! of the replica shares.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use crate::limit::{CounterKey, Decision, Reading, Rule, Verdict};

/// The decision script (see its header for the arguments and the reply).
const SCRIPT: &str = include_str!("decide.lua");

/// The most decisions one script call carries: a call holds Redis for its whole length, so a
/// burst is cut into calls that other clients' commands can run between.
const MOST_PER_CALL: usize = 128;

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

/// Why a decision got no answer from the shared counters.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The script call that carried it got no answer within the timeout.
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
    #[error("the decision script answered in an unexpected shape")]
    Shape,
    /// The task that sends the calls is gone (its runtime shut down).
    #[error("the shared counters' sender has stopped")]
    Stopped,
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
    /// Decisions waiting for the next script call; the task that sends them starts with the
    /// first decision (it needs the runtime).
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// Script calls sent for decisions (one carries all that waited for the one before).
    pub script_calls: Counter,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What one decision decided, with the counts it left for the snapshots.
#[derive(Debug)]
pub struct SharedDecision {
    pub decision: Decision,
    /// The counters this request was counted in, with their counts after it.
    pub counted: Vec<Reading>,
}

/// One request's question to the shared counters: the rules it matched, each with its counter,
/// the caller's time, and how many requests to count (0: only asking).
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub matched: &'a [(&'a Arc<Rule>, CounterKey)],
    pub now_ms: u64,
    pub hits: u32,
}

/// A question as the script takes it: the clock (`None`: Redis's), hits, and per counter its
/// key, window in milliseconds, limit, and whether it is a shadow rule's.
struct Question {
    now_ms: Option<u64>,
    hits: u32,
    counters: Vec<(String, u64, u32, bool)>,
}

impl Question {
    /// How many numbers the script answers for this question.
    fn reply_len(&self) -> usize {
        1 + 5 * self.counters.len()
    }
}

/// A decision waiting for the next script call.
struct Pending {
    question: Question,
    answer: oneshot::Sender<Result<Vec<i64>, CallError>>,
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
            queue: OnceLock::new(),
            script_calls: Counter::default(),
        })
    }

    /// Decides about `hits` requests at once, counting them if they fit (0: decides about one,
    /// only asking); `now_ms` is used only with the caller's clock. The decision goes in the
    /// next script call, with every other that arrives while the current one is in flight.
    pub async fn decide(&self, ask: Ask<'_>) -> Result<SharedDecision, CallError> {
        let (answer, reply) = oneshot::channel();
        let pending = Pending {
            question: self.question(ask),
            answer,
        };
        self.queue().send(pending).map_err(|_| CallError::Stopped)?;
        let reply = reply.await.map_err(|_| CallError::Stopped)??;
        parse(ask, &reply).ok_or(CallError::Shape)
    }

    /// Decides `asks` in one script call, in their order, exactly as separate calls one after
    /// the other would (at the same instants).
    pub async fn decide_together(&self, asks: &[Ask<'_>]) -> Result<Vec<SharedDecision>, CallError> {
        let questions: Vec<Question> = asks.iter().map(|ask| self.question(*ask)).collect();
        let replies = call(
            &self.connection,
            &self.script,
            &questions.iter().collect::<Vec<_>>(),
        )
        .await?;
        asks.iter()
            .zip(replies)
            .map(|(ask, reply)| parse(*ask, &reply).ok_or(CallError::Shape))
            .collect()
    }

    /// Whether Redis does what a request needs: the decision script, counting (a write) in a
    /// probe counter of its own. A PING would answer where requests fail: a replica that became
    /// read-only after a failover answers PING and refuses every count with READONLY. Sent on
    /// its own, so that a call stuck in the queue's way does not hide a Redis that is back.
    pub async fn probe(&self) -> Result<(), CallError> {
        let question = Question {
            now_ms: None,
            hits: 1,
            counters: vec![(
                format!("{}:probe", self.prefix),
                1_000,
                crate::domain::MaxRequests::MAX,
                false,
            )],
        };
        invoke(&self.connection, &self.script, [&question]).await?;
        Ok(())
    }

    /// The queue of decisions for the next script call, and the task that sends them, started
    /// on first use. The task ends when these counters are dropped.
    fn queue(&self) -> &mpsc::UnboundedSender<Pending> {
        self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(send_calls(
                receiver,
                self.connection.clone(),
                self.script.clone(),
                self.timeout,
                self.script_calls.clone(),
            ));
            sender
        })
    }

    /// `ask` as the script takes it.
    fn question(&self, ask: Ask<'_>) -> Question {
        Question {
            now_ms: match self.clock {
                WindowClock::Redis => None,
                WindowClock::Caller => Some(ask.now_ms),
            },
            hits: ask.hits,
            counters: ask
                .matched
                .iter()
                .map(|(rule, key)| {
                    (
                        self.key(key),
                        rule.quota.window_ms.max(1),
                        rule.quota.max,
                        rule.shadow,
                    )
                })
                .collect(),
        }
    }

    /// The Redis key of a counter: `prefix:rule:window_ms`, and the address for a network rule.
    fn key(&self, key: &CounterKey) -> String {
        match key.addr {
            None => format!("{}:{}:{}", self.prefix, key.rule, key.window_ms),
            Some(addr) => format!("{}:{}:{}:{}", self.prefix, key.rule, key.window_ms, Address(addr)),
        }
    }
}

/// Sends the queued decisions, all that waited (up to [`MOST_PER_CALL`]) in one script call,
/// one call at a time: while a call is in flight the next one fills. A decision whose asker
/// stopped waiting (its timeout) is left out, so it is not counted after the asker was told
/// the outage policy's verdict.
async fn send_calls(
    mut queue: mpsc::UnboundedReceiver<Pending>,
    connection: ConnectionManager,
    script: redis::Script,
    timeout: Duration,
    calls: Counter,
) {
    let mut batch = Vec::with_capacity(MOST_PER_CALL);
    while queue.recv_many(&mut batch, MOST_PER_CALL).await > 0 {
        batch.retain(|p: &Pending| !p.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        calls.inc();
        let questions: Vec<&Question> = batch.iter().map(|p| &p.question).collect();
        let replies = tokio::time::timeout(timeout, call(&connection, &script, &questions))
            .await
            .unwrap_or(Err(CallError::NoAnswer(timeout)));
        drop(questions);
        // An asker that stopped waiting meanwhile has nobody to tell.
        match replies {
            Ok(replies) => {
                for (pending, reply) in batch.drain(..).zip(replies) {
                    let _ = pending.answer.send(Ok(reply));
                }
            }
            Err(e) => {
                for pending in batch.drain(..) {
                    let _ = pending.answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Runs the decision script over `questions`, in order, and cuts its reply into each one's part.
async fn call(
    connection: &ConnectionManager,
    script: &redis::Script,
    questions: &[&Question],
) -> Result<Vec<Vec<i64>>, CallError> {
    let reply = invoke(connection, script, questions.iter().copied()).await?;
    split(questions.iter().copied(), &reply).ok_or(CallError::Shape)
}

/// Runs the decision script (its header lists the arguments) over `questions`, in order.
async fn invoke<'q>(
    connection: &ConnectionManager,
    script: &redis::Script,
    questions: impl IntoIterator<Item = &'q Question>,
) -> Result<Vec<i64>, redis::RedisError> {
    let mut invocation = script.prepare_invoke();
    for question in questions {
        match question.now_ms {
            None => invocation.arg(""),
            Some(now_ms) => invocation.arg(now_ms),
        };
        invocation.arg(question.hits).arg(question.counters.len());
        for (key, window_ms, max, shadow) in &question.counters {
            invocation.key(key).arg(window_ms).arg(max).arg(u8::from(*shadow));
        }
    }
    let mut connection = connection.clone();
    invocation.invoke_async(&mut connection).await
}

/// The script's reply cut into each question's part; `None` if its length is not theirs.
fn split<'q>(questions: impl IntoIterator<Item = &'q Question>, reply: &[i64]) -> Option<Vec<Vec<i64>>> {
    let mut rest = reply;
    let mut parts = Vec::new();
    for question in questions {
        let (part, after) = rest.split_at_checked(question.reply_len())?;
        parts.push(part.to_vec());
        rest = after;
    }
    rest.is_empty().then_some(parts)
}

/// What a failed call says about the shared counters, for the log: down, or up but refusing
/// what requests need (which a PING would not show).
pub fn failure(e: &CallError) -> String {
    let said = crate::text::one_line(&e.to_string());
    let CallError::Redis(e) = e else {
        return said;
    };
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

/// One question's part of the script's reply as a decision: `{allowed, then per counter:
/// allowed, remaining, reset_ms, count, window start}`; a question that was only asking
/// counted nothing.
fn parse(ask: Ask<'_>, reply: &[i64]) -> Option<SharedDecision> {
    let (matched, counting) = (ask.matched, ask.hits > 0);
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
