//! `completions` and `man`: shell completions and the man page, from the clap definitions.

use anyhow::Context as _;
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
        clap_complete::generate(self.shell, &mut Cli::command(), BIN, &mut out);
        let mut script = String::from_utf8_lossy(&out).into_owned();
        if self.shell == clap_complete::Shell::Bash {
            script = fix_bash_states(&script);
        }
        super::print_out(&script)?;
        Ok(Status::Ok)
    }
}

/// The binary's name, as shells see it.
const BIN: &str = "valhalla-ops";

/// clap_complete's bash script for a binary with a hyphen in its name spells the state of a
/// subcommand two ways (clap-rs/clap#6421): its loop arrives at `valhalla__ops__subcmd__reconcile`
/// while the `case` arms read `valhalla__subcmd__ops__subcmd__reconcile`, so no subcommand's
/// options ever complete. The arms are respelled the way the loop spells them; once clap_complete
/// is fixed, the misspelling no longer occurs and this changes nothing.
fn fix_bash_states(script: &str) -> String {
    let wrong = BIN.replace('-', "__subcmd__");
    let right = BIN.replace('-', "__");
    script.replace(&wrong, &right)
}

/// Options of `man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write the top page and one page per subcommand it lists (`valhalla-ops-reconcile.1`, …)
    /// into this directory, instead of printing the top page.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
}

impl ManArgs {
    /// Prints the man page (roff), e.g. `valhalla-ops man > valhalla-ops.1`, or writes them all,
    /// e.g. `valhalla-ops man --out /usr/local/share/man/man1`.
    pub fn run(self) -> anyhow::Result<Status> {
        // Without the `help` subcommand, which would be listed with no page of its own.
        let command = Cli::command().disable_help_subcommand(true);
        match self.out {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .and_then(|()| clap_mangen::generate_to(command, &dir))
                    .with_context(|| format!("cannot write the man pages to {}", crate::text::path(&dir)))?;
            }
            None => {
                let mut out = Vec::new();
                clap_mangen::Man::new(command).render(&mut out)?;
                super::print_out(&String::from_utf8_lossy(&out))?;
            }
        }
        Ok(Status::Ok)
    }
}
