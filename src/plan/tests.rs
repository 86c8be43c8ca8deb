//! Planner tests: one per action, the guard, and properties over random desired/actual pairs.

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::calendar::{Interval, When};
use crate::domain::{
    ClientName, ClientType, EnvName, EventPattern, FlagName, KeySha256, Mode, OnOutage, ProfileName, Role,
    RuleKey, Scope, Severity, SinkName, SinkType, WindowMode, WindowName, WindowSeconds,
};
use crate::model::Sink;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn rule(scope: Scope, key: &str, max: u32) -> RateLimitRule {
    RateLimitRule {
        scope,
        key: RuleKey::parse(scope, key).unwrap(),
        window_seconds: WindowSeconds::DEFAULT,
        max_requests: crate::domain::MaxRequests::new(max.into()).unwrap(),
        enabled: true,
        shadow: false,
        on_outage: OnOutage::DEFAULT,
        description: String::new(),
    }
}

fn client(name: &str, hash: char) -> Client {
    Client {
        name: ClientName::parse(name).unwrap(),
        client_type: ClientType::Script,
        role: Role::Reader,
        key_sha256: KeySha256::parse(&hash.to_string().repeat(64)).unwrap(),
        active: true,
        description: String::new(),
    }
}

fn window(name: &str, hours: i64) -> Window {
    Window {
        name: WindowName::parse(name).unwrap(),
        when: When::Once(Interval {
            starts_at: now(),
            ends_at: now() + Duration::hours(hours),
        }),
        mode: WindowMode::Maintenance,
        active: true,
        description: String::new(),
    }
}

fn flag(name: &str, enabled: bool) -> FeatureFlag {
    FeatureFlag {
        name: FlagName::parse(name).unwrap(),
        enabled,
        description: String::new(),
    }
}

fn stored<T>(id: i64, owner: Owner, value: T) -> Stored<T> {
    Stored { id, owner, value }
}

fn git<T>(id: i64, value: T) -> Stored<T> {
    stored(id, Owner::Git, value)
}

fn hold(id: i64, kind: Kind, key: &str, expires_in: Option<i64>) -> Override {
    Override {
        id,
        kind,
        key: key.into(),
        actor: "tyr".into(),
        reason: "incident 7".into(),
        created_at: now() - Duration::minutes(5),
        expires_at: expires_in.map(|m| now() + Duration::minutes(m)),
        group_id: None,
    }
}

fn plan_of(desired: &DesiredState, actual: &Actual) -> Plan {
    plan(desired, actual, now(), PlanOptions::default())
}

fn actions<T>(ops: &[Op<T>]) -> Vec<(Action, &str)> {
    ops.iter().map(|o| (o.action, o.key.as_str())).collect()
}

#[test]
fn create_when_only_git_has_it() {
    let desired = DesiredState {
        rules: vec![rule(Scope::Ip, "10.0.0.1", 5)],
        ..Default::default()
    };
    let p = plan_of(&desired, &Actual::default());
    assert_eq!(actions(&p.rules), [(Action::Create, "ip:10.0.0.1")]);
    let change = p.rules[0].change();
    assert_eq!(
        change.fields[1],
        FieldChange {
            field: "max_requests".into(),
            old: None,
            new: Some("5".into()),
            secret: false
        }
    );
    assert_eq!(
        p.summary(),
        Summary {
            create: 1,
            ..Default::default()
        }
    );
}

#[test]
fn update_lists_only_the_changed_fields() {
    let desired = DesiredState {
        rules: vec![rule(Scope::Ip, "10.0.0.1", 9)],
        ..Default::default()
    };
    let actual = Actual {
        rules: vec![git(1, rule(Scope::Ip, "10.0.0.1", 5))],
        ..Default::default()
    };
    let p = plan_of(&desired, &actual);
    assert_eq!(actions(&p.rules), [(Action::Update, "ip:10.0.0.1")]);
    assert_eq!(
        p.rules[0].change().fields,
        [FieldChange {
            field: "max_requests".into(),
            old: Some("5".into()),
            new: Some("9".into()),
            secret: false
        }]
    );
}

#[test]
fn equal_git_owned_resources_need_nothing() {
    let desired = DesiredState {
        rules: vec![rule(Scope::Global, "*", 5)],
        clients: vec![client("a", 'a')],
        ..Default::default()
    };
    let actual = Actual {
        rules: vec![git(1, rule(Scope::Global, "*", 5))],
        clients: vec![git(1, client("a", 'a'))],
        ..Default::default()
    };
    let p = plan_of(&desired, &actual);
    assert!(p.changes().is_empty() && !p.has_changes());
}

#[test]
fn api_owned_resource_declared_in_git_is_adopted() {
    let desired = DesiredState {
        flags: vec![flag("f", true)],
        ..Default::default()
    };
    let actual = Actual {
        flags: vec![stored(3, Owner::Api, flag("f", true))],
        ..Default::default()
    };
    let p = plan_of(&desired, &actual);
    assert_eq!(actions(&p.flags), [(Action::Update, "f")]);
    assert_eq!(
        p.flags[0].change().fields,
        [FieldChange {
            field: "owner".into(),
            old: Some("api".into()),
            new: Some("git".into()),
            secret: false
        }]
    );
}

#[test]
fn removal_deletes_rules_and_flags_and_deactivates_clients_and_windows() {
    let actual = Actual {
        rules: vec![git(1, rule(Scope::User, "u1", 5))],
        flags: vec![git(1, flag("f", true))],
        clients: vec![
            git(1, client("a", 'a')),
            git(
                2,
                Client {
                    active: false,
                    ..client("gone", 'b')
                },
            ),
        ],
        windows: vec![git(1, window("w", 2))],
        ..Default::default()
    };
    let p = plan_of(&DesiredState::default(), &actual);
    assert_eq!(actions(&p.rules), [(Action::Delete, "user:u1")]);
    assert_eq!(actions(&p.flags), [(Action::Delete, "f")]);
    // An already deactivated client is history: nothing to do.
    assert_eq!(actions(&p.clients), [(Action::Deactivate, "a")]);
    assert_eq!(actions(&p.windows), [(Action::Deactivate, "w")]);
    assert_eq!(
        p.clients[0].change().fields,
        [FieldChange {
            field: "active".into(),
            old: Some("true".into()),
            new: Some("false".into()),
            secret: false
        }]
    );
    assert!(!p.windows[0].target.as_ref().unwrap().active);
}

#[test]
fn reactivating_a_soft_deleted_client() {
    let desired = DesiredState {
        clients: vec![client("a", 'a')],
        ..Default::default()
    };
    let actual = Actual {
        clients: vec![git(
            1,
            Client {
                active: false,
                ..client("a", 'a')
            },
        )],
        ..Default::default()
    };
    assert_eq!(
        actions(&plan_of(&desired, &actual).clients),
        [(Action::Update, "a")]
    );
}

#[test]
fn api_owned_resources_are_unmanaged_unless_pruned() {
    let actual = Actual {
        rules: vec![stored(1, Owner::Api, rule(Scope::Ip, "10.0.0.9", 1))],
        clients: vec![stored(1, Owner::Api, client("ops-bot", 'c'))],
        ..Default::default()
    };
    let p = plan_of(&DesiredState::default(), &actual);
    assert_eq!(actions(&p.rules), [(Action::Unmanaged, "ip:10.0.0.9")]);
    assert_eq!(actions(&p.clients), [(Action::Unmanaged, "ops-bot")]);
    assert!(!p.has_changes());
    let pruned = plan(
        &DesiredState::default(),
        &actual,
        now(),
        PlanOptions { prune: true },
    );
    assert_eq!(actions(&pruned.rules), [(Action::Delete, "ip:10.0.0.9")]);
    assert_eq!(actions(&pruned.clients), [(Action::Deactivate, "ops-bot")]);
    // Pruning api-owned resources never counts towards the git mass-removal guard.
    assert!(pruned.mass_removals.is_empty());
}

#[test]
fn an_api_owned_client_deactivated_over_http_is_still_unmanaged_and_pruned() {
    let inactive = Client {
        active: false,
        ..client("temp", 'd')
    };
    let actual = Actual {
        clients: vec![
            stored(1, Owner::Api, inactive.clone()),
            // Retired by an earlier reconcile: history.
            git(
                2,
                Client {
                    active: false,
                    ..client("old", 'e')
                },
            ),
        ],
        ..Default::default()
    };
    let p = plan_of(&DesiredState::default(), &actual);
    assert_eq!(actions(&p.clients), [(Action::Unmanaged, "temp")]);
    let pruned = plan(
        &DesiredState::default(),
        &actual,
        now(),
        PlanOptions { prune: true },
    );
    assert_eq!(actions(&pruned.clients), [(Action::Deactivate, "temp")]);
    assert!(
        pruned.has_changes(),
        "retiring it is a write: it becomes git's history"
    );
    let after = apply(&actual, &pruned);
    let again = plan(
        &DesiredState::default(),
        &after,
        now(),
        PlanOptions { prune: true },
    );
    assert!(actions(&again.clients).is_empty(), "{:?}", again.clients);
}

#[test]
fn active_override_holds_the_resource_and_says_who() {
    let desired = DesiredState {
        clients: vec![client("weweb", 'a')],
        ..Default::default()
    };
    let actual = Actual {
        clients: vec![git(
            1,
            Client {
                active: false,
                ..client("weweb", 'a')
            },
        )],
        overrides: vec![hold(7, Kind::Client, "weweb", Some(30))],
        ..Default::default()
    };
    let p = plan_of(&desired, &actual);
    assert_eq!(actions(&p.clients), [(Action::Held, "weweb")]);
    let change = p.clients[0].change();
    let h = change.hold.unwrap();
    assert_eq!(
        (h.override_id, h.actor.as_str(), h.reason.as_str()),
        (7, "tyr", "incident 7")
    );
    assert_eq!(h.until, Some(now() + Duration::minutes(30)));
    // What git would restore once the hold ends is still shown.
    assert_eq!(change.fields[0].field, "active");
    assert!(!p.has_changes());
}

#[test]
fn held_is_listed_even_when_git_agrees_and_for_removed_resources() {
    let desired = DesiredState {
        maintenance: Some(Maintenance {
            mode: Mode::Normal,
            reason: String::new(),
        }),
        ..Default::default()
    };
    let actual = Actual {
        maintenance: Some(git(
            1,
            Maintenance {
                mode: Mode::Normal,
                reason: String::new(),
            },
        )),
        rules: vec![git(1, rule(Scope::Global, "*", 1))],
        overrides: vec![
            hold(1, Kind::MaintenanceMode, "mode", None),
            hold(2, Kind::RateLimitRule, "global:*", None),
        ],
        ..Default::default()
    };
    let p = plan_of(&desired, &actual);
    assert_eq!(actions(&p.maintenance), [(Action::Held, "mode")]);
    assert_eq!(actions(&p.rules), [(Action::Held, "global:*")]);
}

#[test]
fn expired_override_no_longer_holds() {
    let desired = DesiredState {
        maintenance: Some(Maintenance {
            mode: Mode::Normal,
            reason: String::new(),
        }),
        ..Default::default()
    };
    let actual = Actual {
        maintenance: Some(git(
            1,
            Maintenance {
                mode: Mode::ReadOnly,
                reason: "freeze".into(),
            },
        )),
        overrides: vec![hold(1, Kind::MaintenanceMode, "mode", Some(-1))],
        ..Default::default()
    };
    assert_eq!(
        actions(&plan_of(&desired, &actual).maintenance),
        [(Action::Update, "mode")]
    );
}

#[test]
fn settings_are_managed_only_while_declared() {
    let actual = Actual {
        maintenance: Some(git(
            1,
            Maintenance {
                mode: Mode::ReadOnly,
                reason: String::new(),
            },
        )),
        profile: Some(git(
            1,
            Profile {
                name: ProfileName::parse("staging").unwrap(),
            },
        )),
        ..Default::default()
    };
    let p = plan_of(&DesiredState::default(), &actual);
    assert!(p.maintenance.is_empty() && p.profile.is_empty());
    let desired = DesiredState {
        profile: Some(Profile {
            name: ProfileName::parse("production").unwrap(),
        }),
        ..Default::default()
    };
    assert_eq!(
        actions(&plan_of(&desired, &Actual::default()).profile),
        [(Action::Create, "profile")]
    );
    assert_eq!(
        actions(&plan_of(&desired, &actual).profile),
        [(Action::Update, "profile")]
    );
}

#[test]
fn key_changes_never_show_the_hash() {
    let desired = DesiredState {
        clients: vec![client("a", 'b')],
        ..Default::default()
    };
    let actual = Actual {
        clients: vec![git(1, client("a", 'a'))],
        ..Default::default()
    };
    let fields = plan_of(&desired, &actual).clients[0].change().fields;
    assert_eq!(
        fields,
        [FieldChange {
            field: "key_sha256".into(),
            old: None,
            new: None,
            secret: true
        }]
    );
    let created = plan_of(&desired, &Actual::default()).changes();
    let json = serde_json::to_string(&created).unwrap();
    assert!(!json.contains(&"b".repeat(64)), "{json}");
}

#[test]
fn mass_removal_guard_needs_more_than_half_and_more_than_five() {
    let rules = |n: usize| -> Vec<Stored<RateLimitRule>> {
        (0..n)
            .map(|i| git(i as i64, rule(Scope::User, &format!("u{i}"), 1)))
            .collect()
    };
    let keep = |n: usize| DesiredState {
        rules: (0..n).map(|i| rule(Scope::User, &format!("u{i}"), 1)).collect(),
        ..Default::default()
    };
    let check = |total: usize, kept: usize| {
        plan_of(
            &keep(kept),
            &Actual {
                rules: rules(total),
                ..Default::default()
            },
        )
        .mass_removals
    };
    assert_eq!(
        check(10, 4),
        [MassRemoval {
            kind: Kind::RateLimitRule,
            removing: 6,
            total: 10
        }]
    );
    assert!(check(6, 1).is_empty(), "5 removals are below the minimum");
    assert!(check(12, 6).is_empty(), "exactly half is not more than half");
    assert_eq!(check(7, 0).len(), 1);
}

#[test]
fn operations_are_sorted_by_key_and_kinds_in_plan_order() {
    let desired = DesiredState {
        rules: vec![
            rule(Scope::User, "b", 1),
            rule(Scope::Ip, "10.0.0.1", 1),
            rule(Scope::Global, "*", 1),
        ],
        flags: vec![flag("z", true), flag("a", true)],
        ..Default::default()
    };
    let changes = plan_of(&desired, &Actual::default()).changes();
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["global:*", "ip:10.0.0.1", "user:b", "a", "z"]);
}

/// Applies a plan to a snapshot the way the store does, for the properties below.
fn apply(actual: &Actual, p: &Plan) -> Actual {
    fn one<T: Removable>(rows: &[Stored<T>], ops: &[Op<T>]) -> Vec<Stored<T>> {
        let mut rows = rows.to_vec();
        let mut next_id = rows.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        for op in ops {
            let pos = rows.iter().position(|r| r.value.key() == op.key);
            match (op.action, pos, &op.target) {
                (Action::Create, None, Some(t)) => {
                    rows.push(Stored {
                        id: next_id,
                        owner: Owner::Git,
                        value: t.clone(),
                    });
                    next_id += 1;
                }
                (Action::Update, Some(i), Some(t)) => {
                    rows[i] = Stored {
                        owner: Owner::Git,
                        value: t.clone(),
                        ..rows[i].clone()
                    }
                }
                // Retired by the reconciler: the row becomes git's history.
                (Action::Deactivate, Some(i), Some(t)) => {
                    rows[i] = Stored {
                        owner: Owner::Git,
                        value: t.clone(),
                        ..rows[i].clone()
                    }
                }
                (Action::Delete, Some(i), _) => {
                    rows.remove(i);
                }
                (Action::Held | Action::Unmanaged, ..) => {}
                other => panic!("impossible operation {other:?}"),
            }
        }
        rows
    }
    /// A setting after its plan: git's value when the plan writes it, else as it was.
    fn setting<T: Resource>(cur: &Option<Stored<T>>, ops: &[Op<T>]) -> Option<Stored<T>> {
        match ops.first() {
            Some(op) if op.action.writes() => Some(Stored {
                id: 1,
                owner: Owner::Git,
                value: op.target.clone().unwrap(),
            }),
            _ => cur.clone(),
        }
    }
    Actual {
        rules: one(&actual.rules, &p.rules),
        clients: one(&actual.clients, &p.clients),
        windows: one(&actual.windows, &p.windows),
        flags: one(&actual.flags, &p.flags),
        maintenance: setting(&actual.maintenance, &p.maintenance),
        profile: setting(&actual.profile, &p.profile),
        notifications: setting(&actual.notifications, &p.notifications),
        overrides: actual.overrides.clone(),
    }
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![Just(Owner::Git), Just(Owner::Api)]
}

fn any_rule() -> impl Strategy<Value = RateLimitRule> {
    (
        prop_oneof![Just(Scope::Ip), Just(Scope::User)],
        0..4u8,
        0..3u32,
        any::<bool>(),
    )
        .prop_map(|(scope, k, max, enabled)| {
            let key = if scope == Scope::Ip {
                format!("10.0.0.{k}")
            } else {
                format!("u{k}")
            };
            RateLimitRule {
                enabled,
                ..rule(scope, &key, max)
            }
        })
}

fn any_client() -> impl Strategy<Value = Client> {
    (
        0..4u8,
        prop_oneof![Just('a'), Just('b')],
        any::<bool>(),
        prop_oneof![Just(Role::Reader), Just(Role::Admin)],
    )
        .prop_map(|(n, h, active, role)| Client {
            active,
            role,
            ..client(&format!("c{n}"), h)
        })
}

fn any_window() -> impl Strategy<Value = Window> {
    (0..3u8, 1..3i64, any::<bool>()).prop_map(|(n, h, active)| Window {
        active,
        ..window(&format!("w{n}"), h)
    })
}

fn any_flag() -> impl Strategy<Value = FeatureFlag> {
    (0..3u8, any::<bool>()).prop_map(|(n, e)| flag(&format!("f{n}"), e))
}

/// No sinks, or one or two with a varying minimum severity.
fn any_sinks() -> impl Strategy<Value = Sinks> {
    prop::collection::vec(0..3u8, 0..3).prop_map(|levels| {
        let sinks = levels
            .into_iter()
            .enumerate()
            .map(|(i, level)| Sink {
                name: SinkName::parse(format!("s{i}")).unwrap(),
                sink_type: SinkType::Webhook,
                url_env: EnvName::parse("HOOK_URL").unwrap(),
                secret_env: Some(EnvName::parse("HOOK_SECRET").unwrap()),
                events: vec![EventPattern::All],
                min_severity: Severity::ALL[usize::from(level)],
                allow_link_local: false,
            })
            .collect();
        Sinks(sinks)
    })
}

fn any_mode() -> impl Strategy<Value = Maintenance> {
    prop_oneof![Just(Mode::Normal), Just(Mode::ReadOnly)].prop_map(|mode| Maintenance {
        mode,
        reason: String::new(),
    })
}

/// Deduplicates by key, as the loader and the store's unique keys guarantee.
fn unique<T: Resource>(items: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::BTreeMap::new();
    for item in items {
        seen.entry(item.key()).or_insert(item);
    }
    seen.into_values().collect()
}

fn stored_all<T: Resource>(items: Vec<(T, Owner)>) -> Vec<Stored<T>> {
    let mut seen = std::collections::BTreeMap::new();
    for (item, owner) in items {
        seen.entry(item.key()).or_insert((item, owner));
    }
    seen.into_values()
        .enumerate()
        .map(|(i, (value, owner))| Stored {
            id: i as i64 + 1,
            owner,
            value,
        })
        .collect()
}

prop_compose! {
    fn any_desired()(
        rules in prop::collection::vec(any_rule(), 0..6),
        clients in prop::collection::vec(any_client(), 0..4),
        windows in prop::collection::vec(any_window().prop_map(|w| Window { active: true, ..w }), 0..3),
        flags in prop::collection::vec(any_flag(), 0..3),
        maintenance in prop::option::of(any_mode()),
        notifications in prop::option::of(any_sinks()),
    ) -> DesiredState {
        DesiredState { rules: unique(rules), clients: unique(clients), windows: unique(windows), flags: unique(flags), maintenance, profile: None, notifications }
    }
}

prop_compose! {
    fn any_actual()(
        rules in prop::collection::vec((any_rule(), owner()), 0..6),
        clients in prop::collection::vec((any_client(), owner()), 0..4),
        windows in prop::collection::vec((any_window(), owner()), 0..3),
        flags in prop::collection::vec((any_flag(), owner()), 0..3),
        maintenance in any_mode(),
        notifications in prop::option::of(any_sinks()),
        holds in prop::collection::vec((0..4u8, prop::option::of(-10..10i64)), 0..3),
    ) -> Actual {
        let overrides = holds.into_iter().enumerate().map(|(i, (k, expires))| {
            let (kind, key) = match k {
                0 => (Kind::RateLimitRule, "ip:10.0.0.1".to_owned()),
                1 => (Kind::Client, "c1".to_owned()),
                2 => (Kind::MaintenanceMode, "mode".to_owned()),
                _ => (Kind::FeatureFlag, "f0".to_owned()),
            };
            hold(i as i64 + 1, kind, &key, expires)
        }).collect();
        Actual {
            rules: stored_all(rules),
            clients: stored_all(clients),
            windows: stored_all(windows),
            flags: stored_all(flags),
            maintenance: Some(Stored { id: 1, owner: Owner::Git, value: maintenance }),
            profile: None,
            notifications: notifications.map(|value| Stored { id: 1, owner: Owner::Git, value }),
            overrides,
        }
    }
}

/// Whether `key` of `kind` is held at `now()`.
fn held(actual: &Actual, kind: Kind, key: &str) -> bool {
    actual
        .overrides
        .iter()
        .any(|o| o.kind == kind && o.key == key && o.is_active(now()))
}

/// Every desired resource that is not held is stored, git-owned, with git's value.
fn converged<T: Resource>(desired: &[T], after: &[Stored<T>], before: &Actual) -> Result<(), TestCaseError> {
    for want in desired {
        if held(before, T::KIND, &want.key()) {
            continue;
        }
        let got = after.iter().find(|s| s.value.key() == want.key());
        prop_assert!(
            got.is_some_and(|g| g.value == *want && g.owner == Owner::Git),
            "{want:?} not converged: {got:?}"
        );
    }
    Ok(())
}

/// Git-owned resources git no longer declares are gone or inactive, unless held.
fn removed<T: Removable>(desired: &[T], after: &[Stored<T>], before: &Actual) -> Result<(), TestCaseError> {
    for s in after
        .iter()
        .filter(|s| s.owner == Owner::Git && s.value.is_active())
    {
        let key = s.value.key();
        prop_assert!(
            desired.iter().any(|d| d.key() == key) || held(before, T::KIND, &key),
            "{key} left active"
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn applying_the_plan_converges_and_replanning_is_empty(desired in any_desired(), actual in any_actual()) {
        let first = plan_of(&desired, &actual);
        let after = apply(&actual, &first);
        converged(&desired.rules, &after.rules, &actual)?;
        converged(&desired.clients, &after.clients, &actual)?;
        converged(&desired.windows, &after.windows, &actual)?;
        converged(&desired.flags, &after.flags, &actual)?;
        removed(&desired.rules, &after.rules, &actual)?;
        removed(&desired.clients, &after.clients, &actual)?;
        removed(&desired.windows, &after.windows, &actual)?;
        removed(&desired.flags, &after.flags, &actual)?;
        if let Some(m) = &desired.maintenance && !held(&actual, Kind::MaintenanceMode, "mode") {
            prop_assert_eq!(&after.maintenance.as_ref().unwrap().value, m);
        }
        let second = plan_of(&desired, &after);
        prop_assert!(!second.has_changes(), "second plan has changes: {:?}", second.changes());
    }

    #[test]
    fn held_resources_are_never_written(desired in any_desired(), actual in any_actual()) {
        let p = plan_of(&desired, &actual);
        for c in p.changes() {
            if held(&actual, c.kind, &c.key) {
                prop_assert_eq!(c.action, Action::Held);
            }
        }
    }

    #[test]
    fn planning_is_deterministic(desired in any_desired(), actual in any_actual()) {
        prop_assert_eq!(plan_of(&desired, &actual), plan_of(&desired, &actual));
    }
}

#[test]
fn markdown_colours_old_and_new_values_of_an_update() {
    let desired = DesiredState {
        rules: vec![rule(Scope::Ip, "10.0.0.1", 9)],
        ..Default::default()
    };
    let actual = Actual {
        rules: vec![git(1, rule(Scope::Ip, "10.0.0.1", 5))],
        ..Default::default()
    };
    let doc = render::PlanDocument::new(&plan_of(&desired, &actual), String::new());
    let md = render::markdown(&doc);
    // In a ```diff block only lines that start with - or + are coloured.
    assert!(
        md.contains("\n-     max_requests: 5\n+     max_requests: 9\n"),
        "{md}"
    );
}

#[test]
fn markdown_shows_what_people_wrote_as_inert_text() {
    let desired = DesiredState {
        rules: vec![rule(Scope::Global, "*", 9)],
        ..Default::default()
    };
    let reason =
        "</details><img src=x onerror=alert(1)> [click](https://e.example) @everyone **now** ``` `x`";
    let actual = Actual {
        rules: vec![git(1, rule(Scope::Global, "*", 5))],
        overrides: vec![Override {
            actor: "tyr_<b>".into(),
            reason: reason.into(),
            ..hold(1, Kind::RateLimitRule, "global:*", None)
        }],
        ..Default::default()
    };
    let doc = render::PlanDocument::new(&plan_of(&desired, &actual), String::new());
    let md = render::markdown(&doc);
    let line = md
        .lines()
        .find(|l| l.starts_with("> - `rate_limit_rule`"))
        .unwrap_or_else(|| panic!("{md}"));
    // The key and the hold are each one code span: a fence longer than any backtick run inside.
    assert_eq!(
        line,
        format!(
            "> - `rate_limit_rule` `global:*`: ````held by override #1 (tyr_<b>, {reason:?}, until cleared)````"
        )
    );
    // Outside code (the diff blocks, whose lines all begin with a sigil, so no text in them can
    // close the fence, and the spans), nothing the reason holds appears.
    let mut in_block = false;
    let prose: Vec<&str> = md
        .lines()
        .filter(|l| {
            let fence = l.starts_with("```");
            in_block ^= fence;
            !in_block && !fence
        })
        .collect();
    assert!(
        md.lines()
            .filter(|l| l.starts_with("```"))
            .all(|l| l == "```diff" || l == "```")
    );
    let outside: String = prose.join("\n").split("````").step_by(2).collect();
    for markup in ["<img", "</details><img", "](https", "@everyone", "**now**"] {
        assert!(!outside.contains(markup), "{markup} outside code: {md}");
    }
}

#[test]
fn markdown_fits_a_pull_request_comment_whatever_the_plan() {
    let desired = DesiredState {
        rules: (0..3000)
            .map(|i| {
                rule(
                    Scope::Ip,
                    &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                    5,
                )
            })
            .collect(),
        ..Default::default()
    };
    let doc = render::PlanDocument::new(&plan_of(&desired, &Actual::default()), String::new());
    let md = render::markdown(&doc);
    assert!(md.len() <= render::MARKDOWN_LIMIT, "{} characters", md.len());
    assert!(
        md.starts_with("### valhalla-ops plan\n\n| create |"),
        "the summary table is always there"
    );
    assert!(md.contains("| 3000 | 0 | 0 | 0 | 0 | 0 |"), "{}", &md[..300]);
    let note = md
        .lines()
        .find(|l| l.contains("changes are not shown"))
        .expect("a note on what is left out");
    let left_out: usize = note
        .trim_start_matches("> ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let shown = md.lines().filter(|l| l.starts_with("+ create")).count();
    assert_eq!(shown + left_out, 3000, "{note}");
    assert!(shown > 100, "as much as fits is shown: {shown}");
    assert_eq!(md.matches("```").count() % 2, 0, "every code block is closed");
}
