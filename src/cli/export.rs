//! `export`: write the store as state files, with git's values where overrides hold resources.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Status;
use crate::desired::export::Source;

/// Options of `export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the files into (created if missing); without it, one file on stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace files of the same names already in DIR (without it, nothing is written then).
    #[arg(long, requires = "out")]
    force: bool,
}

impl Args {
    /// Exports the store.
    pub async fn run(self, store: &super::StoreConfig) -> anyhow::Result<Status> {
        let store = super::open(store).await?;
        let actual = store.snapshot().await?;
        let held: Vec<_> = (store.held(super::now()).await?)
            .into_iter()
            .map(|h| (h.hold, h.git_value))
            .collect();
        let git_mode = store.maintenance().await?.git;
        let source = Source {
            actual: &actual,
            held: &held,
            git_mode: Some(&git_mode),
        };
        let notes = match &self.out {
            Some(dir) => {
                let (written, notes) = crate::desired::export::write(source, dir, self.force)
                    .with_context(|| format!("cannot write the export to {}", crate::text::path(dir)))?;
                for path in written {
                    tracing::info!("wrote {}", path.display());
                }
                super::print_out(&format!("Exported the store to {}.\n", crate::text::path(dir)))?;
                notes
            }
            None => {
                let (text, notes) =
                    crate::desired::export::single(source).context("cannot write the store as YAML")?;
                super::print_out(&text)?;
                notes
            }
        };
        // An override's value is not git's: say which resources were exported as git declares
        // them, so that nobody takes the store's emergency values for the state to commit.
        let mut err = anstream::stderr();
        for note in notes {
            let _ = writeln!(err, "note: {note}");
        }
        Ok(Status::Ok)
    }
}
