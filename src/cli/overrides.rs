//! `overrides list|clear`: see and lift emergency overrides.

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
                let mut rows = vec![["ID", "KIND", "RESOURCE", "ACTOR", "UNTIL", "REASON"].map(String::from)];
                for o in &overrides {
                    let until = match o.expires_at {
                        Some(t) if !o.is_active(now) => format!("expired {}", t.format("%Y-%m-%d %H:%M")),
                        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        None => "until cleared".into(),
                    };
                    // Keys, actors and reasons come from HTTP callers: one line each, escaped.
                    let shown = |s: &str| crate::text::one_line(s);
                    rows.push([
                        o.id.to_string(),
                        o.kind.to_string(),
                        shown(&o.key),
                        shown(&o.actor),
                        until,
                        shown(&o.reason),
                    ]);
                }
                let out = table(&rows);
                super::print_out(&out)?;
            }
            Command::Clear { id, all: _, actor } => {
                let actor = actor.unwrap_or_else(super::default_actor);
                let lift = crate::store::Lift {
                    actor: &actor,
                    source: "cli",
                    reason: None,
                    now,
                };
                let which = id.map_or(crate::store::Lifting::Every, crate::store::Lifting::One);
                let n = store.clear_overrides(which, &lift).await?;
                super::print_out(&format!(
                    "Cleared {n} override{}; the next reconcile restores git's values.\n",
                    if n == 1 { "" } else { "s" }
                ))?;
            }
        }
        Ok(Status::Ok)
    }
}

/// Rows as columns padded to their widest cell (the last column unpadded), two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let width = |col: usize| rows.iter().map(|r| r[col].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..N).map(width).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (col, cell) in row.iter().enumerate() {
            if col + 1 < N {
                let pad = widths[col] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
