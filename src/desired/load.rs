//! The loader: state files' texts parsed, typed and validated across files, each error with
//! its position (a file is read straight into its types first, and item by item through the
//! YAML tree only when that fails).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::position::{self, Pos, PositionIndex, join};
use super::raw::{RawClient, RawFile, RawFlag, RawProfile, RawRule, RawWindow, SchemaFile};
use super::{DesiredState, Diagnostic, LoadError, Loaded, Origin, files};
use crate::calendar::{Form, Interval, When};
use crate::domain::{MaxRequests, RuleKey, Scope, WindowSeconds, parse_time};
use crate::model::{Client, FeatureFlag, Maintenance, Profile, RateLimitRule, Resource, Sink, Sinks, Window};

/// Where something is in a file: a node by its YAML path, a field of an item (its path written
/// out only when reported: a place is kept for every item), or a position the parser reported.
#[derive(Debug, Clone)]
enum At {
    Value(String),
    Key(String),
    Field(Entry, &'static str),
    Pos(Pos),
}

/// The sections that list items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Rules,
    Clients,
    Windows,
    Flags,
}

impl Section {
    /// An item's identity as its text writes it (`ip:10.0.0.1`, a name), when it can be read
    /// without typing the item; the field it is written in.
    fn identity(self, item: &Value) -> Option<(String, &'static str)> {
        let text = |field: &str| item.get(field).and_then(Value::as_str);
        match self {
            Section::Rules => {
                let scope = text("scope")?;
                Some((
                    format!("{scope}:{}", text("key").unwrap_or(RuleKey::GLOBAL)),
                    "scope",
                ))
            }
            Section::Clients | Section::Windows | Section::Flags => Some((text("name")?.to_owned(), "name")),
        }
    }

    /// What the section's items are, for messages.
    fn what(self) -> &'static str {
        match self {
            Section::Rules => "rate-limit rule",
            Section::Clients => "client",
            Section::Windows => "maintenance window",
            Section::Flags => "feature flag",
        }
    }

    /// The section's YAML path.
    fn path(self) -> &'static str {
        match self {
            Section::Rules => "rate_limits",
            Section::Clients => "clients",
            Section::Windows => "maintenance.windows",
            Section::Flags => "feature_flags",
        }
    }
}

/// An item of a section, by its index there.
#[derive(Debug, Clone, Copy)]
struct Entry {
    section: Section,
    index: u32,
}

impl Entry {
    fn new(section: Section, index: usize) -> Entry {
        Entry {
            section,
            // A file is at most a few GiB, so an item's index fits.
            index: u32::try_from(index).unwrap_or(u32::MAX),
        }
    }

    /// The item's YAML path, `rate_limits[3]`.
    fn path(self) -> String {
        format!("{}[{}]", self.section.path(), self.index)
    }

    /// The YAML path of one of the item's fields, `rate_limits[3].key`.
    fn field(self, field: &str) -> String {
        join(&self.path(), field)
    }
}

/// A place in one of the loaded files.
#[derive(Debug, Clone)]
struct Place {
    file: usize,
    at: At,
}

/// A diagnostic whose line and column are looked up only when it is reported.
struct Pending {
    place: Place,
    message: String,
}

/// A loaded file. Its position index is built on first need: a valid file never needs one,
/// and building it costs more than parsing the file.
struct Source {
    path: PathBuf,
    text: Text,
    index: OnceLock<PositionIndex>,
}

/// A loaded file's text, kept to position diagnostics once every file is read.
enum Text {
    Held(String),
    /// Let go once the file was read (a large state's files are then held no longer than each
    /// one's parse), and read again from disk if a diagnostic needs a position there, as long
    /// as it is still the text that was read.
    OnDisk {
        len: usize,
        hash: u64,
        max_bytes: u64,
    },
}

impl Text {
    /// The text let go: what is kept to know it again on disk.
    fn let_go(text: &str, max_bytes: u64) -> Text {
        Text::OnDisk {
            len: text.len(),
            hash: Text::hash(text),
            max_bytes,
        }
    }

    fn hash(text: &str) -> u64 {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(text)
    }
}

impl Source {
    fn index(&self) -> PositionIndex {
        match &self.text {
            Text::Held(text) => PositionIndex::build(text),
            Text::OnDisk { len, hash, max_bytes } => match files::read(&self.path, *max_bytes) {
                Ok(text) if text.len() == *len && Text::hash(&text) == *hash => PositionIndex::build(&text),
                // Changed or gone since it was read: where things were is no longer known.
                _ => PositionIndex::build(""),
            },
        }
    }
}

/// The loaded files, to turn places into positions.
struct Sources(Vec<Source>);

impl Sources {
    fn pos(&self, place: &Place) -> Pos {
        let source = &self.0[place.file];
        let index = || source.index.get_or_init(|| source.index());
        match &place.at {
            At::Pos(pos) => *pos,
            At::Value(path) => index().value(path),
            At::Key(path) => index().key(path),
            At::Field(entry, field) => index().value(&entry.field(field)),
        }
    }

    /// `file:line:column`, for messages that name another place.
    fn show(&self, place: &Place) -> String {
        let Pos { line, column } = self.pos(place);
        format!("{}:{line}:{column}", self.0[place.file].path.display())
    }

    fn diagnostics(&self, pending: Vec<Pending>) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = pending
            .into_iter()
            .map(|p| Diagnostic {
                file: self.0[p.place.file].path.clone(),
                pos: self.pos(&p.place),
                message: p.message,
            })
            .collect();
        out.sort();
        out
    }
}

/// Accumulates files, then validates across them; usable on in-memory text for tests.
pub struct Loader {
    now: DateTime<Utc>,
    sources: Vec<Source>,
    errors: Errors,
    warnings: Vec<Pending>,
    rules: Vec<(RateLimitRule, Place)>,
    clients: Vec<(Client, Place)>,
    windows: Vec<(Window, Place)>,
    flags: Vec<(FeatureFlag, Place)>,
    modes: Vec<(Maintenance, Place)>,
    profiles: Vec<(Profile, Place)>,
    sinks: Vec<(Sinks, Place)>,
    /// Items with an error of their own, by their identity as written: checked for a twin too,
    /// so that a resource declared twice is reported with its other errors, not after they are
    /// fixed.
    broken: Vec<(Section, String, Place)>,
    /// Whether rules naming clients must find them among the files read (off when one file of
    /// a directory is read again alone).
    check_references: bool,
    /// Whether a file is first read straight into its types (off only to test that both ways
    /// give the same result).
    typed_first: bool,
    /// Whether files' texts are let go once read (`Some` of the size cap to read them again
    /// with); they are then not in the [`Loaded`]'s origin.
    let_go: Option<u64>,
}

/// The first line of the state files valhalla-ops writes: the YAML language server then checks
/// them against the committed schema, for files directly in `state/` at the repository's root.
pub const MODELINE: &str = "# yaml-language-server: $schema=../schema/valhalla-ops.schema.json";

/// The most errors kept: a hostile file of a million bad items must not become a million lines
/// of CI log (and the memory and time to position them); the rest are counted.
pub const MAX_ERRORS: usize = 1000;

/// The errors found so far: the first [`MAX_ERRORS`], and how many more.
#[derive(Default)]
struct Errors {
    kept: Vec<Pending>,
    omitted: usize,
}

impl Errors {
    fn push(&mut self, error: Pending) {
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(error);
        } else {
            self.omitted += 1;
        }
    }

    fn extend(&mut self, errors: impl IntoIterator<Item = Pending>) {
        for error in errors {
            self.push(error);
        }
    }
}

/// The file being read, to make places and diagnostics from YAML paths.
struct FileCx {
    file: usize,
}

impl FileCx {
    fn at(&self, path: &str) -> Place {
        Place {
            file: self.file,
            at: At::Value(path.to_owned()),
        }
    }
    fn diag(&self, path: &str, message: impl Into<String>) -> Pending {
        Pending {
            place: self.at(path),
            message: message.into(),
        }
    }
    /// The place of one of an item's fields.
    fn field(&self, entry: Entry, field: &'static str) -> Place {
        Place {
            file: self.file,
            at: At::Field(entry, field),
        }
    }
    /// A diagnostic about one of an item's fields.
    fn field_diag(&self, entry: Entry, field: &'static str, message: impl Into<String>) -> Pending {
        Pending {
            place: self.field(entry, field),
            message: message.into(),
        }
    }
    /// An error about one of an item's fields, naming the field by its path as a type error
    /// does (`maintenance.windows[0].starts_at: invalid time …`); a message that begins with
    /// the field's name has it replaced by the path (`rate_limits[2].max_requests must be …`).
    fn field_error(&self, entry: Entry, field: &'static str, message: String) -> Pending {
        let path = entry.field(field);
        let message = match message.strip_prefix(field).filter(|rest| rest.starts_with(' ')) {
            Some(rest) => format!("{path}{rest}"),
            None => format!("{path}: {message}"),
        };
        self.field_diag(entry, field, message)
    }
}

impl Loader {
    /// A loader that judges windows against `now`.
    pub fn new(now: DateTime<Utc>) -> Loader {
        Loader {
            now,
            sources: Vec::new(),
            errors: Errors::default(),
            warnings: Vec::new(),
            rules: Vec::new(),
            clients: Vec::new(),
            windows: Vec::new(),
            flags: Vec::new(),
            modes: Vec::new(),
            profiles: Vec::new(),
            sinks: Vec::new(),
            broken: Vec::new(),
            check_references: true,
            typed_first: true,
            let_go: None,
        }
    }

    /// A loader of files on disk that lets each text go once it is read: it is read again from
    /// the file (with `max_bytes` as the cap) only if a diagnostic needs a position there, and
    /// the result has no [`Origin`].
    pub fn letting_texts_go(now: DateTime<Utc>, max_bytes: u64) -> Loader {
        Loader {
            let_go: Some(max_bytes),
            ..Loader::new(now)
        }
    }

    /// A loader of one file of a directory: what the file declares is checked, and what it
    /// refers to in the other files is left to the caller.
    pub fn for_one_file(now: DateTime<Utc>) -> Loader {
        Loader {
            check_references: false,
            ..Loader::new(now)
        }
    }

    /// Reads one file's text; problems are collected, never returned early.
    pub fn add_file(&mut self, file: &Path, text: &str) {
        self.add_text(file, text.to_owned());
    }

    /// Records a file that could not be read as text (its kind, size or encoding).
    pub fn add_refusal(&mut self, file: &Path, refusal: files::Refusal) {
        let cx = self.source(file, Text::Held(String::new()));
        self.errors.push(Pending {
            place: Place {
                file: cx.file,
                at: At::Pos(refusal.pos),
            },
            message: refusal.message,
        });
    }

    fn source(&mut self, file: &Path, text: Text) -> FileCx {
        self.sources.push(Source {
            path: file.to_owned(),
            text,
            index: OnceLock::new(),
        });
        FileCx {
            file: self.sources.len() - 1,
        }
    }

    /// Reads one file's text, which the loader keeps for error positions (or lets go, see
    /// [`Loader::letting_texts_go`]).
    pub fn add_text(&mut self, file: &Path, text: String) {
        let parsed = Parsed::of(text, self.typed_first, self.let_go);
        self.add_parsed(file, parsed);
    }

    /// Reads the files found in a directory, in their order: each is read from disk and parsed
    /// on one of the `cores` (the parse is most of a load's time), and added here one after the
    /// other, so the outcome is the one [`Loader::add_text`] in turn would give.
    pub fn add_found(&mut self, found: Vec<files::Found>, max_bytes: u64, cores: Cores) {
        let (typed_first, let_go) = (self.typed_first, self.let_go);
        let parse = |found: files::Found| {
            let file = found.read(max_bytes);
            let text = file.text.map(|text| Parsed::of(text, typed_first, let_go));
            (file.path, text)
        };
        in_order(found, cores, parse, |(path, text)| match text {
            Ok(parsed) => self.add_parsed(&path, parsed),
            Err(refusal) => self.add_refusal(&path, refusal),
        });
    }

    fn add_parsed(&mut self, file: &Path, parsed: Parsed) {
        let Parsed { text, read } = parsed;
        let cx = self.source(file, text);
        match read {
            Read::TooDeep(pos) => {
                let message = format!(
                    "collections are nested more than {} levels deep; a state file needs four",
                    position::MAX_DEPTH
                );
                self.errors.push(Pending {
                    place: Place {
                        file: cx.file,
                        at: At::Pos(pos),
                    },
                    message,
                });
            }
            Read::Typed(typed) => self.add_items(&cx, Items::from(*typed)),
            Read::Tree => self.read_tree(&cx),
        }
        if let Some(max_bytes) = self.let_go {
            let source = &mut self.sources[cx.file];
            if let Text::Held(text) = &source.text {
                source.text = Text::let_go(text, max_bytes);
            }
        }
    }

    /// Reads a file through the library's tree, item by item, reporting every bad one.
    fn read_tree(&mut self, cx: &FileCx) {
        let Text::Held(text) = &self.sources[cx.file].text else {
            return;
        };
        let at = |pos| Place {
            file: cx.file,
            at: At::Pos(pos),
        };
        let value: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let message = strip_location(&e.to_string());
                let pos = duplicate_at(text, &message)
                    .or_else(|| {
                        e.location().map(|l| Pos {
                            line: l.line(),
                            column: l.column(),
                        })
                    })
                    .unwrap_or(Pos { line: 1, column: 1 });
                let pos = position::clamp(text, pos);
                self.errors.push(Pending {
                    place: at(pos),
                    message,
                });
                return;
            }
        };
        if value.is_null() {
            // An emptied file must not silently delete what it declared.
            self.errors.push(Pending {
                place: at(Pos { line: 1, column: 1 }),
                message: "the file declares nothing; to declare an empty file on purpose, write `version: 1`"
                    .into(),
            });
            return;
        }
        let Some(raw) = self.parse::<RawFile>(cx, value, "") else {
            return;
        };
        let items = self.items_of_tree(cx, raw);
        self.add_items(cx, items);
    }

    /// Types each item of a file read as the library's tree on its own, so that every bad item
    /// is reported.
    fn items_of_tree(&mut self, cx: &FileCx, raw: RawFile) -> Items {
        let (setting, windows) = match raw.maintenance {
            Some(m) => (setting(m.mode, m.reason), m.windows),
            None => (None, None),
        };
        Items {
            version: raw.version,
            rules: self.each(cx, Section::Rules, raw.rate_limits),
            clients: self.each(cx, Section::Clients, raw.clients),
            setting,
            windows: self.each(cx, Section::Windows, windows),
            flags: self.each(cx, Section::Flags, raw.feature_flags),
            profile: raw
                .deployment_profile
                .and_then(|item| self.parse::<RawProfile>(cx, item, "deployment_profile")),
            notifications: raw
                .notifications
                .and_then(|item| self.parse::<Vec<Sink>>(cx, item, "notifications")),
        }
    }

    /// Types the items of one section, each on its own; the good ones are kept with their index.
    /// Items are taken by value: each node is dropped once typed, so the file's tree is never
    /// held twice.
    fn each<T: DeserializeOwned>(
        &mut self,
        cx: &FileCx,
        section: Section,
        items: Option<Vec<Value>>,
    ) -> Vec<(usize, T)> {
        items
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, item)| {
                let entry = Entry::new(section, i);
                let identity = section.identity(&item);
                let parsed = self.parse(cx, item, &entry.path());
                if parsed.is_none()
                    && let Some((key, field)) = identity
                {
                    self.broken.push((section, key, cx.field(entry, field)));
                }
                Some((i, parsed?))
            })
            .collect()
    }

    /// Takes what one file declares, each item checked on its own.
    fn add_items(&mut self, cx: &FileCx, items: Items) {
        if let Some(v) = items.version.filter(|v| *v != 1) {
            self.errors.push(cx.diag(
                "version",
                format!("unsupported version {v}; this valhalla-ops reads version 1"),
            ));
        }
        for (i, rule) in items.rules {
            self.add_rule(cx, Entry::new(Section::Rules, i), rule);
        }
        for (i, client) in items.clients {
            self.add_client(cx, Entry::new(Section::Clients, i), client);
        }
        if let Some((mode, reason)) = items.setting {
            let path = if mode.is_some() {
                "maintenance.mode"
            } else {
                "maintenance.reason"
            };
            let value = Maintenance {
                mode: mode.unwrap_or(crate::domain::Mode::Normal),
                reason: reason.unwrap_or_default(),
            };
            self.modes.push((value, cx.at(path)));
        }
        for (i, window) in items.windows {
            self.add_window(cx, Entry::new(Section::Windows, i), window);
        }
        for (i, f) in items.flags {
            let flag = FeatureFlag {
                name: f.name,
                enabled: f.enabled,
                description: f.description,
            };
            self.flags
                .push((flag, cx.field(Entry::new(Section::Flags, i), "name")));
        }
        if let Some(name) = items.profile {
            self.profiles
                .push((Profile { name }, cx.at("deployment_profile")));
        }
        if let Some(sinks) = items.notifications {
            self.add_sinks(cx, sinks);
        }
    }

    /// Deserializes the node at `path`, recording a positioned error when it does not fit.
    fn parse<T: DeserializeOwned>(&mut self, cx: &FileCx, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut at = path.to_owned();
                for seg in e.path().iter() {
                    use serde_path_to_error::Segment;
                    match seg {
                        Segment::Seq { index } => at.push_str(&format!("[{index}]")),
                        Segment::Map { key } => at = join(&at, key),
                        Segment::Enum { variant } => at = join(&at, variant),
                        Segment::Unknown => {}
                    }
                }
                let message = whole_number_hint(&at, quote_hint(strip_location(&e.inner().to_string())));
                // An unknown field is reported at the field's own key, named in the message.
                let place_at = match message
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split('`').next())
                {
                    // The path may or may not end with the unknown field already.
                    Some(field) if at == field || at.ends_with(&format!(".{field}")) => At::Key(at.clone()),
                    Some(field) => At::Key(join(&at, field)),
                    None => At::Value(at.clone()),
                };
                let message = if message.starts_with("unknown field")
                    || message.starts_with("missing field")
                    || at.is_empty()
                {
                    message
                } else {
                    format!("{at}: {message}")
                };
                self.errors.push(Pending {
                    place: Place {
                        file: cx.file,
                        at: place_at,
                    },
                    message,
                });
                None
            }
        }
    }

    fn add_rule(&mut self, cx: &FileCx, entry: Entry, r: RawRule) {
        let key = RuleKey::parse_for(r.scope, r.key.as_deref());
        let window = WindowSeconds::new(r.window_seconds.into());
        let max = MaxRequests::new(r.max_requests.into());
        let (key, window_seconds, max_requests) = match (key, window, max) {
            (Ok(k), Ok(w), Ok(m)) => (k, w, m),
            (k, w, m) => {
                if let Err(e) = k {
                    let error = match r.key {
                        Some(_) => cx.field_error(entry, "key", e.0),
                        None => cx.diag(&entry.path(), e.0),
                    };
                    self.errors.push(error);
                }
                if let Err(e) = w {
                    self.errors.push(cx.field_error(entry, "window_seconds", e.0));
                }
                if let Err(e) = m {
                    self.errors.push(cx.field_error(entry, "max_requests", e.0));
                }
                let key = format!("{}:{}", r.scope, r.key.as_deref().unwrap_or(RuleKey::GLOBAL));
                self.broken.push((Section::Rules, key, cx.field(entry, "scope")));
                return;
            }
        };
        let rule = RateLimitRule {
            scope: r.scope,
            key,
            window_seconds,
            max_requests,
            enabled: r.enabled,
            shadow: r.shadow,
            on_outage: r.on_outage,
            description: r.description,
        };
        if !rule.enabled {
            let message = format!("rule {} is declared but disabled", rule.key());
            self.warnings.push(cx.field_diag(entry, "enabled", message));
        }
        let field = if r.key.is_some() { "key" } else { "scope" };
        self.rules.push((rule, cx.field(entry, field)));
    }

    fn add_client(&mut self, cx: &FileCx, entry: Entry, c: RawClient) {
        let client = Client {
            name: c.name,
            client_type: c.client_type,
            role: c.role,
            key_sha256: c.key_sha256,
            active: c.active,
            description: c.description,
        };
        self.clients.push((client, cx.field(entry, "name")));
    }

    fn add_window(&mut self, cx: &FileCx, entry: Entry, mut w: RawWindow) {
        let Some(when) = self.window_when(cx, entry, &mut w) else {
            self.broken
                .push((Section::Windows, w.name.to_string(), cx.field(entry, "name")));
            return;
        };
        let window = Window {
            name: w.name,
            when,
            mode: w.mode,
            active: true,
            description: w.description,
        };
        self.windows.push((window, cx.field(entry, "name")));
    }

    /// When a window holds, from either of its two forms, with the form's own checks; `None`
    /// when it has errors (recorded).
    fn window_when(&mut self, cx: &FileCx, entry: Entry, w: &mut RawWindow) -> Option<When> {
        let name = &w.name;
        let form = Form::of(
            (w.starts_at.take(), w.ends_at.take()),
            (w.schedule.take(), w.duration.take(), w.timezone.take()),
        );
        let (when, field) = match form {
            Err(e) => (Err(e), "name"),
            Ok(Form::Once(starts, ends)) => {
                let starts = parse_time(&starts).map_err(|e| cx.field_error(entry, "starts_at", e.0));
                let ends = parse_time(&ends).map_err(|e| cx.field_error(entry, "ends_at", e.0));
                let (starts_at, ends_at) = match (starts, ends) {
                    (Ok(s), Ok(e)) => (s, e),
                    (s, e) => {
                        self.errors.extend(s.err().into_iter().chain(e.err()));
                        return None;
                    }
                };
                if ends_at > starts_at && ends_at <= self.now {
                    let message = format!("window {name} is wholly in the past");
                    self.warnings.push(cx.field_diag(entry, "ends_at", message));
                }
                (When::once(starts_at, ends_at), "ends_at")
            }
            Ok(Form::Every(rule)) => {
                if rule.fires_more_than_hourly(self.now) {
                    let message = format!(
                        "window {name}: schedule `{}` fires more often than hourly",
                        rule.schedule
                    );
                    self.warnings.push(cx.field_diag(entry, "schedule", message));
                }
                (When::every(rule, self.now), "schedule")
            }
        };
        when.map_err(|e| {
            self.errors
                .push(cx.field_diag(entry, field, format!("window {name}: {e}")))
        })
        .ok()
    }

    /// Takes the `notifications:` section: each sink's own checks, each name once.
    fn add_sinks(&mut self, cx: &FileCx, mut sinks: Vec<Sink>) {
        let mut seen = HashSet::new();
        for (i, sink) in sinks.iter().enumerate() {
            let at = format!("notifications[{i}]");
            if let Err(message) = sink.check() {
                self.errors.push(cx.diag(&at, message));
            }
            if !seen.insert(sink.name.clone()) {
                let message = format!("sink {} is declared twice", sink.name);
                self.errors.push(cx.diag(&format!("{at}.name"), message));
            }
        }
        sinks.sort_by(|a, b| a.name.cmp(&b.name));
        self.sinks.push((Sinks(sinks), cx.at("notifications")));
    }

    /// Validates across files and returns the state, or every error found.
    pub fn finish(mut self) -> Result<Loaded, LoadError> {
        let sources = Sources(std::mem::take(&mut self.sources));
        let broken = std::mem::take(&mut self.broken);
        let rules = unique(&mut self.errors, &sources, &broken, Section::Rules, self.rules);
        let clients = unique(
            &mut self.errors,
            &sources,
            &broken,
            Section::Clients,
            self.clients,
        );
        let windows = unique(
            &mut self.errors,
            &sources,
            &broken,
            Section::Windows,
            self.windows,
        );
        let flags = unique(&mut self.errors, &sources, &broken, Section::Flags, self.flags);
        let maintenance = single(&mut self.errors, &sources, "maintenance mode", self.modes);
        let profile = single(&mut self.errors, &sources, "deployment_profile", self.profiles);
        let notifications = single(&mut self.errors, &sources, "notifications", self.sinks);

        let names: HashMap<String, &Place> = clients.iter().map(|(c, p)| (c.key(), p)).collect();
        for (rule, place) in rules.iter().filter(|_| self.check_references) {
            if rule.scope == Scope::ApiKey && !names.contains_key(rule.key.as_str()) {
                self.errors.push(Pending {
                    place: place.clone(),
                    message: format!(
                        "rule {} names client `{}`, which no state file declares",
                        rule.key(),
                        rule.key
                    ),
                });
            }
        }
        let mut hashes: HashMap<&str, &Client> = HashMap::new();
        for (client, place) in &clients {
            if let Some(other) = hashes.insert(client.key_sha256.as_str(), client) {
                self.errors.push(Pending {
                    place: place.clone(),
                    message: format!(
                        "clients {} and {} have the same key_sha256; every client needs its own key",
                        other.name, client.name
                    ),
                });
            }
        }
        for (a, b) in overlaps(&windows, self.now) {
            let ((a, _), (b, place)) = (&windows[a], &windows[b]);
            self.warnings.push(Pending {
                place: place.clone(),
                message: format!("window {} overlaps window {}", b.name, a.name),
            });
        }

        let warnings = sources.diagnostics(self.warnings);
        if !self.errors.kept.is_empty() {
            let omitted = self.errors.omitted;
            let errors = sources.diagnostics(self.errors.kept);
            return Err(LoadError::Invalid {
                errors,
                warnings,
                omitted,
            });
        }
        let count = sources.0.len();
        // An origin needs every file's text: none when the loader let them go.
        let texts: Option<Vec<(PathBuf, String)>> = sources
            .0
            .into_iter()
            .map(|s| match s.text {
                Text::Held(text) => Some((s.path, text)),
                Text::OnDisk { .. } => None,
            })
            .collect();
        let origin = texts.map(|files| Origin {
            rules: file_indexes(&rules),
            clients: file_indexes(&clients),
            windows: file_indexes(&windows),
            flags: file_indexes(&flags),
            maintenance: maintenance.as_ref().map(|(_, p)| p.file),
            profile: profile.as_ref().map(|(_, p)| p.file),
            notifications: notifications.as_ref().map(|(_, p)| p.file),
            files,
        });
        Ok(Loaded {
            state: DesiredState {
                rules: strip(rules),
                clients: strip(clients),
                windows: strip(windows),
                flags: strip(flags),
                maintenance: maintenance.map(|(m, _)| m),
                profile: profile.map(|(p, _)| p),
                notifications: notifications.map(|(n, _)| n),
            },
            warnings,
            files: count,
            origin,
        })
    }
}

/// A file's text and what parsing it alone found, the part of a load that needs no other file
/// (and so runs on any thread).
struct Parsed {
    text: Text,
    read: Read,
}

/// How far a file got when parsed alone.
enum Read {
    /// Nested too deep to parse: the error's position.
    TooDeep(Pos),
    /// Read straight into its types.
    Typed(Box<SchemaFile>),
    /// To be read through the library's tree, which reports every bad item.
    Tree,
}

impl Parsed {
    /// Parses `text` (straight into its types when `typed_first`); when `let_go` holds the
    /// size cap and the text is not needed to read the file again, it is let go at once.
    fn of(text: String, typed_first: bool, let_go: Option<u64>) -> Parsed {
        let read = if let Some(pos) = position::too_deep(&text) {
            Read::TooDeep(pos)
        } else if let Some(typed) = read_typed(&text).filter(|_| typed_first) {
            Read::Typed(Box::new(typed))
        } else {
            Read::Tree
        };
        let text = match (&read, let_go) {
            (Read::Typed(_), Some(max_bytes)) => Text::let_go(&text, max_bytes),
            _ => Text::Held(text),
        };
        Parsed { text, read }
    }
}

/// The cores a directory's files are parsed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cores {
    /// Every core the process may run on: nothing else is working meanwhile.
    All,
    /// The calling thread's: the rest of the command works beside the load (a dry run reads a
    /// SQLite store meanwhile, and that read takes a core of its own).
    One,
}

/// Works `f` out for each item on `cores` (each thread taking the next item left, so one large
/// file does not hold up the rest), and hands each result to `take` on the calling thread in
/// the items' order, as soon as it and those before it are done: no more results are held than
/// the threads are ahead.
fn in_order<T: Send, U: Send>(
    items: Vec<T>,
    cores: Cores,
    f: impl Fn(T) -> U + Sync,
    mut take: impl FnMut(U),
) {
    let threads = match cores {
        Cores::All => std::thread::available_parallelism().map_or(1, usize::from),
        Cores::One => 1,
    }
    .min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).for_each(take);
    }
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let (done, results) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (queue, f, done) = (&queue, &f, done.clone());
            scope.spawn(move || {
                loop {
                    // The lock is held while the next item is taken, not while it is worked on.
                    let next = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next();
                    let Some((i, item)) = next else { break };
                    if done.send((i, f(item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done);
        let mut early = std::collections::BTreeMap::new();
        let mut next = 0;
        // Ends once every thread is done. A thread that panicked leaves a gap: nothing after
        // it is taken, and the scope carries the panic on.
        for (i, result) in results {
            early.insert(i, result);
            while let Some(result) = early.remove(&next) {
                take(result);
                next += 1;
            }
        }
    });
}

/// What one file declares, each item typed and with its index in its section.
struct Items {
    version: Option<u32>,
    rules: Vec<(usize, RawRule)>,
    clients: Vec<(usize, RawClient)>,
    /// The maintenance mode and reason, when either is written.
    setting: Option<(Option<crate::domain::Mode>, Option<String>)>,
    windows: Vec<(usize, RawWindow)>,
    flags: Vec<(usize, RawFlag)>,
    profile: Option<RawProfile>,
    notifications: Option<Vec<Sink>>,
}

/// The maintenance setting a file declares: its mode and reason, when either is written.
fn setting(
    mode: Option<crate::domain::Mode>,
    reason: Option<String>,
) -> Option<(Option<crate::domain::Mode>, Option<String>)> {
    (mode.is_some() || reason.is_some()).then_some((mode, reason))
}

impl From<SchemaFile> for Items {
    fn from(file: SchemaFile) -> Items {
        fn indexed<T>(items: Option<Vec<T>>) -> Vec<(usize, T)> {
            items.into_iter().flatten().enumerate().collect()
        }
        let (setting, windows) = match file.maintenance {
            Some(m) => (setting(m.mode, m.reason), m.windows),
            None => (None, None),
        };
        Items {
            version: file.version,
            rules: indexed(file.rate_limits),
            clients: indexed(file.clients),
            setting,
            windows: indexed(windows),
            flags: indexed(file.feature_flags),
            profile: file.deployment_profile,
            notifications: file.notifications,
        }
    }
}

/// A file read straight into its types, the fast way for a file without errors (about twice as
/// fast as the library's tree, which is not built). `None` sends the file the tree's way, which
/// reports every bad item with its position: any error, and a file that declares nothing (the
/// tree's way says whether that is an error). So does a file with a `!` anywhere: each way
/// resolves tags with code of its own, and tags are rare enough to leave to the tree.
fn read_typed(text: &str) -> Option<SchemaFile> {
    if text.contains('!') {
        return None;
    }
    let file: SchemaFile = serde_yaml::from_str(text).ok()?;
    let declares = file.version.is_some()
        || file.rate_limits.is_some()
        || file.clients.is_some()
        || file.maintenance.is_some()
        || file.feature_flags.is_some()
        || file.deployment_profile.is_some()
        || file.notifications.is_some();
    declares.then_some(file)
}

/// The file index of each item.
fn file_indexes<T>(items: &[(T, Place)]) -> Vec<usize> {
    items.iter().map(|(_, p)| p.file).collect()
}

fn strip<T>(items: Vec<(T, Place)>) -> Vec<T> {
    items.into_iter().map(|(item, _)| item).collect()
}

/// Sorts the resources of `section` by key and reports each one declared again, naming both
/// places; an item of the section with errors of its own (in `broken`, by its identity as
/// written) is checked too. In place: the items of a large state are not held twice.
fn unique<T: Resource>(
    errors: &mut Errors,
    sources: &Sources,
    broken: &[(Section, String, Place)],
    section: Section,
    mut items: Vec<(T, Place)>,
) -> Vec<(T, Place)> {
    let what = section.what();
    // Stable: of the items with one key, the first declared comes first and is kept.
    items.sort_by_cached_key(|(item, _)| item.key());
    items.dedup_by(|(again, place), (first, first_place)| {
        let key = again.key();
        let twice = key == first.key();
        if twice {
            let message = format!(
                "{what} {key} is declared twice (first at {})",
                sources.show(first_place)
            );
            errors.push(Pending {
                place: place.clone(),
                message,
            });
        }
        twice
    });
    let mut broken = broken.iter().filter(|(s, _, _)| *s == section).peekable();
    if broken.peek().is_some() {
        let mut seen: HashMap<String, &Place> =
            items.iter().map(|(item, place)| (item.key(), place)).collect();
        for (_, key, place) in broken {
            match seen.get(key) {
                Some(other) => errors.push(Pending {
                    message: format!("{what} {key} is declared twice (also at {})", sources.show(other)),
                    place: place.clone(),
                }),
                None => {
                    seen.insert(key.clone(), place);
                }
            }
        }
    }
    items
}

/// Takes a setting that at most one file may declare, with where it is declared.
fn single<T>(
    errors: &mut Errors,
    sources: &Sources,
    what: &str,
    mut items: Vec<(T, Place)>,
) -> Option<(T, Place)> {
    let rest = items.split_off(items.len().min(1));
    let (value, first) = items.pop()?;
    for (_, place) in rest {
        let message = format!("{what} is declared twice (first at {})", sources.show(&first));
        errors.push(Pending { place, message });
    }
    Some((value, first))
}

/// Where a "duplicate entry with key" error's key is written the second time. The YAML
/// deserializer reports such an error at the start of the mapping, and its message names the
/// mapping's path (`feature_flags[0]: duplicate entry with key "name"`).
fn duplicate_at(text: &str, message: &str) -> Option<Pos> {
    let (path, key) = match message.split_once("duplicate entry with key ") {
        Some((path, key)) => (path.strip_suffix(": ").unwrap_or(path), key),
        None => return None,
    };
    // A string key is quoted as Rust quotes it; a number or a boolean is written as it is.
    let key = serde_json::from_str::<String>(key).unwrap_or_else(|_| key.trim_matches('`').to_owned());
    PositionIndex::build(text).duplicate(&join(path, &key))
}

/// Adds what to do when YAML read a text value as a number or a boolean: a key hash of digits
/// only is a number to YAML (`1234…` becomes a float), `no` may be a boolean.
fn quote_hint(message: String) -> String {
    let typed = ["floating point", "integer", "boolean"]
        .iter()
        .any(|t| message.starts_with(&format!("invalid type: {t}")));
    if typed && message.ends_with("expected a string") {
        format!("{message}; quote the value (\"…\") so that YAML reads it as text")
    } else {
        message
    }
}

/// Says what a number field wants in words rather than as a Rust type (`expected u32`): the
/// How far ahead recurring windows are checked for overlaps, and how many of each one's
/// occurrences at most.
const OVERLAP_DAYS: i64 = 366;
const OVERLAP_OCCURRENCES: usize = 400;

/// The pairs of windows (by index, the earlier first) that hold at the same time and govern the
/// same thing (the mode, or the freeze of changes): one-off windows whenever they are, recurring
/// ones within a year of `now`.
fn overlaps(windows: &[(Window, Place)], now: DateTime<Utc>) -> Vec<(usize, usize)> {
    let horizon = now + chrono::TimeDelta::days(OVERLAP_DAYS);
    let mut spans: Vec<(Interval, usize)> = Vec::new();
    for (i, (w, _)) in windows.iter().enumerate() {
        match &w.when {
            When::Once(iv) => spans.push((*iv, i)),
            When::Every(r) => spans.extend(
                r.merged(now)
                    .take_while(|iv| iv.starts_at < horizon)
                    .take(OVERLAP_OCCURRENCES)
                    .map(|iv| (iv, i)),
            ),
        }
    }
    spans.sort();
    let freezes = |i: usize| windows[i].0.mode == crate::domain::WindowMode::FreezeChanges;
    let mut pairs = std::collections::BTreeSet::new();
    for (k, (a, i)) in spans.iter().enumerate() {
        for (_, j) in spans[k + 1..].iter().take_while(|(b, _)| b.starts_at < a.ends_at) {
            if i != j && freezes(*i) == freezes(*j) {
                pairs.insert(((*i).min(*j), (*i).max(*j)));
            }
        }
    }
    pairs.into_iter().collect()
}

/// field at `at` is a whole number, of seconds for a window.
fn whole_number_hint(at: &str, message: String) -> String {
    let Some(start) = [
        "expected u8",
        "expected u16",
        "expected u32",
        "expected u64",
        "expected i32",
        "expected i64",
    ]
    .iter()
    .find_map(|t| message.ends_with(t).then(|| message.len() - t.len())) else {
        return message;
    };
    let wanted = if at.ends_with("window_seconds") {
        "expected a whole number of seconds, e.g. 60"
    } else {
        "expected a whole number, e.g. 60"
    };
    format!("{}{wanted}", &message[..start])
}

/// Drops the " at line L column C" serde_yaml puts in its messages; diagnostics carry their
/// own position.
fn strip_location(message: &str) -> String {
    let Some(start) = message.find(" at line ") else {
        return message.to_owned();
    };
    let rest = &message[start + " at line ".len()..];
    let after_line = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(after_column) = after_line.strip_prefix(" column ") else {
        return message.to_owned();
    };
    let tail = after_column.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{tail}", &message[..start])
}

#[cfg(test)]
mod tests;
