//! A state directory followed between loads: every file's items kept by key, so that a load
//! after an edit parses only the files that changed and names the keys it touched.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DesiredState, Loader, Origin, StateDir, files};
use crate::domain::Scope;
use crate::model::{
    Client, FeatureFlag, Maintenance, Profile, RateLimitRule, Resource, SetDigest, Sinks, Window,
};

/// Keys of each kind of collection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub rules: BTreeSet<String>,
    pub clients: BTreeSet<String>,
    pub windows: BTreeSet<String>,
    pub flags: BTreeSet<String>,
}

impl Keys {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.clients.is_empty() && self.windows.is_empty() && self.flags.is_empty()
    }

    /// Adds every key of `other`.
    pub fn extend(&mut self, other: Keys) {
        self.rules.extend(other.rules);
        self.clients.extend(other.clients);
        self.windows.extend(other.windows);
        self.flags.extend(other.flags);
    }

    fn of(state: &DesiredState) -> Keys {
        Keys {
            rules: state.rules.iter().map(Resource::key).collect(),
            clients: state.clients.iter().map(Resource::key).collect(),
            windows: state.windows.iter().map(Resource::key).collect(),
            flags: state.flags.iter().map(Resource::key).collect(),
        }
    }
}

/// One file as last read: its text, and what it declares.
#[derive(Debug)]
struct KeptFile {
    /// Tells this file's items in the indexes apart from other files'.
    no: u32,
    text: String,
    keys: Keys,
}

/// The items of one kind by key, each with the number of the file declaring it.
#[derive(Debug)]
struct Index<T> {
    items: HashMap<String, (T, u32)>,
}

impl<T: Resource + Serialize> Index<T> {
    fn new(items: Vec<T>, origin: &[usize]) -> Index<T> {
        let items = items
            .into_iter()
            .zip(origin)
            .map(|(item, file)| (item.key(), (item, u32::try_from(*file).unwrap_or(u32::MAX))))
            .collect();
        Index { items }
    }

    /// Whether `key` is declared by a file other than those of `changing`.
    fn kept(&self, key: &str, changing: &HashSet<u32>) -> bool {
        self.items.get(key).is_some_and(|(_, no)| !changing.contains(no))
    }

    /// Replaces file `no`'s items of `old` keys with `new` ones, keeping `digest` in step.
    fn replace(&mut self, no: u32, old: &BTreeSet<String>, new: Vec<T>, new_no: u32, digest: &mut SetDigest) {
        for key in old {
            if self.items.get(key).is_some_and(|(_, n)| *n == no)
                && let Some((item, _)) = self.items.remove(key)
            {
                digest.sub(SetDigest::of(&item));
            }
        }
        for item in new {
            digest.add(SetDigest::of(&item));
            self.items.insert(item.key(), (item, new_no));
        }
    }

    /// The items of `keys` that some file declares, sorted by key.
    fn subset(&self, keys: &BTreeSet<String>) -> Vec<T>
    where
        T: Clone,
    {
        keys.iter()
            .filter_map(|k| self.items.get(k).map(|(item, _)| item.clone()))
            .collect()
    }

    fn all(&self) -> Vec<T>
    where
        T: Clone,
    {
        let mut items: Vec<(&String, &T)> = self.items.iter().map(|(k, (item, _))| (k, item)).collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        items.into_iter().map(|(_, item)| item.clone()).collect()
    }
}

/// A state directory kept in memory since its last good load.
#[derive(Debug)]
pub struct KeptDir {
    dir: StateDir,
    files: BTreeMap<PathBuf, KeptFile>,
    next_no: u32,
    rules: Index<RateLimitRule>,
    clients: Index<Client>,
    windows: Index<Window>,
    flags: Index<FeatureFlag>,
    maintenance: Option<(Maintenance, u32)>,
    profile: Option<(Profile, u32)>,
    notifications: Option<(Sinks, u32)>,
    /// Which client holds each key hash: every client needs its own key.
    hashes: HashMap<String, String>,
    digest: SetDigest,
}

/// What a followed load found.
#[derive(Debug)]
pub struct Followed {
    /// The keys whose entries may differ from the last load's (removed, added or changed).
    pub touched: Keys,
    /// How many files were parsed again.
    pub parsed: usize,
}

impl KeptDir {
    /// Keeps `state`, a whole load of `dir` with its `origin`. A file's number is its index in
    /// the load.
    pub fn new(dir: StateDir, state: DesiredState, origin: Origin) -> KeptDir {
        let digest = state.set_digest();
        let count = origin.files.len();
        let mut keys = vec![Keys::default(); count];
        for (item, file) in state.rules.iter().zip(&origin.rules) {
            keys[*file].rules.insert(item.key());
        }
        for (item, file) in state.clients.iter().zip(&origin.clients) {
            keys[*file].clients.insert(item.key());
        }
        for (item, file) in state.windows.iter().zip(&origin.windows) {
            keys[*file].windows.insert(item.key());
        }
        for (item, file) in state.flags.iter().zip(&origin.flags) {
            keys[*file].flags.insert(item.key());
        }
        let files = origin
            .files
            .into_iter()
            .zip(keys)
            .zip(0..)
            .map(|(((path, text), keys), no)| (path, KeptFile { no, text, keys }))
            .collect();
        let hashes = state
            .clients
            .iter()
            .map(|c| (c.key_sha256.as_str().to_owned(), c.key()))
            .collect();
        let no = |file: usize| u32::try_from(file).unwrap_or(u32::MAX);
        KeptDir {
            next_no: no(count),
            rules: Index::new(state.rules, &origin.rules),
            clients: Index::new(state.clients, &origin.clients),
            windows: Index::new(state.windows, &origin.windows),
            flags: Index::new(state.flags, &origin.flags),
            maintenance: state.maintenance.zip(origin.maintenance.map(no)),
            profile: state.profile.zip(origin.profile.map(no)),
            notifications: state.notifications.zip(origin.notifications.map(no)),
            hashes,
            digest,
            files,
            dir,
        }
    }

    /// The fingerprint of the kept state, as [`DesiredState::fingerprint`] gives it.
    pub fn fingerprint(&self) -> String {
        self.digest.hex()
    }

    /// Reads the directory again, parses the files whose text changed, and keeps what they
    /// now declare. `None` when that cannot be done file by file (a file is unreadable or
    /// invalid, or the files together are): the caller loads the directory whole, which
    /// reports exactly what is wrong, and nothing kept has changed.
    pub fn follow(&mut self, now: DateTime<Utc>) -> Option<Followed> {
        let read = files::read_state_files(&self.dir.path, self.dir.max_file_bytes).ok()?;
        if read.is_empty() {
            return None;
        }
        let mut texts = BTreeMap::new();
        for file in read {
            texts.insert(file.path, file.text.ok()?);
        }
        let changed: BTreeSet<PathBuf> = texts
            .iter()
            .filter(|(path, text)| self.files.get(*path).is_none_or(|f| f.text != **text))
            .map(|(path, _)| path.clone())
            .chain(self.files.keys().filter(|p| !texts.contains_key(*p)).cloned())
            .collect();
        if changed.is_empty() {
            return Some(Followed {
                touched: Keys::default(),
                parsed: 0,
            });
        }
        // Each changed file on its own: its own errors send the caller to a whole load.
        let mut parsed: Vec<(PathBuf, Option<(String, DesiredState)>)> = Vec::new();
        for path in changed {
            let Some(text) = texts.remove(&path) else {
                parsed.push((path, None));
                continue;
            };
            let mut loader = Loader::for_one_file(now);
            loader.add_text(&path, text);
            let loaded = loader.finish().ok()?;
            let (_, text) = loaded.origin?.files.pop()?;
            parsed.push((path, Some((text, loaded.state))));
        }
        if !self.fits(&parsed) {
            return None;
        }
        let count = parsed.iter().filter(|(_, p)| p.is_some()).count();
        let mut touched = Keys::default();
        // Every changed file's old items out first, then the new ones in: an item that moved
        // from one changed file to another is then found once, in its new file.
        for (path, _) in &parsed {
            if let Some(old) = self.files.remove(path) {
                self.drop_file(old.no, &old.keys);
                touched.extend(old.keys);
            }
        }
        for (path, new) in parsed {
            let Some((text, state)) = new else { continue };
            let no = self.next_no;
            self.next_no += 1;
            let keys = Keys::of(&state);
            touched.extend(keys.clone());
            for client in &state.clients {
                self.hashes
                    .insert(client.key_sha256.as_str().to_owned(), client.key());
            }
            let none = BTreeSet::new();
            let d = &mut self.digest;
            self.rules.replace(no, &none, state.rules, no, d);
            self.clients.replace(no, &none, state.clients, no, d);
            self.windows.replace(no, &none, state.windows, no, d);
            self.flags.replace(no, &none, state.flags, no, d);
            replace_setting(&mut self.maintenance, no, state.maintenance, no, d);
            replace_setting(&mut self.profile, no, state.profile, no, d);
            replace_setting(&mut self.notifications, no, state.notifications, no, d);
            self.files.insert(path, KeptFile { no, text, keys });
        }
        Some(Followed {
            touched,
            parsed: count,
        })
    }

    /// Takes out what file `no` declared.
    fn drop_file(&mut self, no: u32, keys: &Keys) {
        for client in self.clients.subset(&keys.clients) {
            if self.hashes.get(client.key_sha256.as_str()) == Some(&client.key()) {
                self.hashes.remove(client.key_sha256.as_str());
            }
        }
        let d = &mut self.digest;
        self.rules.replace(no, &keys.rules, Vec::new(), no, d);
        self.clients.replace(no, &keys.clients, Vec::new(), no, d);
        self.windows.replace(no, &keys.windows, Vec::new(), no, d);
        self.flags.replace(no, &keys.flags, Vec::new(), no, d);
        replace_setting(&mut self.maintenance, no, None, no, d);
        replace_setting(&mut self.profile, no, None, no, d);
        replace_setting(&mut self.notifications, no, None, no, d);
    }

    /// Whether the directory with `parsed` in place of the files they name passes the checks
    /// across files that a whole load makes: each key declared once, each setting by one file,
    /// each rule's client declared, each key hash held by one client.
    fn fits(&self, parsed: &[(PathBuf, Option<(String, DesiredState)>)]) -> bool {
        let changing: HashSet<u32> = parsed
            .iter()
            .filter_map(|(path, _)| self.files.get(path).map(|f| f.no))
            .collect();
        let states: Vec<&DesiredState> = parsed
            .iter()
            .filter_map(|(_, p)| p.as_ref().map(|(_, s)| s))
            .collect();
        fn once<T: Resource + Serialize>(
            index: &Index<T>,
            changing: &HashSet<u32>,
            items: impl Iterator<Item = String>,
        ) -> bool {
            let mut seen = HashSet::new();
            items
                .into_iter()
                .all(|key| !index.kept(&key, changing) && seen.insert(key))
        }
        let rules = || states.iter().flat_map(|s| s.rules.iter());
        let clients = || states.iter().flat_map(|s| s.clients.iter());
        if !once(&self.rules, &changing, rules().map(Resource::key))
            || !once(&self.clients, &changing, clients().map(Resource::key))
            || !once(
                &self.windows,
                &changing,
                states.iter().flat_map(|s| s.windows.iter()).map(Resource::key),
            )
            || !once(
                &self.flags,
                &changing,
                states.iter().flat_map(|s| s.flags.iter()).map(Resource::key),
            )
        {
            return false;
        }
        let kept_setting = |s: Option<u32>| usize::from(s.is_some_and(|no| !changing.contains(&no)));
        let modes = kept_setting(self.maintenance.as_ref().map(|(_, n)| *n))
            + states.iter().filter(|s| s.maintenance.is_some()).count();
        let profiles = kept_setting(self.profile.as_ref().map(|(_, n)| *n))
            + states.iter().filter(|s| s.profile.is_some()).count();
        let sinks = kept_setting(self.notifications.as_ref().map(|(_, n)| *n))
            + states.iter().filter(|s| s.notifications.is_some()).count();
        if modes > 1 || profiles > 1 || sinks > 1 {
            return false;
        }
        // Clients after the change: the new ones, and the kept ones of unchanged files.
        let new_clients: HashSet<String> = clients().map(Resource::key).collect();
        let client_declared = |name: &str| new_clients.contains(name) || self.clients.kept(name, &changing);
        let new_rules: HashSet<String> = rules().map(Resource::key).collect();
        let rule_declared = |key: &str| new_rules.contains(key) || self.rules.kept(key, &changing);
        if !rules().all(|r| r.scope != Scope::ApiKey || client_declared(r.key.as_str())) {
            return false;
        }
        let gone_clients = parsed
            .iter()
            .filter_map(|(path, _)| self.files.get(path))
            .flat_map(|f| f.keys.clients.iter())
            .filter(|name| !new_clients.contains(*name));
        for name in gone_clients {
            if rule_declared(&format!("{}:{name}", Scope::ApiKey)) {
                return false;
            }
        }
        let mut hashes = HashSet::new();
        clients().all(|c| {
            let hash = c.key_sha256.as_str();
            let held_elsewhere = self
                .hashes
                .get(hash)
                .is_some_and(|owner| self.clients.kept(owner, &changing));
            !held_elsewhere && hashes.insert(hash)
        })
    }

    /// The kept entries of `keys`, with the settings: the part of the state a plan of those
    /// keys reads.
    pub fn part(&self, keys: &Keys) -> DesiredState {
        DesiredState {
            rules: self.rules.subset(&keys.rules),
            clients: self.clients.subset(&keys.clients),
            windows: self.windows.subset(&keys.windows),
            flags: self.flags.subset(&keys.flags),
            maintenance: self.maintenance.as_ref().map(|(m, _)| m.clone()),
            profile: self.profile.as_ref().map(|(p, _)| p.clone()),
            notifications: self.notifications.as_ref().map(|(n, _)| n.clone()),
        }
    }

    /// The whole kept state.
    pub fn state(&self) -> DesiredState {
        DesiredState {
            rules: self.rules.all(),
            clients: self.clients.all(),
            windows: self.windows.all(),
            flags: self.flags.all(),
            maintenance: self.maintenance.as_ref().map(|(m, _)| m.clone()),
            profile: self.profile.as_ref().map(|(p, _)| p.clone()),
            notifications: self.notifications.as_ref().map(|(n, _)| n.clone()),
        }
    }
}

/// Replaces a setting declared by file `no` with `new` (declared by file `new_no`).
fn replace_setting<T: Serialize>(
    slot: &mut Option<(T, u32)>,
    no: u32,
    new: Option<T>,
    new_no: u32,
    digest: &mut SetDigest,
) {
    if slot.as_ref().is_some_and(|(_, n)| *n == no)
        && let Some((old, _)) = slot.take()
    {
        digest.sub(SetDigest::of(&old));
    }
    if let Some(new) = new {
        digest.add(SetDigest::of(&new));
        *slot = Some((new, new_no));
    }
}
