//! Writes a store snapshot as state files that `validate` and `reconcile` load back.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::raw::{RawClient, RawFlag, RawRule, RawWindow};
use crate::domain::{Mode, ProfileName};
use crate::model::{Actual, Stored};

/// One exported file; empty sections are left out.
#[derive(Serialize)]
struct ExportFile {
    version: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rate_limits: Vec<RawRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    clients: Vec<RawClient>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance: Option<ExportMaintenance>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    feature_flags: Vec<RawFlag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_profile: Option<ProfileName>,
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
            version: 1,
            rate_limits: Vec::new(),
            clients: Vec::new(),
            maintenance: None,
            feature_flags: Vec::new(),
            deployment_profile: None,
        }
    }
}

/// Everything active, api-owned resources too, so that reconciling the export adopts them into
/// git. Windows that were deactivated are history and stay out; inactive clients are kept with
/// `active: false`.
fn build(actual: &Actual) -> ExportFile {
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    ExportFile {
        version: 1,
        rate_limits: actual
            .rules
            .iter()
            .map(|Stored { value: r, .. }| RawRule {
                scope: r.scope,
                key: (r.scope != crate::domain::Scope::Global).then(|| r.key.to_string()),
                window_seconds: r.window_seconds.get(),
                max_requests: r.max_requests,
                enabled: r.enabled,
                shadow: r.shadow,
                description: r.description.clone(),
            })
            .collect(),
        clients: actual
            .clients
            .iter()
            .map(|Stored { value: c, .. }| RawClient {
                name: c.name.clone(),
                client_type: c.client_type,
                role: c.role,
                key_sha256: c.key_sha256.clone(),
                active: c.active,
                description: c.description.clone(),
            })
            .collect(),
        maintenance: Some(ExportMaintenance {
            mode: actual.maintenance.as_ref().map(|m| m.value.mode),
            reason: actual.maintenance.as_ref().map(|m| m.value.reason.clone()),
            windows: actual
                .windows
                .iter()
                .filter(|w| w.value.active)
                .map(|Stored { value: w, .. }| RawWindow {
                    name: w.name.clone(),
                    starts_at: time(&w.starts_at),
                    ends_at: time(&w.ends_at),
                    mode: w.mode,
                    description: w.description.clone(),
                })
                .collect(),
        }),
        feature_flags: actual
            .flags
            .iter()
            .map(|Stored { value: f, .. }| RawFlag {
                name: f.name.clone(),
                enabled: f.enabled,
                description: f.description.clone(),
            })
            .collect(),
        deployment_profile: actual.profile.as_ref().map(|p| p.value.name.clone()),
    }
}

const HEADER: &str =
    "# Exported by valhalla-ops from the store; commit it to adopt these resources into git.\n";

fn to_yaml(file: &ExportFile) -> Result<String, serde_yaml::Error> {
    Ok(format!("{HEADER}{}", serde_yaml::to_string(file)?))
}

/// The whole store as one state file.
pub fn single(actual: &Actual) -> Result<String, serde_yaml::Error> {
    to_yaml(&build(actual))
}

/// The store as a file per concern, by name: rules, clients, maintenance, settings.
pub fn render(actual: &Actual) -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    let all = build(actual);
    let mut rules = ExportFile::empty();
    rules.rate_limits = all.rate_limits;
    let mut clients = ExportFile::empty();
    clients.clients = all.clients;
    let mut maintenance = ExportFile::empty();
    maintenance.maintenance = all.maintenance;
    let mut settings = ExportFile::empty();
    settings.feature_flags = all.feature_flags;
    settings.deployment_profile = all.deployment_profile;
    [
        ("rate_limits.yaml", rules),
        ("clients.yaml", clients),
        ("maintenance.yaml", maintenance),
        ("settings.yaml", settings),
    ]
    .into_iter()
    .map(|(name, file)| Ok((name, to_yaml(&file)?)))
    .collect()
}

/// Writes [`render`]'s files into `dir`, creating it; returns the paths written.
pub fn write(actual: &Actual, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    render(actual)
        .map_err(std::io::Error::other)?
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        })
        .collect()
}
