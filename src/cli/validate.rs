//! `validate`: check the state directory offline.

use super::Status;
use crate::desired::{Cores, StateDir};

/// How many occurrences of a recurring window `validate` shows.
const NEXT: usize = 3;

/// Options of `validate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

impl Args {
    /// Loads the state and prints what it declares.
    pub fn run(self, state: &StateDir) -> anyhow::Result<Status> {
        let now = super::now();
        let loaded = super::load(state, now, Cores::All)?;
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
            if let Some(rule) = w.when.rule() {
                let next: Vec<String> = w.when.next(now, NEXT).iter().map(ToString::to_string).collect();
                super::print_out(&format!(
                    "  window {} ({}, every {rule}): next {}\n",
                    w.name,
                    w.mode,
                    next.join(", ")
                ))?;
            }
        }
        Ok(Status::Ok)
    }
}
