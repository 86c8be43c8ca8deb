//! The watch loop's copy of the store: a [`Mirror`], with what planning part of it needs besides
//! its rows (each key's row, the digest and totals of the whole, and the keys changed since the
//! last plan).

use std::collections::{BTreeSet, HashMap};

use crate::desired::kept::Keys;
use crate::mirror::{Delta, Mirror, Step, Swap};
use crate::model::{Actual, Kind, RateLimitRule, Resource, SetDigest, Stored, Window};
use crate::plan::{Removable, Totals, counts};
use crate::store::{Db, RuleRecord, StoreError};

/// A row of the mirror as the planner sees it.
trait Planned {
    type Value: Removable + serde::Serialize;
    fn planned(&self) -> Stored<Self::Value>;
}

impl Planned for RuleRecord {
    type Value = RateLimitRule;
    fn planned(&self) -> Stored<RateLimitRule> {
        self.clone().stored()
    }
}

impl<T: Removable + serde::Serialize> Planned for Stored<T> {
    type Value = T;
    fn planned(&self) -> Stored<T> {
        self.clone()
    }
}

/// One kind's rows by key.
#[derive(Debug, Default)]
struct Keyed {
    /// The row id of each key.
    ids: HashMap<String, i64>,
    /// Keys of rows the API owns: a plan lists them whatever git says (unmanaged, or pruned).
    api: BTreeSet<String>,
}

impl Keyed {
    /// Keys `rows`, adding each to the digest and the total.
    fn new<'a, R: Planned + 'a>(
        rows: impl Iterator<Item = &'a R>,
        digest: &mut SetDigest,
        total: &mut usize,
    ) -> Keyed {
        let mut keyed = Keyed::default();
        let rows: Vec<Stored<R::Value>> = rows.map(Planned::planned).collect();
        digest.add_all(rows.iter());
        for row in rows {
            *total += usize::from(counts(&row));
            keyed.insert(&row);
        }
        keyed
    }

    fn insert<T: Removable>(&mut self, row: &Stored<T>) {
        let key = row.value.key();
        if row.owner == crate::domain::Owner::Api {
            self.api.insert(key.clone());
        }
        self.ids.insert(key, row.id);
    }

    /// Follows `swaps`, keeping the digest and the total in step; every key involved is added
    /// to `dirty`.
    fn follow<R: Planned>(
        &mut self,
        swaps: &[Swap<R>],
        digest: &mut SetDigest,
        total: &mut usize,
        dirty: &mut BTreeSet<String>,
    ) {
        for old in swaps.iter().filter_map(|s| s.before.as_ref()) {
            let old = old.planned();
            let key = old.value.key();
            if self.ids.get(&key) == Some(&old.id) {
                self.ids.remove(&key);
                self.api.remove(&key);
            }
            digest.sub(SetDigest::of(&old));
            *total -= usize::from(counts(&old));
            dirty.insert(key);
        }
        for new in swaps.iter().filter_map(|s| s.after.as_ref()) {
            let new = new.planned();
            digest.add(SetDigest::of(&new));
            *total += usize::from(counts(&new));
            dirty.insert(new.value.key());
            self.insert(&new);
        }
    }

    /// The rows of `keys` in `map`, by id.
    fn part<R: Planned>(
        &self,
        keys: &BTreeSet<String>,
        map: &imbl::HashMap<i64, R>,
    ) -> Vec<Stored<R::Value>> {
        let mut rows: Vec<Stored<R::Value>> = keys
            .iter()
            .filter_map(|k| map.get(self.ids.get(k)?))
            .map(Planned::planned)
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }
}

/// The store as a watch pass plans from it: exact at the mirror's revision, and every key
/// changed since the last plan in `dirty`.
#[derive(Debug)]
pub(super) struct Tracked {
    mirror: Mirror,
    rules: Keyed,
    clients: Keyed,
    windows: Keyed,
    flags: Keyed,
    digest: SetDigest,
    totals: Totals,
    /// Keys whose rows changed since they were last planned.
    dirty: Keys,
}

/// What [`Tracked::follow`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Followed {
    /// Every key changed since the last plan is known.
    Known,
    /// The change log could not name what changed: the mirror was read whole, and which keys
    /// changed is unknown.
    Unknown,
}

impl Tracked {
    /// Keys and digests `mirror`; nothing is dirty.
    pub(super) fn new(mirror: Mirror) -> Tracked {
        let mut digest = SetDigest::default();
        let mut totals = Totals::default();
        let rules = Keyed::new(mirror.rule_map().values(), &mut digest, &mut totals.rules);
        let clients = Keyed::new(mirror.client_map().values(), &mut digest, &mut totals.clients);
        let windows = Keyed::new(mirror.window_map().values(), &mut digest, &mut totals.windows);
        let flags = Keyed::new(mirror.flag_map().values(), &mut digest, &mut totals.flags);
        digest.add_all(std::iter::once(&mirror.mode().stored));
        digest.add_all(mirror.profile().into_iter());
        digest.add_all(mirror.notifications().into_iter());
        digest.add_all(mirror.overrides());
        Tracked {
            mirror,
            rules,
            clients,
            windows,
            flags,
            digest,
            totals,
            dirty: Keys::default(),
        }
    }

    /// Reads the whole store.
    pub(super) async fn load(db: &Db) -> Result<Tracked, StoreError> {
        Ok(Tracked::new(Mirror::load(db).await?))
    }

    /// Brings the copy to the store's revision, marking each key that changed.
    pub(super) async fn follow(&mut self, db: &Db) -> Result<Followed, StoreError> {
        match self.mirror.follow(db).await? {
            Step::Same => Ok(Followed::Known),
            Step::Rows(delta) => {
                self.apply(&delta);
                Ok(Followed::Known)
            }
            Step::Whole => {
                // A clone of the mirror shares its maps.
                *self = Tracked::new(self.mirror.clone());
                Ok(Followed::Unknown)
            }
        }
    }

    fn apply(&mut self, delta: &Delta) {
        let (d, t, dirty) = (&mut self.digest, &mut self.totals, &mut self.dirty);
        self.rules.follow(&delta.rules, d, &mut t.rules, &mut dirty.rules);
        self.clients
            .follow(&delta.clients, d, &mut t.clients, &mut dirty.clients);
        self.windows
            .follow(&delta.windows, d, &mut t.windows, &mut dirty.windows);
        self.flags.follow(&delta.flags, d, &mut t.flags, &mut dirty.flags);
        if let Some(mode) = &delta.mode {
            d.sub_all(mode.before.iter().map(|m| &m.stored));
            d.add_all(mode.after.iter().map(|m| &m.stored));
        }
        if let Some(profile) = &delta.profile {
            d.sub_all(profile.before.iter());
            d.add_all(profile.after.iter());
        }
        if let Some(sinks) = &delta.notifications {
            d.sub_all(sinks.before.iter());
            d.add_all(sinks.after.iter());
        }
        for o in &delta.overrides {
            d.sub_all(o.before.iter());
            d.add_all(o.after.iter());
        }
    }

    /// The store revision the copy is exact at.
    pub(super) fn revision(&self) -> i64 {
        self.mirror.revision()
    }

    /// Whether a pass may plan from the copy: every row of the store decoded.
    pub(super) fn complete(&self) -> bool {
        self.mirror.complete()
    }

    /// Forgets the keys changed so far: a whole plan covered them.
    pub(super) fn settle(&mut self) {
        self.dirty = Keys::default();
    }

    /// The keys a plan must look at whatever changed: those changed in the store since the last
    /// plan (taken: the plan about to be made covers them), those an override names (its expiry
    /// changes the plan with no change to anything), and those the API owns.
    pub(super) fn take_unsettled(&mut self) -> Keys {
        let mut keys = std::mem::take(&mut self.dirty);
        keys.rules.extend(self.rules.api.iter().cloned());
        keys.clients.extend(self.clients.api.iter().cloned());
        keys.windows.extend(self.windows.api.iter().cloned());
        keys.flags.extend(self.flags.api.iter().cloned());
        for o in self.mirror.overrides() {
            let set = match o.kind {
                Kind::RateLimitRule => &mut keys.rules,
                Kind::Client => &mut keys.clients,
                Kind::MaintenanceWindow => &mut keys.windows,
                Kind::FeatureFlag => &mut keys.flags,
                Kind::MaintenanceMode | Kind::DeploymentProfile | Kind::Notifications => continue,
            };
            set.insert(o.key.clone());
        }
        keys
    }

    /// The rows of `keys`, the settings and the overrides: the part of the store a plan of
    /// those keys reads.
    pub(super) fn part(&self, keys: &Keys) -> Actual {
        let m = &self.mirror;
        Actual {
            rules: self.rules.part(&keys.rules, m.rule_map()),
            clients: self.clients.part(&keys.clients, m.client_map()),
            windows: self.windows.part(&keys.windows, m.window_map()),
            flags: self.flags.part(&keys.flags, m.flag_map()),
            maintenance: Some(m.mode().stored.clone()),
            profile: m.profile().cloned(),
            notifications: m.notifications().cloned(),
            overrides: m.overrides().cloned().collect(),
        }
    }

    /// Every stored window.
    pub(super) fn windows(&self) -> Vec<Window> {
        self.mirror
            .window_map()
            .values()
            .map(|w| w.value.clone())
            .collect()
    }

    pub(super) fn totals(&self) -> Totals {
        self.totals
    }

    /// The whole store's fingerprint, as [`Actual::fingerprint`] gives it.
    pub(super) fn fingerprint(&self) -> String {
        self.digest.hex()
    }
}
