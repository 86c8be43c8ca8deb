//! Telling the people on call: each event in the form its receiver takes (a CloudEvent for a
//! webhook, signed; a Slack message; a PagerDuty alert), never with a key or a key hash, and
//! only where a sink may send.

mod cloudevent;
mod pagerduty;
mod send;
mod signature;
mod slack;
mod target;

pub use cloudevent::{CONTENT_TYPE, cloudevent};
pub use pagerduty::pagerduty;
pub use send::{Answer, CALL_TIMEOUT, Sender, SinkError, retry_after};
pub use signature::{SIGNATURE_HEADER, signature};
pub use slack::slack;
pub use target::{Target, TargetError};

use crate::event::Event;

/// Where an event comes from and where to look: the CloudEvents `source`
/// (`/valhalla-ops/<deployment profile>`) and the status page's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    /// The status page, as the people told can reach it.
    pub link: String,
}

/// The event in one line: its type, what it is about, who and why (`override.set on
/// rate_limit_rule user:user-1042 by tyr: abuse`). Values are as stored; each format escapes
/// them as it needs.
pub fn summary(event: &Event) -> String {
    let mut line = event.kind.to_string();
    if let Some(resource) = &event.resource {
        line.push_str(&format!(" on {} {}", resource.kind, resource.key));
    }
    if !event.actor.is_empty() {
        line.push_str(&format!(" by {}", event.actor));
    }
    if !event.reason.is_empty() {
        line.push_str(&format!(": {}", event.reason));
    }
    line
}
