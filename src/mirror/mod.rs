//! The one cache of the store: its rows in memory, exact at a change-log revision and followed
//! row by row, which a replica's view and the watch loop both read.

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::model::{Client, FeatureFlag, Kind, MaintenanceInputs, Override, Profile, Sinks, Stored, Window};
use crate::store::{Change, Db, ModeRecord, RowIds, Rows, RuleRecord, StoreError};

/// The store's rules, clients, windows, flags, mode, profile and open overrides, as of
/// [`Mirror::revision`]. The maps are persistent: a clone shares them, and a change of one row
/// costs one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    revision: i64,
    rules: imbl::HashMap<i64, RuleRecord>,
    clients: imbl::HashMap<i64, Stored<Client>>,
    windows: imbl::HashMap<i64, Stored<Window>>,
    flags: imbl::HashMap<i64, Stored<FeatureFlag>>,
    mode: ModeRecord,
    profile: Option<Stored<Profile>>,
    notifications: Option<Stored<Sinks>>,
    /// By id: iterated in the order they were set.
    overrides: imbl::OrdMap<i64, Override>,
    /// Rows that did not decode, left out of the maps above, by table.
    unreadable: Unreadable,
}

/// The ids of rows the store holds that the mirror could not decode.
#[derive(Debug, Clone, Default, PartialEq)]
struct Unreadable {
    rules: imbl::OrdSet<i64>,
    clients: imbl::OrdSet<i64>,
    windows: imbl::OrdSet<i64>,
    flags: imbl::OrdSet<i64>,
}

/// One row as following the log replaced it: what the mirror held and what it holds now (`None`:
/// no such row, or one that did not decode).
#[derive(Debug, Clone, PartialEq)]
pub struct Swap<T> {
    pub before: Option<T>,
    pub after: Option<T>,
}

/// What one step of following replaced, row by row; tables read whole (the mode, the profile,
/// the overrides) only when they changed.
#[derive(Debug, Default)]
pub struct Delta {
    pub rules: Vec<Swap<RuleRecord>>,
    pub clients: Vec<Swap<Stored<Client>>>,
    pub windows: Vec<Swap<Stored<Window>>>,
    pub flags: Vec<Swap<Stored<FeatureFlag>>>,
    pub mode: Option<Swap<ModeRecord>>,
    pub profile: Option<Swap<Stored<Profile>>>,
    pub notifications: Option<Swap<Stored<Sinks>>>,
    pub overrides: Vec<Swap<Override>>,
}

impl Delta {
    /// Whether the inputs of the effective mode changed: the mode row, a window, or a mode
    /// override.
    pub fn touches_maintenance(&self) -> bool {
        let mode_override =
            |o: &Option<Override>| o.as_ref().is_some_and(|o| o.kind == Kind::MaintenanceMode);
        self.mode.is_some()
            || !self.windows.is_empty()
            || self
                .overrides
                .iter()
                .any(|o| mode_override(&o.before) || mode_override(&o.after))
    }
}

/// What one [`Mirror::follow`] did.
#[derive(Debug)]
pub enum Step {
    /// Nothing changed.
    Same,
    /// The rows the change log named were read again.
    Rows(Box<Delta>),
    /// The log could not say what changed: everything was read again.
    Whole,
}

/// A row of a table the mirror keeps by id.
trait Row: Clone {
    fn id(&self) -> i64;
}

impl Row for RuleRecord {
    fn id(&self) -> i64 {
        self.id
    }
}

impl Row for Override {
    fn id(&self) -> i64 {
        self.id
    }
}

impl<T: Clone> Row for Stored<T> {
    fn id(&self) -> i64 {
        self.id
    }
}

/// The rows of one table by id.
fn by_id<T: Row>(rows: Vec<T>) -> imbl::HashMap<i64, T> {
    rows.into_iter().map(|r| (r.id(), r)).collect()
}

/// Replaces the rows of `ids` in `map` with `rows` (what the store holds of them now), and says
/// what each was and is.
fn swap<T: Row>(
    map: &mut imbl::HashMap<i64, T>,
    unreadable: &mut imbl::OrdSet<i64>,
    ids: Vec<i64>,
    rows: Vec<T>,
    still_unreadable: Vec<i64>,
) -> Vec<Swap<T>> {
    let mut now: HashMap<i64, T> = rows.into_iter().map(|r| (r.id(), r)).collect();
    for id in &ids {
        unreadable.remove(id);
    }
    unreadable.extend(still_unreadable);
    ids.into_iter()
        .map(|id| {
            let before = map.remove(&id);
            let after = now.remove(&id);
            if let Some(row) = &after {
                map.insert(id, row.clone());
            }
            Swap { before, after }
        })
        .collect()
}

impl Mirror {
    /// Reads every row of the store.
    pub async fn load(db: &Db) -> Result<Mirror, StoreError> {
        let (revision, rows) = db.rows().await?;
        Mirror::of(revision, rows)
    }

    /// The mirror of `rows`, a whole read at `revision`.
    pub(crate) fn of(revision: i64, rows: Rows) -> Result<Mirror, StoreError> {
        // A whole read always holds the mode row: it fails when the row is missing.
        let mode = rows
            .mode
            .ok_or(StoreError::NotFound("the maintenance_state row".into()))?;
        let unreadable = |ids: Vec<i64>| ids.into_iter().collect();
        Ok(Mirror {
            revision,
            rules: by_id(rows.rules),
            clients: by_id(rows.clients),
            windows: by_id(rows.windows),
            flags: by_id(rows.flags),
            mode,
            profile: rows.profile.flatten(),
            notifications: rows.notifications.flatten(),
            overrides: rows
                .overrides
                .unwrap_or_default()
                .into_iter()
                .map(|o| (o.id, o))
                .collect(),
            unreadable: Unreadable {
                rules: unreadable(rows.unreadable.rules),
                clients: unreadable(rows.unreadable.clients),
                windows: unreadable(rows.unreadable.windows),
                flags: unreadable(rows.unreadable.flags),
            },
        })
    }

    /// Brings the mirror to the store's revision: the rows the change log names, or everything
    /// when it cannot say. On an error the mirror is as it was.
    pub async fn follow(&mut self, db: &Db) -> Result<Step, StoreError> {
        let followed = db.follow(self.revision).await?;
        Ok(match followed.change {
            Change::None => {
                self.revision = followed.revision;
                Step::Same
            }
            Change::Whole(rows) => {
                *self = Mirror::of(followed.revision, rows)?;
                Step::Whole
            }
            Change::Named(ids, rows) => Step::Rows(Box::new(self.patch(followed.revision, ids, rows))),
        })
    }

    /// Replaces the rows `ids` names with `rows`, read at `revision`.
    pub(crate) fn patch(&mut self, revision: i64, ids: RowIds, rows: Rows) -> Delta {
        self.revision = revision;
        let u = &mut self.unreadable;
        let bad = rows.unreadable;
        let mut delta = Delta {
            rules: swap(&mut self.rules, &mut u.rules, ids.rules, rows.rules, bad.rules),
            clients: swap(
                &mut self.clients,
                &mut u.clients,
                ids.clients,
                rows.clients,
                bad.clients,
            ),
            windows: swap(
                &mut self.windows,
                &mut u.windows,
                ids.windows,
                rows.windows,
                bad.windows,
            ),
            flags: swap(&mut self.flags, &mut u.flags, ids.flags, rows.flags, bad.flags),
            ..Delta::default()
        };
        if let Some(mode) = rows.mode {
            let before = std::mem::replace(&mut self.mode, mode.clone());
            delta.mode = Some(Swap {
                before: Some(before),
                after: Some(mode),
            });
        }
        if let Some(profile) = rows.profile {
            let before = std::mem::replace(&mut self.profile, profile.clone());
            delta.profile = Some(Swap {
                before,
                after: profile,
            });
        }
        if let Some(sinks) = rows.notifications {
            let before = std::mem::replace(&mut self.notifications, sinks.clone());
            delta.notifications = Some(Swap { before, after: sinks });
        }
        let mut open: HashMap<i64, Override> = rows
            .overrides
            .unwrap_or_default()
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
        delta.overrides = ids
            .overrides
            .into_iter()
            .map(|id| {
                let before = self.overrides.remove(&id);
                let after = open.remove(&id);
                if let Some(o) = &after {
                    self.overrides.insert(id, o.clone());
                }
                Swap { before, after }
            })
            .collect();
        delta
    }

    /// The store revision the mirror is exact at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Whether every row of the store decoded: a planner may read the mirror only then (a row
    /// left out, planned around, could be written twice).
    pub fn complete(&self) -> bool {
        let u = &self.unreadable;
        u.rules.is_empty() && u.clients.is_empty() && u.windows.is_empty() && u.flags.is_empty()
    }

    /// The rule with row id `id`.
    pub fn rule(&self, id: i64) -> Option<&RuleRecord> {
        self.rules.get(&id)
    }

    pub fn rule_map(&self) -> &imbl::HashMap<i64, RuleRecord> {
        &self.rules
    }

    pub fn client_map(&self) -> &imbl::HashMap<i64, Stored<Client>> {
        &self.clients
    }

    pub fn window_map(&self) -> &imbl::HashMap<i64, Stored<Window>> {
        &self.windows
    }

    pub fn flag_map(&self) -> &imbl::HashMap<i64, Stored<FeatureFlag>> {
        &self.flags
    }

    /// The row of `maintenance_state`.
    pub fn mode(&self) -> &ModeRecord {
        &self.mode
    }

    pub fn profile(&self) -> Option<&Stored<Profile>> {
        self.profile.as_ref()
    }

    /// The notification sinks git declared.
    pub fn notifications(&self) -> Option<&Stored<Sinks>> {
        self.notifications.as_ref()
    }

    /// The overrides not cleared yet, by id; whether each still holds depends on the time.
    pub fn overrides(&self) -> impl Iterator<Item = &Override> {
        self.overrides.values()
    }

    /// What the effective maintenance mode depends on: the mode row, the active windows (by
    /// id), the mode overrides not cleared yet (by id).
    pub fn maintenance(&self) -> MaintenanceInputs {
        let mut windows: Vec<&Stored<Window>> = self.windows.values().filter(|w| w.value.active).collect();
        windows.sort_by_key(|w| w.id);
        MaintenanceInputs::new(
            self.mode.stored.value.clone(),
            self.mode.git.clone(),
            self.mode.updated_at,
            windows.into_iter().map(|w| w.value.clone()).collect(),
            self.overrides
                .values()
                .filter(|o| o.kind == Kind::MaintenanceMode)
                .cloned()
                .collect(),
        )
    }
}
