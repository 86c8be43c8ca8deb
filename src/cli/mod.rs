//! The command line: global options, the subcommands, and how results become exit codes.

mod completions;
mod diff;
mod export;
mod health;
mod keys;
mod migrate;
mod notify;
mod overrides;
mod progress;
mod reconcile;
mod schema;
mod serve;
mod validate;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::desired::{Cores, LoadError, Loaded, StateDir};
use crate::store::{DEFAULT_DATABASE_URL, Db, StoreOptions};

/// What `--version` says: the version, the commit built, how it was built, and what is compiled
/// in (the crate has no optional features: every build has all of these).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("VALHALLA_OPS_GIT_COMMIT"),
    "\nbuild: ",
    env!("VALHALLA_OPS_BUILD"),
    "\nfeatures: ",
    "sqlite postgres memory-counters redis-counters grpc-envoy-rls tls-rustls",
);

/// valhalla-ops: the GitOps control plane of the Valhalla API platform.
#[derive(Debug, Parser)]
#[command(name = "valhalla-ops", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("VALHALLA_OPS_GIT_COMMIT"), ")"), long_version = LONG_VERSION, about, long_about = None)]
pub struct Cli {
    /// Database: postgres://… in production, or a SQLite file (the default, created on first use).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    pub database_url: String,

    /// Directory of the desired state: every *.yaml/*.yml file below it is read.
    #[arg(
        long,
        env = "VALHALLA_STATE",
        default_value = "state",
        global = true,
        hide_env_values = true
    )]
    pub state: PathBuf,

    /// The largest state file read, in MiB; a larger one is refused without being read whole.
    #[arg(
        long,
        env = "VALHALLA_MAX_FILE_MIB",
        default_value_t = crate::desired::files::DEFAULT_MAX_FILE_BYTES / (1024 * 1024),
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..=4096),
        global = true,
        hide_env_values = true
    )]
    pub max_file_mib: u64,

    /// Seconds an apply waits for another reconcile's lock before failing.
    #[arg(
        long,
        env = "VALHALLA_LOCK_TIMEOUT",
        default_value_t = 15,
        value_name = "SECONDS",
        global = true,
        hide_env_values = true
    )]
    pub lock_timeout: u64,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the state directory offline (no database).
    Validate(validate::Args),
    /// Plan the state against the database and apply the difference in one transaction.
    Reconcile(reconcile::Args),
    /// Plan the change between two state directories, with no database (for pull requests).
    Diff(diff::Args),
    /// Write the database's resources as state files that reconcile loads back.
    Export(export::Args),
    /// Apply pending database migrations.
    Migrate,
    /// Serve the HTTP API (reads, emergency overrides) until Ctrl-C or SIGTERM.
    Serve(Box<serve::Args>),
    /// Ask the `serve` on this host whether it is ready (exit 0) or not (exit 1): a container's
    /// health check.
    Health(health::Args),
    /// List or clear emergency overrides.
    #[command(subcommand)]
    Overrides(overrides::Command),
    /// Generate API keys.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Test the notification sinks the state declares.
    #[command(subcommand)]
    Notify(notify::Command),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Print the man page (roff), or write every page (one per subcommand) into a directory.
    Man(completions::ManArgs),
    /// Print the JSON Schema (draft 2020-12) of the state files, for editors.
    Schema,
}

/// Where the store is and how to use it, from the global options.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub options: StoreOptions,
}

/// What a subcommand ended with, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// `--detailed-exitcode` and the plan has changes.
    Changes,
}

/// Variables read besides the options' own (`#[arg(env)]`).
const OTHER_VARIABLES: [&str; 4] = ["RUST_LOG", "NO_COLOR", "HOSTNAME", "USER"];

/// Every environment variable valhalla-ops reads: each option's, at any depth, and the others.
fn variables_read() -> Vec<String> {
    fn walk(command: &clap::Command, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env().and_then(|n| n.to_str()) {
                out.push(name.to_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut names: Vec<String> = OTHER_VARIABLES.iter().map(|&n| n.to_owned()).collect();
    walk(&<Cli as clap::CommandFactory>::command(), &mut names);
    names.sort();
    names.dedup();
    names
}

/// The variables of `set` that look like a misspelt setting (`DATABSE_URL`, `VALHALLA_COUNTER`:
/// within two edits of one valhalla-ops reads, or the same but for case), each with the one
/// meant. A setting misspelt is otherwise silently ignored, and its default used instead.
pub fn mistyped_settings(set: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let read = variables_read();
    let mut found: Vec<(String, String)> = set
        .filter(|name| name.len() >= 6 && !read.contains(name))
        .filter_map(|name| {
            let meant = read
                .iter()
                .map(|r| (strsim::levenshtein(&name.to_ascii_uppercase(), r), r))
                .filter(|(distance, _)| *distance <= 2)
                .min()?
                .1
                .clone();
            Some((crate::text::shown(&name), meant))
        })
        .collect();
    found.sort();
    found
}

impl Cli {
    /// Whether the command runs until stopped (`serve`, `reconcile --watch`): its log says more.
    pub fn is_service(&self) -> bool {
        match &self.command {
            Command::Serve(_) => true,
            Command::Reconcile(args) => args.watches(),
            _ => false,
        }
    }

    /// The store settings of the global options.
    fn store(&self) -> StoreConfig {
        StoreConfig {
            url: self.database_url.clone(),
            options: StoreOptions {
                lock_timeout: std::time::Duration::from_secs(self.lock_timeout),
                ..if self.is_service() {
                    StoreOptions::serving()
                } else {
                    StoreOptions::default()
                }
            },
        }
    }
}

/// The global options that only some subcommands use, by field name.
const DATABASE: &[&str] = &["database_url", "lock_timeout"];
const STATE: &[&str] = &["state", "max_file_mib"];

/// Subcommands, by path, with the global options they have no use for: their help leaves them
/// out (they are still accepted, so that scripts passing them everywhere keep working).
const UNUSED_GLOBALS: &[(&[&str], &[&[&str]])] = &[
    (&["validate"], &[DATABASE]),
    (&["diff"], &[DATABASE, &["state"]]),
    // Reads take no lock: the lock's wait is for commands that write.
    (&["export"], &[STATE, &["lock_timeout"]]),
    (&["migrate"], &[STATE]),
    (&["overrides"], &[STATE]),
    (&["overrides", "list"], &[STATE, &["lock_timeout"]]),
    (&["overrides", "clear"], &[STATE]),
    (&["keys"], &[DATABASE, STATE]),
    (&["notify"], &[DATABASE]),
    (&["notify", "test"], &[DATABASE]),
    (&["keys", "generate"], &[DATABASE, STATE]),
    (&["completions"], &[DATABASE, STATE]),
    (&["man"], &[DATABASE, STATE]),
    (&["schema"], &[DATABASE, STATE]),
    (&["health"], &[DATABASE, STATE]),
];

impl Cli {
    /// Parses `args` as the binary does, exiting as clap does on an error or a request for help;
    /// a subcommand's help lists only the global options it uses.
    pub fn from_args(args: Vec<std::ffi::OsString>) -> Cli {
        use clap::Parser as _;
        match Cli::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => match help_without_unused(&args) {
                Some(help) => {
                    let _ = print_out(&help);
                    std::process::exit(0)
                }
                None => e.exit(),
            },
            Err(e) => e.exit(),
        }
    }

    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<Status> {
        for (set, meant) in
            mistyped_settings(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))
        {
            tracing::warn!("{set} is set, but valhalla-ops reads no such variable: did you mean {meant}?");
        }
        let store = self.store();
        // Every state directory is read with the global size cap.
        let max_file_bytes = self.max_file_mib * 1024 * 1024;
        let state_dir = |path: &std::path::Path| StateDir {
            path: path.to_owned(),
            max_file_bytes,
        };
        let state = state_dir(&self.state);
        match self.command {
            Command::Validate(args) => args.run(&state),
            Command::Diff(args) => {
                let (old, new) = (state_dir(&args.old), state_dir(&args.new));
                args.run(&old, &new)
            }
            Command::Reconcile(args) => args.run(&state, &store, self.quiet).await,
            Command::Export(args) => args.run(&store).await,
            Command::Migrate => migrate::run(&store).await,
            Command::Serve(args) => args.run(&state, &store).await,
            Command::Health(args) => args.run().await,
            Command::Overrides(cmd) => cmd.run(&store).await,
            Command::Keys(cmd) => cmd.run(),
            Command::Notify(cmd) => cmd.run(&state).await,
            Command::Completions(args) => args.run(),
            Command::Man(args) => args.run(),
            Command::Schema => schema::run(),
        }
    }
}

/// The help of the subcommand `args` ask about, without the global options it has no use for;
/// `None` for one that uses them all (clap's own help is right).
fn help_without_unused(args: &[std::ffi::OsString]) -> Option<String> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    // Built, so that every subcommand holds the global options and its full name.
    cmd.build();
    // The words that name subcommands, in order (`help keys generate` and `keys generate -h`
    // alike); option values are skipped.
    let mut path = Vec::new();
    let mut at = &cmd;
    for word in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if let Some(sub) = at.find_subcommand(word).filter(|s| s.get_name() != "help") {
            path.push(sub.get_name().to_owned());
            at = sub;
        }
    }
    let (_, groups) = UNUSED_GLOBALS.iter().find(|(p, _)| p.iter().eq(path.iter()))?;
    let mut sub = &mut cmd;
    for name in &path {
        sub = sub.find_subcommand_mut(name)?;
    }
    let mut shown = std::mem::replace(sub, clap::Command::new(""));
    for id in groups.iter().flat_map(|g| g.iter()) {
        shown = shown.mut_arg(*id, |a| a.hide(true));
    }
    let long = args.iter().any(|a| a == "--help" || a == "help");
    let help = if long {
        shown.render_long_help()
    } else {
        shown.render_help()
    };
    Some(help.ansi().to_string())
}

/// Maps the outcome to the documented exit codes: 0 ok, 1 error, 2 changes.
pub fn exit_code(result: anyhow::Result<Status>) -> ExitCode {
    match result {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Changes) => ExitCode::from(2),
        Err(e) => {
            let line = crate::text::one_line(&one_line(&e));
            let _ = writeln!(std::io::stderr(), "valhalla-ops: error: {line}");
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the line already holds
/// (drivers often repeat their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Opens the store of `url` (migrating it), with the URL in the error.
async fn open(config: &StoreConfig) -> anyhow::Result<Db> {
    let db = Db::open_with(&config.url, config.options)
        .await
        .context("cannot open the store")?;
    tracing::info!(
        "using the {} store at {}",
        db.backend(),
        crate::text::url(&config.url)
    );
    Ok(db)
}

/// Loads the state directory, printing warnings, and every error when it is invalid.
fn load(state: &StateDir, now: chrono::DateTime<chrono::Utc>, cores: Cores) -> anyhow::Result<Loaded> {
    let print = |kind: &str, diags: &[crate::desired::Diagnostic]| {
        // Warnings follow the log level: `-q` (errors only) hides them.
        if kind == "warning" && !tracing::enabled!(tracing::Level::WARN) {
            return;
        }
        let mut err = anstream::stderr();
        for d in diags {
            let _ = writeln!(err, "{}", d.line(kind));
        }
    };
    let shown = crate::text::path(&state.path);
    match state.load_on(now, cores) {
        Ok(loaded) => {
            print("warning", &loaded.warnings);
            tracing::info!("loaded {} state files from {shown}", loaded.files);
            Ok(loaded)
        }
        Err(LoadError::Invalid {
            errors,
            warnings,
            omitted,
        }) => {
            print("error", &errors);
            if omitted > 0 {
                let _ = writeln!(
                    anstream::stderr(),
                    "… and {omitted} more errors, not shown (only the first {} are)",
                    errors.len()
                );
            }
            print("warning", &warnings);
            let n = errors.len() + omitted;
            anyhow::bail!(
                "{shown} is invalid ({n} error{}); nothing was written",
                if n == 1 { "" } else { "s" }
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes to stdout through `anstream` (styles stripped for pipes and `NO_COLOR`); a closed
/// pipe (`| head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = anstream::stdout();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Whether stdout shows colours.
fn stdout_color() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
}

/// The actor recorded for CLI runs when `--actor` is not given.
fn default_actor() -> String {
    std::env::var("USER")
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into())
}

/// `--watch` and `--interval`, shared by `reconcile` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Keep reconciling: on every change in the state directory (debounced), every --interval,
    /// and when an override expires.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: a full pass at least this often, healing drift (e.g. 30s, 5m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION", requires = "watch")]
    pub interval: std::time::Duration,
}

impl WatchArgs {
    /// The loop's options.
    pub fn options(
        &self,
        actor: String,
        prune: bool,
        allow_mass_removal: bool,
    ) -> crate::watch::WatchOptions {
        crate::watch::WatchOptions {
            interval: self.interval.max(std::time::Duration::from_millis(100)),
            actor,
            prune,
            allow_mass_removal,
            ..Default::default()
        }
    }
}

/// Opens the store, retrying with backoff while the database is unreachable: a watch loop
/// outlives database outages, starting in one included.
async fn open_retrying(config: &StoreConfig) -> anyhow::Result<Db> {
    let backoff = crate::backoff::Backoff {
        first: std::time::Duration::from_millis(500),
        max: std::time::Duration::from_secs(30),
    };
    let mut failures = 0;
    loop {
        match Db::open_with(&config.url, config.options).await {
            Ok(db) => return Ok(db),
            Err(e @ crate::store::StoreError::UnsupportedUrl(_)) => {
                return Err(anyhow::Error::new(e).context("cannot open the store"));
            }
            Err(e) => {
                failures += 1;
                let wait = backoff.after(failures);
                tracing::warn!("cannot open the store: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

use crate::clock::{now, system as clock};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_within_two_edits_is_named_with_the_one_meant() {
        let set = [
            "DATABSE_URL",
            "VALHALLA_COUNTER",
            "valhalla_state",
            "DATABASE_URL",
            "PATH",
            "HOME",
            "VALHALLA_SOMETHING_ELSE",
            "CARGO_PKG_NAME",
        ]
        .map(String::from);
        assert_eq!(
            mistyped_settings(set.into_iter()),
            [
                ("DATABSE_URL".to_owned(), "DATABASE_URL".to_owned()),
                ("VALHALLA_COUNTER".to_owned(), "VALHALLA_COUNTERS".to_owned()),
                ("valhalla_state".to_owned(), "VALHALLA_STATE".to_owned()),
            ]
        );
        assert!(variables_read().contains(&"VALHALLA_MAX_CONNECTIONS_PER_SOURCE".to_owned()));
    }
}
