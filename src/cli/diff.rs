//! `diff`: the plan between two state directories, with no database (for pull requests).

use std::path::PathBuf;

use super::Status;
use crate::desired::{Cores, StateDir};
use crate::plan::render::{Format, PlanDocument, render};
use crate::plan::{PlanOptions, plan};
use crate::reconcile::guard;

/// Options of `diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state before (e.g. the base branch, checked out with `git worktree`).
    pub old: PathBuf,
    /// The state after (e.g. the pull request's head).
    pub new: PathBuf,
    /// Exit 2 when the plan has changes (0 when it has none).
    #[arg(long)]
    detailed_exitcode: bool,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Allow a plan that removes more than half (and more than 5) of the resources of a kind.
    #[arg(long)]
    allow_mass_removal: bool,
}

impl Args {
    /// Plans `new` against a store that holds exactly `old`.
    pub fn run(self, old: &StateDir, new: &StateDir) -> anyhow::Result<Status> {
        let now = super::now();
        let old = super::load(old, now, Cores::All)?;
        let new = super::load(new, now, Cores::All)?;
        let plan = plan(&new.state, &old.state.as_store(), now, PlanOptions::default());
        let doc = PlanDocument::new(&plan, new.state.fingerprint());
        super::print_out(&render(&doc, self.format, super::stdout_color()))?;
        // The same refusal the apply would meet, so a pull request that empties a file fails.
        guard(&plan, self.allow_mass_removal)?;
        Ok(if self.detailed_exitcode && doc.has_changes {
            Status::Changes
        } else {
            Status::Ok
        })
    }
}
