//! Writes a store snapshot as state files that `validate` and `reconcile` load back. Where an
//! override holds a resource, the file has git's value (with a comment saying so), not the
//! overridden one: committing an export must not turn an emergency change into git's intent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::MODELINE;
use super::raw::{RawClient, RawFlag, RawRule, RawWindow};
use crate::domain::{Mode, ProfileName};
use crate::model::{
    Actual, Client, FeatureFlag, Kind, Maintenance, Override, Profile, RateLimitRule, Window,
};

/// What an export is made of: the store's resources, the overrides in force with git's values
/// for what they hold, and git's maintenance mode.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub actual: &'a Actual,
    /// Overrides in force, each with git's entry (JSON) for its resource when git owned it.
    pub held: &'a [(Override, Option<String>)],
    /// The mode git declared, which an override of the mode does not change.
    pub git_mode: Option<&'a Maintenance>,
}

/// One list entry, with a comment above it when an override holds it.
struct Item<T> {
    comment: Option<String>,
    value: T,
}

impl<T> Item<T> {
    fn plain(value: T) -> Item<T> {
        Item { comment: None, value }
    }
}

/// One exported file; empty sections are left out.
struct ExportFile {
    rate_limits: Vec<Item<RawRule>>,
    clients: Vec<Item<RawClient>>,
    maintenance: Option<(Option<String>, ExportMaintenance)>,
    feature_flags: Vec<Item<RawFlag>>,
    deployment_profile: Option<(Option<String>, ProfileName)>,
    notifications: Option<Vec<crate::model::Sink>>,
}

#[derive(Serialize)]
struct ExportMaintenance {
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    windows: Vec<RawWindow>,
}

impl ExportFile {
    fn empty() -> ExportFile {
        ExportFile {
            rate_limits: Vec::new(),
            clients: Vec::new(),
            maintenance: None,
            feature_flags: Vec::new(),
            deployment_profile: None,
            notifications: None,
        }
    }
}

/// What an export says about an overridden resource, in its file and on stderr.
fn held_note(o: &Override) -> String {
    let until = o.expires_at.map_or("until cleared".to_owned(), |t| {
        format!("until {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    });
    format!(
        "held by override #{} ({}, {:?}, {until}): git's value, not the store's",
        o.id,
        crate::text::one_line(&o.actor),
        crate::text::one_line(&o.reason)
    )
}

/// [`held_note`] for `o`, also added to `notes` with the resource it is about.
fn noted(o: &Override, notes: &mut Vec<String>) -> String {
    let note = held_note(o);
    notes.push(format!("{} {}: {note}", o.kind, o.key));
    note
}

/// Replaces (or adds) the entry of each resource of `kind` an override holds with git's value.
fn with_git_values<T: serde::de::DeserializeOwned>(
    items: &mut Vec<Item<T>>,
    held: &[(Override, Option<String>)],
    kind: Kind,
    key_of: impl Fn(&T) -> String,
    notes: &mut Vec<String>,
) {
    for (o, git) in held.iter().filter(|(o, _)| o.kind == kind) {
        let note = noted(o, notes);
        let Some(value) = git.as_deref().and_then(|g| serde_json::from_str::<T>(g).ok()) else {
            // Git declared nothing for it (an api-owned resource): the store's value stays.
            if let Some(item) = items.iter_mut().find(|i| key_of(&i.value) == o.key) {
                item.comment = Some(format!("held by override #{}; not declared in git", o.id));
            }
            continue;
        };
        let item = Item {
            comment: Some(note),
            value,
        };
        match items.iter_mut().find(|i| key_of(&i.value) == o.key) {
            Some(existing) => *existing = item,
            // Deleted over HTTP and held deleted: git still declares it.
            None => items.push(item),
        }
    }
}

/// A rule as a state-file entry.
fn raw_rule(r: &RateLimitRule) -> RawRule {
    RawRule {
        scope: r.scope,
        key: (r.scope != crate::domain::Scope::Global).then(|| r.key.to_string()),
        window_seconds: r.window_seconds.get(),
        max_requests: r.max_requests.get(),
        enabled: r.enabled,
        shadow: r.shadow,
        on_outage: r.on_outage,
        description: r.description.clone(),
    }
}

/// A client as a state-file entry.
fn raw_client(c: &Client) -> RawClient {
    RawClient {
        name: c.name.clone(),
        client_type: c.client_type,
        role: c.role,
        key_sha256: c.key_sha256.clone(),
        active: c.active,
        description: c.description.clone(),
    }
}

/// A feature flag as a state-file entry.
fn raw_flag(f: &FeatureFlag) -> RawFlag {
    RawFlag {
        name: f.name.clone(),
        enabled: f.enabled,
        description: f.description.clone(),
    }
}

/// A resource as the state-file entry `export` writes for it, as JSON: what an override records
/// of git's value when it takes a git-owned resource over.
pub trait Entry {
    fn entry_json(&self) -> Option<String>;
}

impl Entry for RateLimitRule {
    fn entry_json(&self) -> Option<String> {
        serde_json::to_string(&raw_rule(self)).ok()
    }
}

impl Entry for Client {
    fn entry_json(&self) -> Option<String> {
        serde_json::to_string(&raw_client(self)).ok()
    }
}

impl Entry for FeatureFlag {
    fn entry_json(&self) -> Option<String> {
        serde_json::to_string(&raw_flag(self)).ok()
    }
}

impl Entry for Profile {
    fn entry_json(&self) -> Option<String> {
        serde_json::to_string(&self.name).ok()
    }
}

/// The mode's git value lives in its own columns (`git_mode`); windows are not overridden.
impl Entry for Maintenance {
    fn entry_json(&self) -> Option<String> {
        None
    }
}

impl Entry for Window {
    fn entry_json(&self) -> Option<String> {
        None
    }
}

/// Everything active, api-owned resources too, so that reconciling the export adopts them into
/// git. Windows that were deactivated are history and stay out; inactive clients are kept with
/// `active: false`. Returns the notes on overridden resources too.
fn build(source: Source<'_>) -> (ExportFile, Vec<String>) {
    let actual = source.actual;
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut notes = Vec::new();
    let mut rate_limits: Vec<Item<RawRule>> = actual
        .rules
        .iter()
        .map(|r| Item::plain(raw_rule(&r.value)))
        .collect();
    let rule_key = |r: &RawRule| format!("{}:{}", r.scope.as_str(), r.key.as_deref().unwrap_or("*"));
    with_git_values(
        &mut rate_limits,
        source.held,
        Kind::RateLimitRule,
        rule_key,
        &mut notes,
    );
    let mut clients: Vec<Item<RawClient>> = actual
        .clients
        .iter()
        .map(|c| Item::plain(raw_client(&c.value)))
        .collect();
    with_git_values(
        &mut clients,
        source.held,
        Kind::Client,
        |c| c.name.to_string(),
        &mut notes,
    );
    let mut feature_flags: Vec<Item<RawFlag>> = actual
        .flags
        .iter()
        .map(|f| Item::plain(raw_flag(&f.value)))
        .collect();
    with_git_values(
        &mut feature_flags,
        source.held,
        Kind::FeatureFlag,
        |f| f.name.to_string(),
        &mut notes,
    );
    let mode_hold = source.held.iter().find(|(o, _)| o.kind == Kind::MaintenanceMode);
    let (mode_comment, mode) = match (mode_hold, source.git_mode) {
        (Some((o, _)), Some(git)) => (Some(noted(o, &mut notes)), Some(git.clone())),
        _ => (None, actual.maintenance.as_ref().map(|m| m.value.clone())),
    };
    let windows = actual
        .windows
        .iter()
        .filter(|w| w.value.active)
        .map(|w| {
            let w = &w.value;
            let (once, rule) = (w.when.interval(), w.when.rule());
            RawWindow {
                name: w.name.clone(),
                starts_at: once.map(|i| time(&i.starts_at)),
                ends_at: once.map(|i| time(&i.ends_at)),
                schedule: rule.map(|r| r.schedule.clone()),
                duration: rule.map(|r| r.duration),
                timezone: rule.map(|r| r.timezone),
                mode: w.mode,
                description: w.description.clone(),
            }
        })
        .collect();
    let maintenance = ExportMaintenance {
        mode: mode.as_ref().map(|m| m.mode),
        reason: mode.map(|m| m.reason),
        windows,
    };
    let profile_hold = source
        .held
        .iter()
        .find(|(o, _)| o.kind == Kind::DeploymentProfile);
    let deployment_profile = match profile_hold {
        Some((o, git)) => {
            let note = noted(o, &mut notes);
            let git = git
                .as_deref()
                .and_then(|g| serde_json::from_str::<ProfileName>(g).ok());
            git.or_else(|| actual.profile.as_ref().map(|p| p.value.name.clone()))
                .map(|p| (Some(note), p))
        }
        None => actual.profile.as_ref().map(|p| (None, p.value.name.clone())),
    };
    let file = ExportFile {
        rate_limits,
        clients,
        maintenance: Some((mode_comment, maintenance)),
        feature_flags,
        deployment_profile,
        notifications: actual.notifications.as_ref().map(|n| n.value.0.clone()),
    };
    (file, notes)
}

const HEADER: &str =
    "# Exported by valhalla-ops from the store; commit it to adopt these resources into git.\n";

/// A window's `starts_at:`/`ends_at:` line with its time in quotes: serde_yaml writes an RFC 3339
/// time plain, which JavaScript YAML readers (editors, ajv) take for a date, not the text the
/// schema asks for. The times are RFC 3339, so quoting them needs no escaping.
fn quoted_time(line: &str) -> String {
    for key in ["starts_at: ", "ends_at: "] {
        if let Some(at) = line.find(key) {
            let (head, value) = line.split_at(at + key.len());
            if !value.starts_with(['"', '\'']) {
                return format!("{head}\"{value}\"");
            }
        }
    }
    line.to_owned()
}

/// Writes a list section, each entry under its comment.
fn section<T: Serialize>(out: &mut String, name: &str, items: &[Item<T>]) -> Result<(), serde_yaml::Error> {
    if items.is_empty() {
        return Ok(());
    }
    let _ = writeln!(out, "{name}:");
    for item in items {
        if let Some(comment) = &item.comment {
            let _ = writeln!(out, "  # {comment}");
        }
        for (i, line) in serde_yaml::to_string(&item.value)?.lines().enumerate() {
            let _ = writeln!(out, "{}{line}", if i == 0 { "  - " } else { "    " });
        }
    }
    Ok(())
}

fn to_yaml(file: &ExportFile) -> Result<String, serde_yaml::Error> {
    let mut out = format!("{MODELINE}\n{HEADER}version: 1\n");
    section(&mut out, "rate_limits", &file.rate_limits)?;
    section(&mut out, "clients", &file.clients)?;
    if let Some((comment, maintenance)) = &file.maintenance {
        if let Some(comment) = comment {
            let _ = writeln!(out, "# maintenance.mode: {comment}");
        }
        out.push_str("maintenance:\n");
        for line in serde_yaml::to_string(maintenance)?.lines() {
            let _ = writeln!(out, "  {}", quoted_time(line));
        }
    }
    section(&mut out, "feature_flags", &file.feature_flags)?;
    if let Some((comment, profile)) = &file.deployment_profile {
        if let Some(comment) = comment {
            let _ = writeln!(out, "# {comment}");
        }
        out.push_str(&serde_yaml::to_string(&std::collections::BTreeMap::from([(
            "deployment_profile",
            profile,
        )]))?);
    }
    if let Some(sinks) = &file.notifications {
        out.push_str(&serde_yaml::to_string(&std::collections::BTreeMap::from([(
            "notifications",
            sinks,
        )]))?);
    }
    Ok(out)
}

/// The whole store as one state file, and the notes on overridden resources.
pub fn single(source: Source<'_>) -> Result<(String, Vec<String>), serde_yaml::Error> {
    let (file, notes) = build(source);
    Ok((to_yaml(&file)?, notes))
}

/// Files by name, with their text.
pub type Files = Vec<(&'static str, String)>;

/// The store as a file per concern, by name (rules, clients, maintenance, settings), and the
/// notes on overridden resources.
pub fn render(source: Source<'_>) -> Result<(Files, Vec<String>), serde_yaml::Error> {
    let (all, notes) = build(source);
    let mut rules = ExportFile::empty();
    rules.rate_limits = all.rate_limits;
    let mut clients = ExportFile::empty();
    clients.clients = all.clients;
    let mut maintenance = ExportFile::empty();
    maintenance.maintenance = all.maintenance;
    let mut settings = ExportFile::empty();
    settings.feature_flags = all.feature_flags;
    settings.deployment_profile = all.deployment_profile;
    settings.notifications = all.notifications;
    let files = [
        ("rate_limits.yaml", rules),
        ("clients.yaml", clients),
        ("maintenance.yaml", maintenance),
        ("settings.yaml", settings),
    ]
    .into_iter()
    .map(|(name, file)| Ok((name, to_yaml(&file)?)))
    .collect::<Result<_, serde_yaml::Error>>()?;
    Ok((files, notes))
}

/// Writes [`render`]'s files into `dir`, creating it; returns the paths written and the notes.
/// Unless `replace`, a file already there is an error and nothing is written: a hand-written
/// state file of the same name is not silently overwritten.
pub fn write(source: Source<'_>, dir: &Path, replace: bool) -> std::io::Result<(Vec<PathBuf>, Vec<String>)> {
    let (files, notes) = render(source).map_err(std::io::Error::other)?;
    if !replace {
        let there: Vec<String> = files
            .iter()
            .map(|(name, _)| dir.join(name))
            .filter(|path| path.symlink_metadata().is_ok())
            .map(|path| crate::text::path(&path))
            .collect();
        if !there.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} already there; nothing was written (--force replaces {})",
                    there.join(", "),
                    if there.len() == 1 { "it" } else { "them" }
                ),
            ));
        }
    }
    std::fs::create_dir_all(dir)?;
    let paths = files
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        })
        .collect::<std::io::Result<_>>()?;
    Ok((paths, notes))
}
