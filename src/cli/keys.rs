//! `keys generate`: a new random API key, the hash that goes into git, and optionally the client
//! entry that declares it.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};

use super::Status;
use crate::desired::MODELINE;
use crate::domain::{ClientName, ClientType, KeySha256, NewKey, Role};

/// Key commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a new random API key and its key_sha256 (the key is shown once, never stored).
    Generate(Generate),
}

/// What `keys generate` prints or writes.
#[derive(Debug, clap::Args)]
pub struct Generate {
    /// Also print the client entry that declares the key, to add under `clients:` in a state file.
    #[arg(long, value_name = "NAME", value_parser = |s: &str| ClientName::parse(s))]
    client: Option<ClientName>,

    /// The client's role.
    #[arg(long, requires = "client", default_value = "reader", value_parser = role_parser())]
    role: Role,

    /// The kind of software the client is.
    #[arg(long = "type", requires = "client", default_value = "script", value_parser = type_parser())]
    client_type: ClientType,

    /// Write a new state file declaring the client (refused if the file exists), instead of
    /// printing the entry.
    #[arg(long, value_name = "FILE", requires = "client")]
    out: Option<PathBuf>,
}

fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.iter().map(|r| r.as_str())).try_map(|s| s.parse::<Role>())
}

fn type_parser() -> impl clap::builder::TypedValueParser<Value = ClientType> {
    PossibleValuesParser::new(ClientType::ALL.iter().map(|t| t.as_str())).try_map(|s| s.parse::<ClientType>())
}

impl Command {
    /// Runs the key command.
    pub fn run(self) -> anyhow::Result<Status> {
        let Command::Generate(args) = self;
        let key = NewKey::generate().map_err(|e| anyhow::anyhow!("cannot read random bytes: {e}"))?;
        let mut out = format!(
            "key:        {}\nkey_sha256: {}\n\nGive the key to its client through your secret manager; it is not shown again.\nOnly key_sha256 goes into git.\n",
            key.key,
            key.sha256.as_str()
        );
        if let Some(name) = &args.client {
            let entry = entry(name, args.role, args.client_type, &key.sha256);
            match &args.out {
                Some(path) => {
                    write_new(path, &format!("{MODELINE}\nversion: 1\nclients:\n{entry}"))?;
                    out.push_str(&format!(
                        "\nWrote the client {name} ({}) to {}; commit it and reconcile.\n",
                        args.role,
                        path.display()
                    ));
                }
                None => out.push_str(&format!(
                    "\nAdd this entry under `clients:` in a state file (state/clients.yaml):\n\n{entry}"
                )),
            }
        }
        super::print_out(&out)?;
        Ok(Status::Ok)
    }
}

/// The client's entry as an item of a `clients:` list.
fn entry(name: &ClientName, role: Role, client_type: ClientType, sha256: &KeySha256) -> String {
    format!(
        "  - name: {name}\n    type: {client_type}\n    role: {role}\n    key_sha256: \"{}\"\n",
        sha256.as_str()
    )
}

/// Writes `text` to a file that must not exist yet.
fn write_new(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let shown = crate::text::path(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {shown}"))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {shown}"))
}
