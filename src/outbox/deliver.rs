//! Delivering the outbox from a server: events fanned out to the sinks git declared, due
//! deliveries claimed and sent concurrently (a slow receiver holds only its own), each outcome
//! recorded, with backoff and jitter, `Retry-After`, and a time after which a delivery is dead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::backoff::Backoff;
use crate::model::Sink;
use crate::notify::{Answer, CALL_TIMEOUT, Origin, Sender};
use crate::replica::Replica;
use crate::store::{Backlog, Delivery, Outcome};

/// How long after its event a delivery is given up and kept as dead, with its last error.
pub const GIVE_UP_AFTER: TimeDelta = TimeDelta::hours(24);

/// The waits between tries: 1 s after the first failure, doubling to 10 minutes, each with up
/// to a fifth more at random so that replicas and sinks do not retry in step.
pub const RETRY: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(600),
};

/// How long a claimed delivery is this replica's: longer than a call can take, so that only a
/// replica that died (or hung) lets another send it again.
const LEASE: TimeDelta = TimeDelta::seconds(30);

/// How often the outbox is looked at when nothing wakes the task sooner (this process's own
/// writes do, as does a commit elsewhere that this replica hears of).
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The most calls in flight from one replica.
const IN_FLIGHT: usize = 64;

/// The least time between two looks at the outbox: under a stream of changes (an override a
/// few milliseconds apart) one look takes many events, not one look each.
const BETWEEN_LOOKS: Duration = Duration::from_millis(100);

/// The most outcomes recorded in one statement.
const SETTLE_BATCH: usize = 256;

/// What the status page links to and the CloudEvents `source` names.
#[derive(Debug, Clone)]
pub struct Delivering {
    /// The address people reach this deployment's status page at.
    pub status_url: String,
    /// Counters for `/metrics`.
    pub metrics: NotifyMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

/// The delivery counters and the backlog, exposed by `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct NotifyMetrics {
    sent: Family<SinkLabel, Counter>,
    failed: Family<SinkLabel, Counter>,
    dead: Family<SinkLabel, Counter>,
    pending: Gauge,
    oldest: Gauge,
}

impl NotifyMetrics {
    /// Registers `valhalla_ops_notifications_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifications_sent",
            "Events a sink's receiver took (a 2xx), by sink",
            self.sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Calls to a sink that failed and will be tried again or given up, by sink",
            self.failed.clone(),
        );
        registry.register(
            "notifications_dead",
            "Deliveries given up after their time, by sink",
            self.dead.clone(),
        );
        registry.register(
            "notifications_pending",
            "Deliveries not sent yet, across replicas (read from the store at scrape time)",
            self.pending.clone(),
        );
        registry.register(
            "notifications_oldest_undelivered_seconds",
            "Age of the oldest event still to be delivered to a sink; 0 when none waits",
            self.oldest.clone(),
        );
    }

    /// Sets the backlog gauges from the store's answer at `now`.
    pub fn backlog(&self, backlog: Backlog, now: DateTime<Utc>) {
        self.pending.set(backlog.pending);
        let age = backlog.oldest.map_or(0, |at| (now - at).num_seconds().max(0));
        self.oldest.set(age);
    }

    fn count(&self, sink: &str, outcome: &Outcome) {
        let label = SinkLabel {
            sink: sink.to_owned(),
        };
        match outcome {
            Outcome::Sent { .. } => self.sent.get_or_create(&label).inc(),
            Outcome::Retry { .. } => self.failed.get_or_create(&label).inc(),
            Outcome::Dead { .. } => {
                self.failed.get_or_create(&label).inc();
                self.dead.get_or_create(&label).inc()
            }
        };
    }
}

/// Delivers until the task is aborted.
pub(super) fn spawn(replica: Arc<Replica>, delivering: Delivering) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let settled = Arc::new(tokio::sync::Notify::new());
        let (done, outcomes) = tokio::sync::mpsc::unbounded_channel();
        let settler = tokio::spawn(settle(replica.clone(), outcomes, Arc::clone(&settled)));
        let mut courier = Courier {
            replica,
            delivering,
            senders: HashMap::new(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            done,
            failing: false,
        };
        let changes = Arc::clone(courier.replica.db().changes());
        // The settler goes with this task.
        let _settler = AbortOnDrop(settler);
        loop {
            let (changed, freed) = (changes.changed(), settled.notified());
            courier.round().await;
            let earliest = tokio::time::Instant::now() + BETWEEN_LOOKS;
            tokio::select! {
                () = changed => {}
                // A delivery done may let the next one about its resource go.
                () = freed => {}
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
            tokio::time::sleep_until(earliest).await;
        }
    })
}

/// A call's outcome, with its place in flight (freed once the outcome is recorded).
type Done = (i64, Outcome, tokio::sync::OwnedSemaphorePermit);

/// Records outcomes as they come, those that came meanwhile in one statement, then frees their
/// places and says so.
async fn settle(
    replica: Arc<Replica>,
    mut outcomes: tokio::sync::mpsc::UnboundedReceiver<Done>,
    settled: Arc<tokio::sync::Notify>,
) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while batch.len() < SETTLE_BATCH {
            match outcomes.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (done, slots): (Vec<(i64, Outcome)>, Vec<_>) = batch
            .into_iter()
            .map(|(id, outcome, slot)| ((id, outcome), slot))
            .unzip();
        if let Err(e) = replica.db().settle_deliveries(&done, (replica.clock)()).await {
            // Their leases end and they are sent again: at least once.
            tracing::warn!(error = %e, deliveries = done.len(), "cannot record deliveries");
        }
        drop(slots);
        settled.notify_one();
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A sink's sender, or why it cannot send, as made from its declaration.
type Made = (Sink, Result<Arc<Sender>, String>);

struct Courier {
    replica: Arc<Replica>,
    delivering: Delivering,
    /// By sink name, made again when the declaration changes.
    senders: HashMap<String, Made>,
    /// Free places for calls in flight.
    slots: Arc<Semaphore>,
    /// Where each call's outcome goes to be recorded, with its place in flight.
    done: tokio::sync::mpsc::UnboundedSender<Done>,
    /// Whether the last round could not reach the store (said once per outage).
    failing: bool,
}

impl Courier {
    /// One look at the outbox: fan out what is new, claim what is due (as many as there are
    /// free places), and start each call.
    async fn round(&mut self) {
        let view = match self.replica.view().await {
            Ok(view) => view,
            Err(e) => return self.failed(&e),
        };
        let sinks: Vec<Sink> = view
            .mirror
            .notifications()
            .map(|s| s.value.0.clone())
            .unwrap_or_default();
        self.refresh(&sinks);
        let origin = Origin {
            source: format!(
                "/valhalla-ops/{}",
                view.mirror.profile().map_or("default", |p| p.value.name.as_str())
            ),
            link: self.delivering.status_url.clone(),
        };
        let db = self.replica.db().clone();
        let now = (self.replica.clock)();
        if let Err(e) = db.fan_out(&sinks, now).await {
            return self.failed(&e);
        }
        let free = self.slots.available_permits();
        if free == 0 {
            return;
        }
        let claimed = match db.claim_deliveries(now, LEASE, free as i64).await {
            Ok(claimed) => claimed,
            Err(e) => return self.failed(&e),
        };
        self.failing = false;
        for delivery in claimed {
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                // Not sent: the lease ends and it is claimed again.
                break;
            };
            let sender = self.senders.get(&delivery.sink).map(|(_, made)| made.clone());
            let (origin, metrics) = (origin.clone(), self.delivering.metrics.clone());
            let clock = self.replica.clock.clone();
            let done = self.done.clone();
            tokio::spawn(async move {
                let outcome = deliver(&delivery, sender, &origin, clock()).await;
                metrics.count(&delivery.sink, &outcome);
                // The settler is gone only when this task is: the lease then ends.
                let _ = done.send((delivery.id, outcome, slot));
            });
        }
    }

    /// Makes a sender for each sink whose declaration is new or changed; says once why one
    /// cannot send (its deliveries fail with the same reason).
    fn refresh(&mut self, sinks: &[Sink]) {
        self.senders
            .retain(|name, _| sinks.iter().any(|s| s.name.as_str() == name));
        for sink in sinks {
            let name = sink.name.as_str();
            if self
                .senders
                .get(name)
                .is_some_and(|(declared, _)| declared == sink)
            {
                continue;
            }
            let made = Sender::new(sink, |var| std::env::var(var).ok())
                .map(Arc::new)
                .map_err(|e| e.to_string());
            match &made {
                Ok(sender) => tracing::info!(sink = name, to = %sender.shown(), "notification sink ready"),
                Err(e) => tracing::error!("{e}"),
            }
            self.senders.insert(name.to_owned(), (sink.clone(), made));
        }
    }

    fn failed(&mut self, e: &crate::store::StoreError) {
        if !self.failing {
            tracing::warn!(error = %e, "cannot deliver notifications now");
            self.failing = true;
        }
    }
}

/// Sends one delivery and says what comes of it.
async fn deliver(
    delivery: &Delivery,
    sender: Option<Result<Arc<Sender>, String>>,
    origin: &Origin,
    now: DateTime<Utc>,
) -> Outcome {
    let event = &delivery.event.event;
    let result = match sender {
        None => Err(format!("sink {} is no longer declared", delivery.sink)),
        Some(Err(e)) => Err(e),
        Some(Ok(sender)) => sender.send(event, origin, now).await,
    };
    judge(result, delivery.attempt, event.at, now, jitter())
}

/// The outcome of a call made on try `attempt` (1 for the first) of an event that happened at
/// `at`: sent on a 2xx; otherwise tried again after the backoff (with `jitter`, a share from 0
/// to 1 of a fifth more) or the receiver's `Retry-After`, whichever is longer; dead once the
/// next try would fall after [`GIVE_UP_AFTER`].
pub fn judge(
    result: Result<Answer, String>,
    attempt: i64,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    jitter: f64,
) -> Outcome {
    let (status, error, asked) = match result {
        Ok(answer) if answer.accepted() => {
            return Outcome::Sent {
                status: answer.status,
            };
        }
        Ok(answer) => {
            let mut error = format!("the receiver answered {}", answer.status);
            if !answer.body.is_empty() {
                error.push_str(&format!(": {}", answer.body));
            }
            (Some(answer.status), error, answer.retry_after)
        }
        Err(error) => (None, error, None),
    };
    let failures = u32::try_from(attempt).unwrap_or(u32::MAX);
    let wait = RETRY.after(failures).mul_f64(1.0 + 0.2 * jitter.clamp(0.0, 1.0));
    let wait = asked.map_or(wait, |asked| asked.max(wait));
    let due_at = now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX);
    if due_at > at + GIVE_UP_AFTER {
        Outcome::Dead { status, error }
    } else {
        Outcome::Retry {
            status,
            error,
            due_at,
        }
    }
}

/// A share from 0 to 1, different every call.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    // Without randomness the wait is the backoff's own: still correct, only in step.
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

// A lease outlives any call: only a replica that died or hung lets another send its claim again.
const _: () = assert!(LEASE.num_seconds() as u64 > 2 * CALL_TIMEOUT.as_secs());

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn answer(status: u16, retry_after: Option<u64>) -> Result<Answer, String> {
        Ok(Answer {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: String::new(),
        })
    }

    #[test]
    fn a_2xx_is_sent_and_anything_else_is_tried_again_later_and_later() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 3, 0, 0).unwrap();
        assert_eq!(
            judge(answer(202, None), 1, at, at, 0.5),
            Outcome::Sent { status: 202 }
        );
        let due = |attempt, jitter| match judge(answer(503, None), attempt, at, at, jitter) {
            Outcome::Retry { due_at, .. } => (due_at - at).num_milliseconds(),
            other => panic!("{other:?}"),
        };
        assert_eq!(due(1, 0.0), 1000);
        assert_eq!(due(1, 1.0), 1200);
        assert_eq!(due(3, 0.0), 4000);
        assert_eq!(due(30, 0.0), 600_000);
        match judge(Err("cannot connect".into()), 1, at, at, 0.0) {
            Outcome::Retry { status, error, .. } => {
                assert_eq!((status, error.as_str()), (None, "cannot connect"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 3, 0, 0).unwrap();
        match judge(answer(429, Some(30)), 1, at, at, 0.0) {
            Outcome::Retry {
                status,
                due_at,
                error,
            } => {
                assert_eq!(status, Some(429));
                assert_eq!((due_at - at).num_seconds(), 30);
                assert_eq!(error, "the receiver answered 429");
            }
            other => panic!("{other:?}"),
        }
        // A shorter ask than the backoff waits the backoff.
        match judge(answer(429, Some(1)), 5, at, at, 0.0) {
            Outcome::Retry { due_at, .. } => assert_eq!((due_at - at).num_seconds(), 16),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_delivery_whose_next_try_falls_after_the_give_up_time_is_dead() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 3, 0, 0).unwrap();
        let late = at + GIVE_UP_AFTER - TimeDelta::seconds(5);
        assert_eq!(
            judge(answer(500, None), 20, at, late, 0.0),
            Outcome::Dead {
                status: Some(500),
                error: "the receiver answered 500".into()
            }
        );
        assert!(matches!(
            judge(answer(500, None), 1, at, late, 0.0),
            Outcome::Retry { .. }
        ));
    }
}
