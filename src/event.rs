//! What the people on call are told: one event as the outbox stores it and the sinks send it,
//! made by the change that caused it. Never a key or a key hash.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{EventType, Mode, Severity};
use crate::model::{Kind, Override};
use crate::plan::Summary;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Stable: the receiver's idempotency key (the CloudEvents `id`). Made from what caused the
    /// event (`override-set:42`), so that replicas noticing the same moment (an override
    /// expiring) write it once.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub severity: Severity,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who caused it: a client's name, `watch`, `cli`, or `valhalla-ops` for what time does.
    pub actor: String,
    /// Why, as its author gave it; empty when nobody said.
    pub reason: String,
    /// What it is about, when it is about one resource: that resource's events are delivered
    /// in order.
    pub resource: Option<Subject>,
    /// What else it says (counts, modes, what git restores), as a JSON object.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The resource an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Subject {
    /// As [`Kind::as_str`] names it.
    pub kind: String,
    /// As [`crate::model::Resource::key`] gives it.
    pub key: String,
}

impl Subject {
    fn of(kind: Kind, key: &str) -> Subject {
        Subject {
            kind: kind.as_str().to_owned(),
            key: key.to_owned(),
        }
    }
}

impl Event {
    /// An override recorded over HTTP (one of a lockdown's is told by the lockdown's event).
    pub fn override_set(hold: &Override) -> Event {
        Event {
            id: format!("override-set:{}", hold.id),
            kind: EventType::OverrideSet,
            severity: Severity::Warning,
            at: hold.created_at,
            actor: hold.actor.clone(),
            reason: hold.reason.clone(),
            resource: Some(Subject::of(hold.kind, &hold.key)),
            data: serde_json::json!({
                "override_id": hold.id,
                "expires_at": hold.expires_at,
            }),
        }
    }

    /// An override cleared by `actor` before it expired: git's value returns (`restores`, as
    /// it may be shown; `None` when git declares nothing for the resource, or for the mode,
    /// whose git value the mode row keeps).
    pub fn override_lifted(
        hold: &Override,
        restores: Option<serde_json::Value>,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Event {
        Event {
            id: format!("override-lifted:{}", hold.id),
            kind: EventType::OverrideLifted,
            severity: Severity::Info,
            at,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            resource: Some(Subject::of(hold.kind, &hold.key)),
            data: serde_json::json!({ "override_id": hold.id, "set_by": hold.actor, "restores": restores }),
        }
    }

    /// The effective maintenance mode changed from `from` to `to`. `cause` says what changed it
    /// (`override`, `lift`, `git`, `window`, `expiry`); `id` is made from that cause, or, for a
    /// change time made, from the instant (so that every replica noticing it writes one event).
    pub fn mode_changed(
        id: String,
        (from, to): (Mode, Mode),
        cause: &str,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Event {
        Event {
            id,
            kind: EventType::ModeChanged,
            // Leaving normal stops the platform for someone; coming back is good news.
            severity: if to == Mode::Normal {
                Severity::Info
            } else {
                Severity::Critical
            },
            at,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            resource: Some(Subject::of(Kind::MaintenanceMode, "mode")),
            data: serde_json::json!({ "from": from, "to": to, "cause": cause }),
        }
    }

    /// A lockdown: every client but the admins' held inactive, as one event.
    pub fn lockdown_started(group: &str, held: usize, actor: &str, reason: &str, at: DateTime<Utc>) -> Event {
        Event {
            id: format!("lockdown-started:{group}"),
            kind: EventType::LockdownStarted,
            severity: Severity::Critical,
            at,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            resource: None,
            data: serde_json::json!({ "group": group, "overrides": held }),
        }
    }

    /// A lockdown lifted, as one event.
    pub fn lockdown_ended(group: &str, lifted: u64, actor: &str, reason: &str, at: DateTime<Utc>) -> Event {
        Event {
            id: format!("lockdown-ended:{group}"),
            kind: EventType::LockdownEnded,
            severity: Severity::Info,
            at,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            resource: None,
            data: serde_json::json!({ "group": group, "overrides": lifted }),
        }
    }

    /// A reconcile that wrote something (a run that changed nothing is not news).
    pub fn reconcile_applied(
        run_id: i64,
        counts: &Summary,
        actor: &str,
        source: &str,
        at: DateTime<Utc>,
    ) -> Event {
        Event {
            id: format!("reconcile-applied:{run_id}"),
            kind: EventType::ReconcileApplied,
            severity: Severity::Info,
            at,
            actor: actor.to_owned(),
            reason: String::new(),
            resource: None,
            data: serde_json::json!({
                "run_id": run_id,
                "source": source,
                "created": counts.create,
                "updated": counts.update,
                "deleted": counts.delete,
                "deactivated": counts.deactivate,
                "held": counts.held,
            }),
        }
    }

    /// A reconcile whose plan was refused: nothing applied.
    pub fn reconcile_refused(
        run_id: i64,
        refusal: &str,
        actor: &str,
        source: &str,
        at: DateTime<Utc>,
    ) -> Event {
        Event {
            id: format!("reconcile-refused:{run_id}"),
            kind: EventType::ReconcileRefused,
            severity: Severity::Warning,
            at,
            actor: actor.to_owned(),
            reason: refusal.to_owned(),
            resource: None,
            data: serde_json::json!({ "run_id": run_id, "source": source }),
        }
    }

    /// A watch pass that undid changes made behind git's back.
    pub fn drift_corrected(run_id: i64, actor: &str, at: DateTime<Utc>) -> Event {
        Event {
            id: format!("reconcile-drift-corrected:{run_id}"),
            kind: EventType::ReconcileDriftCorrected,
            severity: Severity::Warning,
            at,
            actor: actor.to_owned(),
            reason: String::new(),
            resource: None,
            data: serde_json::json!({ "run_id": run_id }),
        }
    }

    /// A client deactivated (over HTTP, or by a reconcile: its name is gone from git): who,
    /// never its key. `cause` makes the id unique (`run:17`, or the moment of an HTTP change).
    pub fn client_deactivated(
        client_id: i64,
        name: &str,
        (actor, reason): (&str, &str),
        cause: &str,
        at: DateTime<Utc>,
    ) -> Event {
        Event {
            id: format!("client-deactivated:{client_id}:{cause}"),
            kind: EventType::ClientDeactivated,
            severity: Severity::Warning,
            at,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            resource: Some(Subject::of(Kind::Client, name)),
            data: serde_json::json!({ "client_id": client_id }),
        }
    }

    /// A client's key replaced by a reconcile: who, never the key or its hash.
    pub fn client_key_changed(
        client_id: i64,
        name: &str,
        actor: &str,
        run_id: i64,
        at: DateTime<Utc>,
    ) -> Event {
        Event {
            id: format!("client-key-changed:{client_id}:run:{run_id}"),
            kind: EventType::ClientKeyChanged,
            severity: Severity::Warning,
            at,
            actor: actor.to_owned(),
            reason: String::new(),
            resource: Some(Subject::of(Kind::Client, name)),
            data: serde_json::json!({ "client_id": client_id, "run_id": run_id }),
        }
    }

    /// The shared counters became unreachable for the platform (`reachable` false: each rule's
    /// `on_outage` policy decides meanwhile), or reachable again; `outage` numbers the outage,
    /// `replica` names the replica that saw the transition first.
    pub fn counters(reachable: bool, outage: i64, replica: &str, at: DateTime<Utc>) -> Event {
        let (kind, severity, id) = match reachable {
            false => (
                EventType::CountersUnreachable,
                Severity::Critical,
                format!("counters-unreachable:{outage}"),
            ),
            true => (
                EventType::CountersReachable,
                Severity::Info,
                format!("counters-reachable:{outage}"),
            ),
        };
        Event {
            id,
            kind,
            severity,
            at,
            actor: "valhalla-ops".into(),
            reason: String::new(),
            resource: None,
            data: serde_json::json!({ "outage": outage, "replica": replica }),
        }
    }

    /// A test of a sink, sent by `valhalla-ops notify test` to that sink alone (whatever it
    /// filters) and never stored; `nonce` makes its id new each time.
    pub fn test(sink: &str, actor: &str, nonce: u64, at: DateTime<Utc>) -> Event {
        Event {
            id: format!("notify-test:{sink}:{nonce:016x}"),
            kind: EventType::NotifyTest,
            severity: Severity::Info,
            at,
            actor: actor.to_owned(),
            reason: format!("a test of sink {sink}"),
            resource: None,
            data: serde_json::json!({ "sink": sink }),
        }
    }

    /// The state in git does not load: the watch loop applies the last state that did, and
    /// tells each distinct error once (its id is the error's digest), not every pass.
    pub fn state_invalid(error: &str, actor: &str, at: DateTime<Utc>) -> Event {
        Event {
            id: format!(
                "reconcile-refused:invalid:{}",
                &crate::model::digest(&error)[..16]
            ),
            kind: EventType::ReconcileRefused,
            severity: Severity::Warning,
            at,
            actor: actor.to_owned(),
            reason: error.to_owned(),
            resource: None,
            data: serde_json::json!({ "source": "watch", "invalid_state": true }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_serializes_its_type_by_its_stable_name() {
        let hold = Override {
            id: 7,
            kind: Kind::RateLimitRule,
            key: "user:user-1042".into(),
            actor: "tyr".into(),
            reason: "abuse".into(),
            created_at: DateTime::UNIX_EPOCH,
            expires_at: None,
            group_id: None,
        };
        let json = serde_json::to_value(Event::override_set(&hold)).unwrap();
        assert_eq!(json["type"], "override.set");
        assert_eq!(json["id"], "override-set:7");
        assert_eq!(json["severity"], "warning");
        assert_eq!(json["resource"]["key"], "user:user-1042");
    }

    #[test]
    fn severities_are_ordered_for_a_sinks_minimum() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    }
}
