//! `keys generate`: a new random API key and the hash that goes into git.

use super::Status;
use crate::domain::{ClientName, NewKey};

/// Key commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a new random API key and its key_sha256 (the key is shown once, never stored).
    Generate {
        /// Also print the client entry to paste into a state file.
        #[arg(long, value_name = "NAME", value_parser = |s: &str| ClientName::parse(s))]
        client: Option<ClientName>,
    },
}

impl Command {
    /// Runs the key command.
    pub fn run(self) -> anyhow::Result<Status> {
        let Command::Generate { client } = self;
        let key = NewKey::generate().map_err(|e| anyhow::anyhow!("cannot read random bytes: {e}"))?;
        let mut out = format!(
            "key:        {}\nkey_sha256: {}\n\nGive the key to its client through your secret manager; it is not shown again.\nOnly key_sha256 goes into git.\n",
            key.key,
            key.sha256.as_str()
        );
        if let Some(name) = client {
            out.push_str(&format!(
                "\nclients:\n  - name: {name}\n    type: script\n    role: reader\n    key_sha256: {}\n",
                key.sha256.as_str()
            ));
        }
        super::print_out(&out)?;
        Ok(Status::Ok)
    }
}
