//! A PagerDuty Events API v2 alert, for the events that should wake someone.

use serde_json::{Value, json};

use super::{Origin, summary};
use crate::domain::Severity;
use crate::event::Event;

/// PagerDuty's limit on an alert's summary, in characters.
const SUMMARY_MAX: usize = 1024;

/// The `trigger` of `event` for the integration `routing_key`; the event's id is the dedup key,
/// so a retried delivery is one alert.
pub fn pagerduty(event: &Event, routing_key: &str, origin: &Origin) -> Value {
    let severity = match event.severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    };
    let summary: String = summary(event).chars().take(SUMMARY_MAX).collect();
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": event.id,
        "payload": {
            "summary": summary,
            "source": origin.source,
            "severity": severity,
            "timestamp": event.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "class": event.kind,
            "component": event.resource.as_ref().map(|r| r.kind.clone()),
            "custom_details": {
                "actor": event.actor,
                "reason": event.reason,
                "resource": event.resource,
                "details": event.data,
            },
        },
        "links": [ { "href": origin.link, "text": "Status page" } ],
    })
}
