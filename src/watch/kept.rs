//! The store's snapshot kept between watch passes at a known revision, followed row by row
//! through the change log, with the keys whose rows changed since the last plan.

use std::collections::{BTreeSet, HashMap};

use crate::desired::kept::Keys;
use crate::model::{
    Actual, Client, FeatureFlag, Kind, Maintenance, Override, Profile, RateLimitRule, SetDigest, Stored,
    Window,
};
use crate::plan::{Removable, Totals, counts};
use crate::store::ActualRows;

/// The rows of one kind, by key.
#[derive(Debug)]
struct Rows<T> {
    by_key: HashMap<String, Stored<T>>,
    key_of: HashMap<i64, String>,
    /// Keys of rows the API owns: a plan lists them whatever git says (unmanaged, or pruned).
    api: BTreeSet<String>,
}

impl<T: Removable + serde::Serialize> Rows<T> {
    fn new(rows: Vec<Stored<T>>) -> Rows<T> {
        let mut kept = Rows {
            by_key: HashMap::with_capacity(rows.len()),
            key_of: HashMap::with_capacity(rows.len()),
            api: BTreeSet::new(),
        };
        for row in rows {
            kept.insert(row);
        }
        kept
    }

    fn insert(&mut self, row: Stored<T>) {
        let key = row.value.key();
        if row.owner == crate::domain::Owner::Api {
            self.api.insert(key.clone());
        }
        self.key_of.insert(row.id, key.clone());
        self.by_key.insert(key, row);
    }

    /// Replaces the rows of `ids` with `rows` (what the store holds of them now), keeping the
    /// digest and the total in step; every key involved is added to `dirty`.
    fn patch(
        &mut self,
        ids: &[i64],
        rows: Vec<Stored<T>>,
        digest: &mut SetDigest,
        total: &mut usize,
        dirty: &mut BTreeSet<String>,
    ) {
        for id in ids {
            let Some(key) = self.key_of.remove(id) else {
                continue;
            };
            if let Some(old) = self.by_key.remove(&key) {
                digest.sub(SetDigest::of(&old));
                *total -= usize::from(counts(&old));
            }
            self.api.remove(&key);
            dirty.insert(key);
        }
        for row in rows {
            digest.add(SetDigest::of(&row));
            *total += usize::from(counts(&row));
            dirty.insert(row.value.key());
            self.insert(row);
        }
    }

    fn part(&self, keys: &BTreeSet<String>) -> Vec<Stored<T>> {
        let mut rows: Vec<Stored<T>> = keys.iter().filter_map(|k| self.by_key.get(k).cloned()).collect();
        rows.sort_by_key(|r| r.id);
        rows
    }
}

/// A snapshot of the store, exact at `revision` but for the keys in `dirty`.
#[derive(Debug)]
pub(super) struct KeptStore {
    pub(super) revision: i64,
    rules: Rows<RateLimitRule>,
    clients: Rows<Client>,
    windows: Rows<Window>,
    flags: Rows<FeatureFlag>,
    maintenance: Option<Stored<Maintenance>>,
    profile: Option<Stored<Profile>>,
    overrides: Vec<Override>,
    digest: SetDigest,
    totals: Totals,
    /// Keys whose rows changed since they were last planned.
    dirty: Keys,
}

impl KeptStore {
    /// Keeps `actual`, read at `revision`.
    pub(super) fn new(revision: i64, actual: Actual) -> KeptStore {
        KeptStore {
            revision,
            digest: actual.set_digest(),
            totals: Totals::of(&actual),
            rules: Rows::new(actual.rules),
            clients: Rows::new(actual.clients),
            windows: Rows::new(actual.windows),
            flags: Rows::new(actual.flags),
            maintenance: actual.maintenance,
            profile: actual.profile,
            overrides: actual.overrides,
            dirty: Keys::default(),
        }
    }

    /// Brings the snapshot to `revision` with the rows read again.
    pub(super) fn patch(&mut self, revision: i64, rows: ActualRows) {
        let d = &mut self.digest;
        let t = &mut self.totals;
        let dirty = &mut self.dirty;
        self.rules
            .patch(&rows.rule_ids, rows.rules, d, &mut t.rules, &mut dirty.rules);
        self.clients.patch(
            &rows.client_ids,
            rows.clients,
            d,
            &mut t.clients,
            &mut dirty.clients,
        );
        self.windows.patch(
            &rows.window_ids,
            rows.windows,
            d,
            &mut t.windows,
            &mut dirty.windows,
        );
        self.flags
            .patch(&rows.flag_ids, rows.flags, d, &mut t.flags, &mut dirty.flags);
        if let Some(maintenance) = rows.maintenance {
            d.sub_all(self.maintenance.iter());
            d.add_all(maintenance.iter());
            self.maintenance = maintenance;
        }
        if let Some(profile) = rows.profile {
            d.sub_all(self.profile.iter());
            d.add_all(profile.iter());
            self.profile = profile;
        }
        if let Some(overrides) = rows.overrides {
            d.sub_all(self.overrides.iter());
            d.add_all(overrides.iter());
            self.overrides = overrides;
        }
        self.revision = revision;
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
        for o in &self.overrides {
            let set = match o.kind {
                Kind::RateLimitRule => &mut keys.rules,
                Kind::Client => &mut keys.clients,
                Kind::MaintenanceWindow => &mut keys.windows,
                Kind::FeatureFlag => &mut keys.flags,
                Kind::MaintenanceMode | Kind::DeploymentProfile => continue,
            };
            set.insert(o.key.clone());
        }
        keys
    }

    /// The rows of `keys`, the settings and the overrides: the part of the snapshot a plan of
    /// those keys reads.
    pub(super) fn part(&self, keys: &Keys) -> Actual {
        Actual {
            rules: self.rules.part(&keys.rules),
            clients: self.clients.part(&keys.clients),
            windows: self.windows.part(&keys.windows),
            flags: self.flags.part(&keys.flags),
            maintenance: self.maintenance.clone(),
            profile: self.profile.clone(),
            overrides: self.overrides.clone(),
        }
    }

    pub(super) fn totals(&self) -> Totals {
        self.totals
    }

    /// The whole snapshot's fingerprint, as [`Actual::fingerprint`] gives it.
    pub(super) fn fingerprint(&self) -> String {
        self.digest.hex()
    }
}
