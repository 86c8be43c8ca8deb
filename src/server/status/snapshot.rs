//! What the status page shows, as one JSON document: the mode for everyone, and for a key the
//! overrides, the windows of the coming week, the recent reconciles and the limiter.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::recent::RefusedCount;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::counting::Health;
use crate::domain::{Role, WindowMode};
use crate::mode::{EffectiveMode, Source};
use crate::model::{Kind, Override};
use crate::server::AppState;
use crate::store::{RunRecord, SinkHealth};

/// How many rows of recent reconciles the page lists.
const RUNS: usize = 10;
/// How many runs are read to fill them: passes in a row that changed nothing are one row.
const RUNS_READ: i64 = 100;
/// How far ahead the page shows maintenance windows.
const AHEAD_DAYS: i64 = 7;
/// How many refused subjects the page lists.
const TOP: usize = 10;

/// The status page's data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusSnapshot {
    /// The server's time: countdowns are computed against it.
    pub now: DateTime<Utc>,
    pub mode: ModeBanner,
    /// Who the key belongs to; absent without a key (the page then shows only the mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer: Option<Viewer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Vec<OverrideItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<WindowItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<RecentRun>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limiter: Option<LimiterStatus>,
    /// The notification sinks with deliveries not sent: waiting, failing or given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<SinkHealth>>,
}

/// The mode in force, where it comes from, and when it ends by itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModeBanner {
    #[serde(flatten)]
    pub effective: EffectiveMode,
    /// Who set it, for a mode held by an override (shown with a key only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// The client whose key the page was given.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Viewer {
    pub name: String,
    pub role: Role,
}

/// An override in force, with what git restores when it ends.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverrideItem {
    #[serde(flatten)]
    pub hold: Override,
    /// What git declares for the resource, which comes back when the override ends (a key's
    /// hash reads `(hidden)`); null when git declared nothing for it.
    pub restores: Option<serde_json::Value>,
}

/// A recent reconcile, or a stretch of runs in a row that changed nothing (the watch loop's
/// passes), as one row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentRun {
    /// The run; for a stretch, its latest.
    #[serde(flatten)]
    pub run: RunRecord,
    /// How many runs the row stands for: 1, or the runs of the stretch.
    pub count: u64,
    /// When the stretch's first run finished; absent for one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// Whether `run` changed nothing and refused nothing.
fn quiet(run: &RunRecord) -> bool {
    run.created + run.updated + run.deleted + run.deactivated == 0 && run.refusal.is_none() && !run.drift
}

/// `runs` (newest first) as at most `rows` rows, each stretch of quiet runs in a row by the same
/// actor and source folded into one.
fn collapse(runs: Vec<RunRecord>, rows: usize) -> Vec<RecentRun> {
    let mut out: Vec<RecentRun> = Vec::new();
    for run in runs {
        if let Some(last) = out.last_mut()
            && quiet(&last.run)
            && quiet(&run)
            && (&last.run.actor, &last.run.source) == (&run.actor, &run.source)
        {
            last.count += 1;
            last.since = Some(run.finished_at);
            continue;
        }
        if out.len() == rows {
            break;
        }
        out.push(RecentRun {
            run,
            count: 1,
            since: None,
        });
    }
    out
}

/// One occurrence of a maintenance window, open now or opening within the week.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowItem {
    pub name: String,
    pub mode: WindowMode,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub description: String,
    pub open: bool,
    /// A recurring window's rule (`0 2 * * SUN for 2h, Europe/Berlin`); absent for a one-off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// How many occurrences of one recurring window the week shows at most.
const OCCURRENCES: usize = 28;

/// The limiter on this replica.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimiterStatus {
    /// The window the counts cover, in minutes.
    pub minutes: u64,
    /// The most refused subjects.
    pub refused: Vec<RefusedCount>,
    /// Shadow rules that would have refused, by subject.
    pub shadow: Vec<RefusedCount>,
    /// The counter store: memory, or Redis and whether it answers.
    #[schema(value_type = Object)]
    pub counters: Health,
}

/// The snapshot for `viewer` (none: the public part only).
pub async fn snapshot(state: &AppState, viewer: Option<&Caller>) -> Result<StatusSnapshot, ApiError> {
    let now = state.now();
    let view = state.replica.view().await?;
    let effective = crate::mode::effective(&view.maintenance, now);
    let Some(viewer) = viewer else {
        return Ok(StatusSnapshot {
            now,
            mode: ModeBanner {
                effective,
                actor: None,
            },
            viewer: None,
            overrides: None,
            windows: None,
            runs: None,
            limiter: None,
            sinks: None,
        });
    };
    let actor = (effective.source == Source::Override)
        .then(|| crate::mode::holding_override(&view.maintenance, now))
        .flatten()
        .map(|o| o.actor.clone());
    // Git's mode is what a mode override gives way to (its own entry is not kept with it).
    let git_mode = serde_json::json!({
        "mode": view.maintenance.git.mode,
        "reason": view.maintenance.git.reason,
    });
    let overrides = state
        .db
        .held(now)
        .await?
        .into_iter()
        .filter(|h| h.hold.is_active(now))
        .map(|h| OverrideItem {
            restores: match h.hold.kind {
                Kind::MaintenanceMode => Some(git_mode.clone()),
                _ => h.git_value.as_deref().and_then(crate::model::shown_json),
            },
            hold: h.hold,
        })
        .collect();
    let horizon = now + Duration::days(AHEAD_DAYS);
    let mut windows: Vec<WindowItem> = view
        .maintenance
        .windows()
        .iter()
        .filter(|w| w.active)
        .flat_map(|w| {
            let rule = w.when.rule().map(ToString::to_string);
            (w.when.intervals(now).take_while(|i| i.starts_at < horizon))
                .take(OCCURRENCES)
                .map(move |i| WindowItem {
                    name: w.name.to_string(),
                    mode: w.mode,
                    starts_at: i.starts_at,
                    ends_at: i.ends_at,
                    description: w.description.clone(),
                    open: i.starts_at <= now,
                    rule: rule.clone(),
                })
        })
        .collect();
    windows.sort_by_key(|w| (w.starts_at, w.name.clone()));
    let runs = collapse(state.db.runs(RUNS_READ).await?, RUNS);
    let now_ms = state.replica.now_ms();
    let (refused, shadow) = state.status.recent.top(TOP, now_ms);
    Ok(StatusSnapshot {
        now,
        mode: ModeBanner { effective, actor },
        viewer: Some(Viewer {
            name: viewer.name.to_string(),
            role: viewer.role,
        }),
        overrides: Some(overrides),
        windows: Some(windows),
        runs: Some(runs),
        limiter: Some(LimiterStatus {
            minutes: super::recent::MINUTES,
            refused,
            shadow,
            counters: state.replica.counting.health(),
        }),
        sinks: Some(state.db.sink_health().await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, actor: &str, created: i64, refusal: Option<&str>) -> RunRecord {
        let at = DateTime::from_timestamp(1_800_000_000 + id * 60, 0).unwrap();
        RunRecord {
            id,
            started_at: at,
            finished_at: at,
            actor: actor.into(),
            source: "watch".into(),
            created,
            updated: 0,
            deleted: 0,
            deactivated: 0,
            held: 0,
            unmanaged: 0,
            refusal: refusal.map(Into::into),
            drift: false,
            during_freeze: None,
        }
    }

    #[test]
    fn quiet_runs_in_a_row_are_one_row_and_the_rest_stay_whole() {
        // Newest first: twelve quiet passes, a change, three quiet passes, a refusal, another
        // actor's quiet run.
        let mut runs: Vec<RunRecord> = (0..12).rev().map(|i| run(100 + i, "watch", 0, None)).collect();
        runs.push(run(99, "watch", 3, None));
        runs.extend((0..3).rev().map(|i| run(90 + i, "watch", 0, None)));
        runs.push(run(80, "watch", 0, Some("mass removal")));
        runs.push(run(70, "ci", 0, None));
        let rows = collapse(runs, 10);
        let shape: Vec<(i64, u64, Option<i64>)> = rows
            .iter()
            .map(|r| (r.run.id, r.count, r.since.map(|s| s.timestamp())))
            .collect();
        let at = |id: i64| Some(1_800_000_000 + id * 60);
        assert_eq!(
            shape,
            [
                (111, 12, at(100)),
                (99, 1, None),
                (92, 3, at(90)),
                (80, 1, None),
                (70, 1, None)
            ]
        );
        assert_eq!(collapse(rows.into_iter().map(|r| r.run).collect(), 2).len(), 2);
    }
}
