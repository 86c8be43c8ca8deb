//! `validate`: check the state directory offline.

use super::Status;
use crate::desired::StateDir;

/// Options of `validate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

impl Args {
    /// Loads the state and prints what it declares.
    pub fn run(self, state: &StateDir) -> anyhow::Result<Status> {
        let loaded = super::load(state, super::now())?;
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
        Ok(Status::Ok)
    }
}
