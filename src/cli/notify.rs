//! `notify test SINK`: send a test event to one sink the state declares, and print what its
//! receiver answered.

use anyhow::Context as _;

use super::Status;
use crate::desired::{Cores, StateDir};
use crate::domain::SinkName;
use crate::event::Event;
use crate::notify::{Origin, Sender};

/// Notification commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Send a test event (`notify.test`) to a sink the state declares, whatever events it
    /// takes, and print the receiver's answer; exit 1 unless it took the event (a 2xx).
    Test(Test),
}

/// Options of `notify test`.
#[derive(Debug, clap::Args)]
pub struct Test {
    /// The sink's name, as `notifications:` declares it.
    #[arg(value_parser = |s: &str| SinkName::parse(s))]
    sink: SinkName,

    /// Where people reach the deployment; the event links to its status page there.
    #[arg(long, env = "VALHALLA_PUBLIC_URL", hide_env_values = true, value_name = "URL", value_parser = super::serve::parse_public_url)]
    public_url: Option<url::Url>,
}

impl Command {
    /// Runs the notification command.
    pub async fn run(self, state: &StateDir) -> anyhow::Result<Status> {
        let Command::Test(args) = self;
        let now = super::now();
        let loaded = super::load(state, now, Cores::All)?;
        let declared = loaded.state.notifications.map(|n| n.0).unwrap_or_default();
        let Some(sink) = declared.iter().find(|s| s.name == args.sink) else {
            let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
            anyhow::bail!(
                "{} declares no sink {}{}",
                crate::text::path(&state.path),
                args.sink,
                if names.is_empty() {
                    " (it declares none)".to_owned()
                } else {
                    format!(" (it declares {})", names.join(", "))
                }
            );
        };
        let sender = Sender::new(sink, |var| std::env::var(var).ok())?;
        let profile = loaded
            .state
            .profile
            .as_ref()
            .map_or("default", |p| p.name.as_str());
        let public = args.public_url.as_ref().map_or_else(
            || format!("http://{}", super::serve::DEFAULT_BIND),
            |u| u.as_str().trim_end_matches('/').to_owned(),
        );
        let origin = Origin {
            source: format!("/valhalla-ops/{profile}"),
            link: format!("{public}/status"),
        };
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).context("cannot read random bytes")?;
        let event = Event::test(
            sink.name.as_str(),
            &super::default_actor(),
            u64::from_le_bytes(nonce),
            now,
        );
        let to = format!("sink {} ({}, {})", sink.name, sink.sink_type, sender.shown());
        let answer = sender
            .send(&event, &origin, now)
            .await
            .map_err(|e| anyhow::anyhow!("{to}: {e}"))?;
        let mut out = format!("{to}: the receiver answered {}\n", answer.status);
        if !answer.body.is_empty() {
            out.push_str(&format!("{}\n", answer.body));
        }
        super::print_out(&out)?;
        if !answer.accepted() {
            anyhow::bail!("{to} did not take the test event (HTTP {})", answer.status);
        }
        Ok(Status::Ok)
    }
}
