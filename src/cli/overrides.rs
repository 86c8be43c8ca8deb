//! `overrides list|clear`: see and lift emergency overrides.

use std::fmt::Write as _;

use super::Status;

/// The formats of listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A table for people.
    Text,
    /// A JSON array, stable for scripts.
    Json,
}

/// Override commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the overrides that are not cleared (expired ones are marked).
    List {
        /// How to print the list.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Clear one override, or all of them; the next reconcile restores git's values.
    Clear {
        /// The override to clear.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Clear every open override.
        #[arg(long)]
        all: bool,
        /// Who clears, recorded with the override [default: cli:$USER].
        #[arg(long, env = "VALHALLA_ACTOR", hide_env_values = true)]
        actor: Option<String>,
    },
}

impl Command {
    /// Runs the override command.
    pub async fn run(self, store: &super::StoreConfig) -> anyhow::Result<Status> {
        let store = super::open(store).await?;
        let now = super::now();
        match self {
            Command::List { format } => {
                let overrides = store.open_overrides().await?;
                if format == ListFormat::Json {
                    super::print_out(&(serde_json::to_string_pretty(&overrides)? + "\n"))?;
                    return Ok(Status::Ok);
                }
                if overrides.is_empty() {
                    super::print_out("No open overrides.\n")?;
                    return Ok(Status::Ok);
                }
                let mut out = String::new();
                let _ = writeln!(
                    out,
                    "{:>5}  {:<20} {:<28} {:<14} {:<26} REASON",
                    "ID", "KIND", "RESOURCE", "ACTOR", "UNTIL"
                );
                for o in &overrides {
                    let until = match o.expires_at {
                        Some(t) if !o.is_active(now) => format!("expired {}", t.format("%Y-%m-%d %H:%M")),
                        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        None => "until cleared".into(),
                    };
                    let _ = writeln!(
                        out,
                        "{:>5}  {:<20} {:<28} {:<14} {:<26} {}",
                        o.id, o.kind, o.key, o.actor, until, o.reason
                    );
                }
                super::print_out(&out)?;
            }
            Command::Clear { id, all: _, actor } => {
                let actor = actor.unwrap_or_else(super::default_actor);
                let n = store.clear_overrides(id, &actor, "cli", now).await?;
                super::print_out(&format!(
                    "Cleared {n} override{}; the next reconcile restores git's values.\n",
                    if n == 1 { "" } else { "s" }
                ))?;
            }
        }
        Ok(Status::Ok)
    }
}
