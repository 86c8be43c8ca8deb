//! `validate`: check the state directory offline.

use chrono::{DateTime, Utc};

use super::Status;
use crate::calendar::When;
use crate::desired::StateDir;

/// How many occurrences of a recurring window `validate` shows.
const NEXT: usize = 3;

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%MZ").to_string()
}

/// Options of `validate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

impl Args {
    /// Loads the state and prints what it declares.
    pub fn run(self, state: &StateDir) -> anyhow::Result<Status> {
        let now = super::now();
        let loaded = super::load(state, now)?;
        let s = &loaded.state;
        super::print_out(&format!(
            "{} is valid: {} file{}, {} rate-limit rules, {} clients, {} maintenance windows, {} feature flags{}{}{}\n",
            crate::text::path(&state.path),
            loaded.files,
            if loaded.files == 1 { "" } else { "s" },
            s.rules.len(),
            s.clients.len(),
            s.windows.len(),
            s.flags.len(),
            s.maintenance
                .as_ref()
                .map(|m| format!(", mode {}", m.mode))
                .unwrap_or_default(),
            s.profile
                .as_ref()
                .map(|p| format!(", profile {}", p.name))
                .unwrap_or_default(),
            s.notifications
                .as_ref()
                .map(|n| format!(
                    ", {} notification sink{}",
                    n.0.len(),
                    if n.0.len() == 1 { "" } else { "s" }
                ))
                .unwrap_or_default(),
        ))?;
        // Each recurring window's next occurrences, so a reviewer sees when it really holds.
        for w in &s.windows {
            if let When::Every(r) = &w.when {
                let next: Vec<String> = (w.when.next(now, NEXT).iter())
                    .map(|i| format!("{} → {}", time(&i.starts_at), time(&i.ends_at)))
                    .collect();
                super::print_out(&format!(
                    "  window {} ({}, every `{}` for {}, {}): next {}\n",
                    w.name,
                    w.mode,
                    r.schedule,
                    r.duration,
                    r.timezone,
                    next.join(", ")
                ))?;
            }
        }
        Ok(Status::Ok)
    }
}
