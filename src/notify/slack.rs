//! A Slack incoming webhook's body: a line of text for notifications, and blocks for the channel.

use serde_json::{Value, json};

use super::{Origin, summary};
use crate::domain::Severity;
use crate::event::Event;

/// The message for `event`.
pub fn slack(event: &Event, origin: &Origin) -> Value {
    let marker = match event.severity {
        Severity::Critical => ":rotating_light:",
        Severity::Warning => ":warning:",
        Severity::Info => ":information_source:",
    };
    let line = escape(&summary(event));
    let context = format!(
        "{} · {} · <{}|status page>",
        event.severity,
        event.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        escape(&origin.link)
    );
    json!({
        "text": format!("{marker} {line}"),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": format!("{marker} *{}*\n{line}", event.kind) } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": context } ] },
        ],
    })
}

/// `text` as Slack's markup shows it literally: its three control characters escaped (an actor
/// or a reason could otherwise make a link or mention `<!channel>`).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_cannot_mention_the_channel_or_make_a_link() {
        assert_eq!(
            escape("<!channel> & <https://x|y>"),
            "&lt;!channel&gt; &amp; &lt;https://x|y&gt;"
        );
    }
}
