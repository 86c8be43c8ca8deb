//! `export`: write the store as state files.

use std::path::PathBuf;

use anyhow::Context as _;

use super::Status;

/// Options of `export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the files into (created if missing); without it, one file on stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl Args {
    /// Exports the store.
    pub async fn run(self, store: &super::StoreConfig) -> anyhow::Result<Status> {
        let store = super::open(store).await?;
        let actual = store.snapshot().await?;
        match &self.out {
            Some(dir) => {
                let written = crate::desired::export::write(&actual, dir)
                    .with_context(|| format!("cannot write the export to {}", dir.display()))?;
                for path in written {
                    tracing::info!("wrote {}", path.display());
                }
                super::print_out(&format!("Exported the store to {}.\n", dir.display()))?;
            }
            None => super::print_out(
                &crate::desired::export::single(&actual).context("cannot write the store as YAML")?,
            )?,
        }
        Ok(Status::Ok)
    }
}
