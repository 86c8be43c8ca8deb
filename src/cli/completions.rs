//! `completions` and `man`: shell completions and the man page, from the clap definitions.

use clap::CommandFactory as _;

use super::{Cli, Status};

/// Options of `completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete in.
    shell: clap_complete::Shell,
}

impl Args {
    /// Prints the completion script, e.g. `valhalla-ops completions bash > /etc/bash_completion.d/valhalla-ops`.
    pub fn run(self) -> anyhow::Result<Status> {
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut Cli::command(), "valhalla-ops", &mut out);
        super::print_out(&String::from_utf8_lossy(&out))?;
        Ok(Status::Ok)
    }
}

/// Prints the man page (roff), e.g. `valhalla-ops man > valhalla-ops.1`.
pub fn man() -> anyhow::Result<Status> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    super::print_out(&String::from_utf8_lossy(&out))?;
    Ok(Status::Ok)
}
