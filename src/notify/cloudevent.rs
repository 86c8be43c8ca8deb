//! A webhook's body: the event as a CloudEvent 1.0 in structured JSON mode.

use serde_json::{Value, json};

use super::Origin;
use crate::event::Event;

/// The `Content-Type` of a structured CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The CloudEvent of `event`: `type` is `valhalla.ops.<type>`, `id` the event's stable id (the
/// receiver's idempotency key), `subject` the resource, and `severity` an extension attribute
/// (a receiver can route on it without reading `data`).
pub fn cloudevent(event: &Event, origin: &Origin) -> Value {
    let mut envelope = json!({
        "specversion": "1.0",
        "id": event.id,
        "source": origin.source,
        "type": format!("valhalla.ops.{}", event.kind),
        "time": event.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "severity": event.severity,
        "data": {
            "severity": event.severity,
            "actor": event.actor,
            "reason": event.reason,
            "resource": event.resource,
            "link": origin.link,
            "details": event.data,
        },
    });
    if let Some(resource) = &event.resource {
        envelope["subject"] = json!(format!("{}/{}", resource.kind, resource.key));
    }
    envelope
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::domain::{EventType, Severity};
    use crate::event::Subject;

    #[test]
    fn the_required_attributes_are_there_and_the_type_is_namespaced() {
        let event = Event {
            id: "override-set:7".into(),
            kind: EventType::OverrideSet,
            severity: Severity::Warning,
            at: DateTime::UNIX_EPOCH,
            actor: "tyr".into(),
            reason: "abuse".into(),
            resource: Some(Subject {
                kind: "rate_limit_rule".into(),
                key: "user:user-1042".into(),
            }),
            data: json!({"override_id": 7}),
        };
        let origin = Origin {
            source: "/valhalla-ops/production".into(),
            link: "https://ops.example.com/status".into(),
        };
        let ce = cloudevent(&event, &origin);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["type"], "valhalla.ops.override.set");
        assert_eq!(ce["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(ce["subject"], "rate_limit_rule/user:user-1042");
        assert_eq!(ce["data"]["details"]["override_id"], 7);
    }
}
