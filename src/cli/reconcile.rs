//! `reconcile`: plan the state against the store, render it, and apply it unless a dry run.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Status;
use crate::desired::{Cores, StateDir};
use crate::plan::PlanOptions;
use crate::plan::render::PLAN_FORMAT;
use crate::plan::render::{Format, PlanDocument, render};
use crate::reconcile::{Read, Request, guard, reconcile_read};

/// Options of `reconcile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show the plan; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove api-owned resources that git does not declare.
    #[arg(long)]
    prune: bool,
    /// Exit 2 when the plan has changes (0 when it has none).
    #[arg(long)]
    detailed_exitcode: bool,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Who is reconciling, recorded in the audit log [default: cli:$USER].
    #[arg(long, env = "VALHALLA_ACTOR", hide_env_values = true)]
    actor: Option<String>,
    /// With --dry-run: save the plan to apply it later with --plan.
    #[arg(long, value_name = "PLAN", requires = "dry_run")]
    out: Option<PathBuf>,
    /// Apply exactly this saved plan; refused if the store or the state changed since.
    #[arg(long, value_name = "PLAN", conflicts_with_all = ["dry_run", "prune"])]
    plan: Option<PathBuf>,
    /// Allow a plan that removes more than half (and more than 5) of the resources of a kind.
    #[arg(long)]
    allow_mass_removal: bool,
    /// Apply although a `freeze_changes` window is open, for this reason (recorded in the run
    /// and the audit log).
    #[arg(long, value_name = "REASON", value_parser = reason)]
    during_freeze: Option<String>,
    #[command(flatten)]
    watch: super::WatchArgs,
}

impl Args {
    /// Runs one reconcile, or with --watch, keeps reconciling until Ctrl-C or SIGTERM.
    pub async fn run(
        self,
        state: &StateDir,
        store: &super::StoreConfig,
        quiet: bool,
    ) -> anyhow::Result<Status> {
        if self.watch.watch {
            return self.run_watch(state, store).await;
        }
        let now = super::now();
        let saved = self.plan.as_deref().map(read_saved).transpose()?;
        let progress = super::progress::Progress::start("loading the state", quiet);
        // The files are read and checked on a thread of their own while the store is opened
        // and its snapshot read and digested for the plan's fingerprint: a dry run then costs
        // about its slower half, and the state's digest is made beside the plan. An apply plans
        // on that snapshot too, and writes if the store is still at its revision under the lock.
        // A store that opening would create waits for the state to prove valid: a first try
        // with a broken state leaves no database file behind. The load has every core, but one
        // beside the read of an in-process store, which takes the other (on two cores, sharing
        // them made a SQLite dry run a tenth slower, where a Postgres one gained a fifth).
        let creates = crate::store::Db::would_create(&store.url);
        let loading = {
            let state = state.clone();
            let beside_a_read_here = !creates && crate::store::Db::in_process(&store.url);
            let cores = if beside_a_read_here {
                Cores::One
            } else {
                Cores::All
            };
            tokio::task::spawn_blocking(move || super::load(&state, now, cores))
        };
        let opening = async {
            let db = super::open(store).await?;
            let (actual, revision) = db.snapshot_at_revision().await?;
            let digested = tokio::task::spawn_blocking(move || {
                let store_fingerprint = actual.fingerprint();
                Read {
                    actual,
                    store_fingerprint,
                    revision,
                }
            });
            let read = digested.await.context("the digesting task failed")?;
            Ok::<_, anyhow::Error>((db, read))
        };
        let (loaded, opened) = if creates {
            let loaded = loading.await.context("the loading task failed")??;
            (loaded, opening.await)
        } else {
            let (loaded, opened) = tokio::join!(loading, opening);
            (loaded.context("the loading task failed")??, opened)
        };
        let (store, read) = opened?;
        progress.phase(if self.dry_run {
            "planning"
        } else {
            "planning and applying in one transaction"
        });
        let request = Request {
            dry_run: self.dry_run,
            options: PlanOptions { prune: self.prune },
            allow_mass_removal: self.allow_mass_removal,
            saved,
            actor: self.actor.unwrap_or_else(super::default_actor),
            source: "cli".into(),
            during_freeze: self.during_freeze.clone(),
            recorded_refusal: None,
        };
        let outcome = reconcile_read(&store, &loaded.state, read, &request, now).await?;
        drop(progress);
        let doc = PlanDocument::new(&outcome.plan, outcome.state_fingerprint.clone());
        super::print_out(&render(&doc, self.format, super::stdout_color()))?;
        if let Some(out) = &self.out {
            std::fs::write(out, crate::plan::render::json(&doc))
                .with_context(|| format!("cannot write the plan to {}", out.display()))?;
            tracing::info!(
                "plan saved to {}; apply it with `reconcile --plan {}`",
                out.display(),
                out.display()
            );
        }
        if let Some(run) = outcome.run_id {
            let message = match doc.summary.changes() {
                0 => format!("Nothing to apply (run #{run} recorded)."),
                n => format!(
                    "Applied {n} change{} in one transaction (run #{run}).",
                    if n == 1 { "" } else { "s" }
                ),
            };
            if self.format == Format::Text {
                super::print_out(&format!("{message}\n"))?;
            } else {
                tracing::info!("{message}");
            }
        }
        if self.dry_run {
            // Shown first, refused after: CI fails on a plan that apply would refuse.
            guard(&outcome.plan, self.allow_mass_removal)?;
            // A freeze passes with time: said, not failed.
            if let Some(f) = outcome
                .plan
                .frozen_by
                .as_ref()
                .filter(|_| self.during_freeze.is_none())
            {
                tracing::warn!(
                    "the apply would be refused now: {}",
                    crate::plan::render::freeze_line(f)
                );
            }
        }
        Ok(if self.detailed_exitcode && doc.has_changes {
            Status::Changes
        } else {
            Status::Ok
        })
    }
}

impl Args {
    /// Whether this is `reconcile --watch`.
    pub fn watches(&self) -> bool {
        self.watch.watch
    }

    async fn run_watch(self, state: &StateDir, store: &super::StoreConfig) -> anyhow::Result<Status> {
        if self.dry_run || self.out.is_some() || self.plan.is_some() || self.detailed_exitcode {
            anyhow::bail!(
                "--watch applies every pass; it cannot be combined with --dry-run, --out, --plan or --detailed-exitcode"
            );
        }
        let shutdown = crate::shutdown::signal();
        tokio::pin!(shutdown);
        let db = tokio::select! {
            db = super::open_retrying(store) => db?,
            () = &mut shutdown => return Ok(Status::Ok),
        };
        let actor = self.actor.unwrap_or_else(super::default_actor);
        let mut options = self.watch.options(actor, self.prune, self.allow_mass_removal);
        options.during_freeze = self.during_freeze;
        let metrics = crate::watch::WatchMetrics::default();
        crate::watch::run(db, state.clone(), options, metrics, super::clock(), shutdown)
            .await
            .with_context(|| format!("cannot watch {}", crate::text::path(&state.path)))?;
        Ok(Status::Ok)
    }
}

/// A reason given on the command line: not blank, one line, at most 500 characters.
fn reason(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.contains(char::is_control) || s.chars().count() > 500 {
        return Err("give a reason of one line, 1 to 500 characters".into());
    }
    Ok(s.to_owned())
}

/// Reads a plan saved by `reconcile --dry-run --out`.
fn read_saved(path: &Path) -> anyhow::Result<PlanDocument> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read saved plan {}", path.display()))?;
    match serde_json::from_str::<PlanDocument>(&text) {
        Ok(doc) if doc.format == PLAN_FORMAT => Ok(doc),
        _ => anyhow::bail!(
            "{} is not a valhalla-ops plan (expected format {PLAN_FORMAT})",
            path.display()
        ),
    }
}
