//! The desired state: every YAML file of a state directory, validated all-or-nothing.

pub mod export;
pub mod files;
pub mod kept;
mod load;
pub mod position;
pub mod raw;

pub use load::{Cores, Loader, MAX_ERRORS, MODELINE};

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Actual, Client, FeatureFlag, Maintenance, Profile, RateLimitRule, Sinks, Stored, Window};
use position::Pos;

/// The validated desired state of a whole directory; collections sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DesiredState {
    pub rules: Vec<RateLimitRule>,
    pub clients: Vec<Client>,
    pub windows: Vec<Window>,
    pub flags: Vec<FeatureFlag>,
    /// `None` when no file declares the mode: the stored mode is left as it is.
    pub maintenance: Option<Maintenance>,
    /// `None` when no file declares it: the stored profile is left as it is.
    pub profile: Option<Profile>,
    /// `None` when no file declares `notifications:`: the stored sinks are left as they are
    /// (`notifications: []` removes them).
    pub notifications: Option<Sinks>,
}

impl DesiredState {
    /// A store holding exactly this state, all owned by git and without overrides: what a store
    /// reconciled to it looks like, for planning between two states with no database.
    pub fn as_store(&self) -> Actual {
        fn stored<T: Clone>(items: &[T]) -> Vec<Stored<T>> {
            (1..)
                .zip(items)
                .map(|(id, value)| Stored {
                    id,
                    owner: crate::domain::Owner::Git,
                    value: value.clone(),
                })
                .collect()
        }
        Actual {
            rules: stored(&self.rules),
            clients: stored(&self.clients),
            windows: stored(&self.windows),
            flags: stored(&self.flags),
            maintenance: self
                .maintenance
                .as_ref()
                .map(|m| stored(std::slice::from_ref(m)).remove(0)),
            profile: self
                .profile
                .as_ref()
                .map(|p| stored(std::slice::from_ref(p)).remove(0)),
            notifications: self
                .notifications
                .as_ref()
                .map(|n| stored(std::slice::from_ref(n)).remove(0)),
            overrides: Vec::new(),
        }
    }

    /// A digest of the whole state, so a saved plan can tell that the files changed since.
    pub fn fingerprint(&self) -> String {
        self.set_digest().hex()
    }

    /// The digest [`DesiredState::fingerprint`] shows, kept up to date item by item by a
    /// directory followed between loads.
    pub fn set_digest(&self) -> crate::model::SetDigest {
        let mut sum = crate::model::SetDigest::default();
        sum.add_all(self.rules.iter());
        sum.add_all(self.clients.iter());
        sum.add_all(self.windows.iter());
        sum.add_all(self.flags.iter());
        sum.add_all(self.maintenance.iter());
        sum.add_all(self.profile.iter());
        sum.add_all(self.notifications.iter());
        sum
    }
}

/// A message about a place in a state file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Pos,
    pub message: String,
}

impl Diagnostic {
    /// `file:line:column: kind: message` on one line, whatever the path and the message hold.
    pub fn line(&self, kind: &str) -> String {
        let Pos { line, column } = self.pos;
        let file = crate::text::one_line(&self.file.to_string_lossy());
        let message = crate::text::one_line(&self.message);
        format!(
            "{file}:{line}:{column}: {kind}{}{message}",
            if kind.is_empty() { "" } else { ": " }
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line(""))
    }
}

/// A state directory that loaded, with its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub state: DesiredState,
    pub warnings: Vec<Diagnostic>,
    /// How many files were read.
    pub files: usize,
    /// Which file declared what, for a directory followed between loads; `None` from a loader
    /// [letting texts go](Loader::letting_texts_go).
    pub origin: Option<Origin>,
}

/// The files a state was read from, and for each item of the state (in the state's order) the
/// index of its file.
#[derive(Debug, Default)]
pub struct Origin {
    /// Each file's path and text.
    pub files: Vec<(PathBuf, String)>,
    pub rules: Vec<usize>,
    pub clients: Vec<usize>,
    pub windows: Vec<usize>,
    pub flags: Vec<usize>,
    pub maintenance: Option<usize>,
    pub profile: Option<usize>,
    pub notifications: Option<usize>,
}

/// Why a state directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read state directory {}: {source}", crate::text::path(path))]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "no state files (*.yaml, *.yml) under {}: an empty desired state would remove every \
         git-owned resource; if that is what you mean, add a file containing `version: 1`",
        crate::text::path(.0)
    )]
    Empty(PathBuf),
    #[error("the desired state is invalid ({} error{})", errors.len() + omitted, if errors.len() + omitted == 1 { "" } else { "s" })]
    Invalid {
        /// The first [`MAX_ERRORS`] errors found.
        errors: Vec<Diagnostic>,
        warnings: Vec<Diagnostic>,
        /// Errors found past [`MAX_ERRORS`], counted but not kept.
        omitted: usize,
    },
}

/// A state directory and how large one of its files may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    pub path: PathBuf,
    /// Files larger than this are refused without being read whole.
    pub max_file_bytes: u64,
}

impl StateDir {
    /// `path` with the default cap, [`files::DEFAULT_MAX_FILE_BYTES`].
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir {
            path: path.into(),
            max_file_bytes: files::DEFAULT_MAX_FILE_BYTES,
        }
    }

    /// Reads and validates every `*.yaml`/`*.yml` file under the directory, in sorted path
    /// order, parsed on every core (see [`Loader::add_found`]). Each file is read just before it
    /// is parsed and its text let go after (see [`Loader::letting_texts_go`]): the peak memory is
    /// the state's, not its files' too.
    pub fn load(&self, now: DateTime<Utc>) -> Result<Loaded, LoadError> {
        self.load_on(now, Cores::All)
    }

    /// [`StateDir::load`] on the given cores.
    pub fn load_on(&self, now: DateTime<Utc>, cores: Cores) -> Result<Loaded, LoadError> {
        self.load_with(Loader::letting_texts_go(now, self.max_file_bytes), cores)
    }

    /// [`StateDir::load`] keeping the files' texts, for the [`Origin`] of a directory followed
    /// between loads.
    pub fn load_to_follow(&self, now: DateTime<Utc>) -> Result<Loaded, LoadError> {
        self.load_with(Loader::new(now), Cores::All)
    }

    fn load_with(&self, mut loader: Loader, cores: Cores) -> Result<Loaded, LoadError> {
        let dir = &self.path;
        let found = files::find_state_files(dir).map_err(|source| LoadError::Io {
            path: dir.clone(),
            source,
        })?;
        if found.is_empty() {
            return Err(LoadError::Empty(dir.clone()));
        }
        loader.add_found(found, self.max_file_bytes, cores);
        loader.finish()
    }
}

/// Reads and validates every state file under `dir`, with the default size cap.
pub fn load_dir(dir: &Path, now: DateTime<Utc>) -> Result<Loaded, LoadError> {
    StateDir::new(dir).load(now)
}
