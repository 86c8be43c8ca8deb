//! The store story: one scenario through the `Store` trait and the reconciler, on every backend.

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use valhalla_ops::desired::{DesiredState, Loader};
use valhalla_ops::domain::{Mode, Owner};
use valhalla_ops::model::{Kind, NewOverride, Resource};
use valhalla_ops::plan::{Action, PlanOptions};
use valhalla_ops::reconcile::{Read, ReconcileError, Refusal, Request, reconcile, reconcile_read};
use valhalla_ops::store::Db;

use crate::support::{all_backends, exec};

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn state(text: &str) -> DesiredState {
    let mut loader = Loader::new(now());
    loader.add_file(Path::new("story.yaml"), text);
    loader.finish().expect("valid story state").state
}

fn v1() -> String {
    let mut rules = String::new();
    for i in 0..8 {
        rules.push_str(&format!(
            "  - scope: user\n    key: user-{i}\n    max_requests: {}\n",
            10 + i
        ));
    }
    format!(
        "rate_limits:\n  - scope: ip\n    key: 203.0.113.0/24\n    max_requests: 600\n    shadow: true\n    description: Office egress\n  - scope: api_key\n    key: bot\n    window_seconds: 3600\n    max_requests: 0\n    enabled: false\n{rules}\
clients:\n  - name: bot\n    type: script\n    role: operator\n    key_sha256: {HASH_A}\n  - name: tyr\n    type: tyr\n    role: admin\n    key_sha256: {HASH_B}\n    description: Governance\n\
maintenance:\n  mode: read_only\n  reason: migration week\n  windows:\n    - name: upgrade\n      starts_at: 2026-12-01T02:00:00.123456Z\n      ends_at: 2026-12-01T04:00:00+01:00\n      mode: read_only\n      description: Postgres upgrade\n\
feature_flags:\n  - name: new-billing\n    enabled: true\n    description: \"tab\\there\\nline two, back\\\\slash, é\"\n  - name: old-billing\n\
deployment_profile: production\n"
    )
}

fn request(actor: &str) -> Request {
    Request {
        actor: actor.into(),
        source: "test".into(),
        ..Request::default()
    }
}

fn values<T: Resource>(rows: &[valhalla_ops::model::Stored<T>]) -> Vec<(String, T, Owner)> {
    let mut v: Vec<_> = rows
        .iter()
        .map(|s| (s.value.key(), s.value.clone(), s.owner))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn git_values<T: Resource>(items: &[T]) -> Vec<(String, T, Owner)> {
    let mut v: Vec<_> = items.iter().map(|i| (i.key(), i.clone(), Owner::Git)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

async fn story(db: Db) {
    let backend = db.backend();
    // A fresh store: no resources, the steady mode row exists.
    let empty = db.snapshot().await.unwrap();
    assert!(
        empty.rules.is_empty() && empty.clients.is_empty() && empty.overrides.is_empty(),
        "{backend}"
    );
    assert_eq!(empty.maintenance.as_ref().unwrap().value.mode, Mode::Normal);

    // A dry run writes nothing.
    let desired = state(&v1());
    // Text that COPY must escape, to prove the round trip below covers it.
    assert!(
        desired
            .flags
            .iter()
            .any(|f| ['\t', '\n', '\\', 'é'].iter().all(|c| f.description.contains(*c)))
    );
    let dry = reconcile(
        &db,
        &desired,
        &Request {
            dry_run: true,
            ..request("t")
        },
        now(),
    )
    .await
    .unwrap();
    assert_eq!((dry.plan.summary().create, dry.run_id), (16, None), "{backend}");
    assert_eq!(db.snapshot().await.unwrap(), empty, "{backend}: dry run wrote");
    assert!(db.runs(10).await.unwrap().is_empty());

    // Apply: every kind round-trips exactly, microseconds included, owned by git.
    let first = reconcile(&db, &desired, &request("alice"), now()).await.unwrap();
    assert_eq!(first.plan.summary().create, 16, "{backend}");
    // The mode row already existed, so it is an update, not a create.
    assert_eq!(first.plan.summary().update, 1, "{backend}");
    let snap = db.snapshot().await.unwrap();
    assert_eq!(values(&snap.rules), git_values(&desired.rules), "{backend}");
    assert_eq!(values(&snap.clients), git_values(&desired.clients), "{backend}");
    assert_eq!(values(&snap.windows), git_values(&desired.windows), "{backend}");
    assert_eq!(values(&snap.flags), git_values(&desired.flags), "{backend}");
    assert_eq!(
        snap.maintenance.as_ref().unwrap().value,
        *desired.maintenance.as_ref().unwrap()
    );
    assert_eq!(
        snap.profile.as_ref().unwrap().value,
        *desired.profile.as_ref().unwrap()
    );

    // The run and one audit row per change are recorded, with the actor; no full key hash.
    let runs = db.runs(10).await.unwrap();
    assert_eq!(
        (
            runs.len(),
            runs[0].created,
            runs[0].updated,
            runs[0].actor.as_str()
        ),
        (1, 16, 1, "alice")
    );
    let audit = db.audit(100).await.unwrap();
    assert_eq!(audit.len(), 17, "{backend}");
    assert!(
        audit
            .iter()
            .all(|a| a.run_id == Some(runs[0].id) && a.actor == "alice")
    );
    assert!(
        audit
            .iter()
            .all(|a| !a.after.as_deref().unwrap_or("").contains(HASH_A)),
        "full hash in audit"
    );

    // Applying the same state again changes nothing.
    let again = reconcile(&db, &desired, &request("alice"), now()).await.unwrap();
    assert!(!again.plan.has_changes(), "{backend}: {:?}", again.plan.changes());
    assert_eq!(db.audit(100).await.unwrap().len(), 17);

    // v2: update a rule, remove a client, a flag and a window (renamed), change the mode.
    let v2 = v1()
        .replace("max_requests: 600", "max_requests: 1200")
        .replace(&format!("  - name: bot\n    type: script\n    role: operator\n    key_sha256: {HASH_A}\n"), "")
        .replace("  - scope: api_key\n    key: bot\n    window_seconds: 3600\n    max_requests: 0\n    enabled: false\n", "")
        .replace("  - name: old-billing\n", "")
        .replace("name: upgrade", "name: upgrade-v2")
        .replace("mode: read_only\n  reason: migration week", "mode: normal\n  reason: \"\"");
    let desired2 = state(&v2);
    let second = reconcile(&db, &desired2, &request("bob"), now()).await.unwrap();
    let mut got: Vec<(Kind, String, Action)> = second
        .plan
        .changes()
        .into_iter()
        .map(|c| (c.kind, c.key, c.action))
        .collect();
    got.sort();
    let mut want = vec![
        (Kind::RateLimitRule, "api_key:bot".to_owned(), Action::Delete),
        (Kind::RateLimitRule, "ip:203.0.113.0/24".into(), Action::Update),
        (Kind::Client, "bot".into(), Action::Deactivate),
        (Kind::MaintenanceWindow, "upgrade".into(), Action::Deactivate),
        (Kind::MaintenanceWindow, "upgrade-v2".into(), Action::Create),
        (Kind::FeatureFlag, "old-billing".into(), Action::Delete),
        (Kind::MaintenanceMode, "mode".into(), Action::Update),
    ];
    want.sort();
    assert_eq!(got, want, "{backend}");
    let snap = db.snapshot().await.unwrap();
    let bot = snap
        .clients
        .iter()
        .find(|c| c.value.name.as_str() == "bot")
        .unwrap();
    assert!(!bot.value.active, "soft-deleted clients keep their row");
    assert_eq!(snap.windows.len(), 2, "soft-deleted windows keep their row");
    assert_eq!(snap.flags.len(), 1);
    assert!(
        !reconcile(&db, &desired2, &request("bob"), now())
            .await
            .unwrap()
            .plan
            .has_changes()
    );

    // A client renamed with the same key: the old one is deactivated before the new one is
    // created, so the unique key of active hashes never trips.
    let renamed = v2.replace("name: tyr", "name: tyr-v2");
    let third = reconcile(&db, &state(&renamed), &request("bob"), now())
        .await
        .unwrap();
    assert_eq!(third.plan.summary().create, 1, "{backend}");
    assert_eq!(third.plan.summary().deactivate, 1, "{backend}");

    // An override holds its resource: the reconciler shows it and leaves it alone.
    exec(
        &db,
        "UPDATE maintenance_state SET mode = 'read_only', reason = 'freeze'",
    )
    .await;
    let freeze = db
        .add_override(
            NewOverride {
                kind: Kind::MaintenanceMode,
                key: "mode".into(),
                actor: "tyr".into(),
                reason: "incident 42".into(),
                expires_at: Some(now() + Duration::minutes(30)),
                group_id: None,
                git_value: None,
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(db.open_overrides().await.unwrap(), std::slice::from_ref(&freeze));
    let desired3 = state(&renamed);
    let held = reconcile(&db, &desired3, &request("bob"), now()).await.unwrap();
    let change = held
        .plan
        .changes()
        .into_iter()
        .find(|c| c.kind == Kind::MaintenanceMode)
        .unwrap();
    assert_eq!(
        (change.action, change.hold.unwrap().actor),
        (Action::Held, "tyr".into())
    );
    assert_eq!(
        db.snapshot().await.unwrap().maintenance.unwrap().value.mode,
        Mode::ReadOnly,
        "{backend}"
    );

    // Once it expires, git's value returns.
    let later = now() + Duration::minutes(31);
    let released = reconcile(&db, &desired3, &request("bob"), later).await.unwrap();
    assert_eq!(released.plan.summary().update, 1, "{backend}");
    assert_eq!(
        db.snapshot().await.unwrap().maintenance.unwrap().value.mode,
        Mode::Normal
    );

    // Clearing works too (the freeze has expired by now): a cleared override is no longer open.
    exec(&db, "UPDATE feature_flags SET enabled = FALSE").await;
    let flag_hold = NewOverride {
        kind: Kind::FeatureFlag,
        key: "new-billing".into(),
        actor: "tyr".into(),
        reason: "kill switch".into(),
        expires_at: None,
        group_id: Some("g1".into()),
        git_value: None,
    };
    let flag_hold = db.add_override(flag_hold, later).await.unwrap();
    let held = reconcile(&db, &desired3, &request("bob"), later).await.unwrap();
    assert_eq!(held.plan.summary().held, 1, "{backend}");
    assert!(!held.plan.has_changes(), "{backend}");
    use valhalla_ops::store::Lifting;
    let lift = valhalla_ops::store::Lift {
        actor: "carol",
        source: "cli",
        reason: None,
        now: later,
    };
    assert_eq!(
        db.clear_overrides(Lifting::One(flag_hold.id), &lift)
            .await
            .unwrap(),
        1
    );
    assert!(
        db.clear_overrides(Lifting::One(flag_hold.id), &lift)
            .await
            .is_err(),
        "cleared twice"
    );
    // The clear is audited: who lifted which override.
    let audit = db.audit(1).await.unwrap();
    assert_eq!(
        (
            audit[0].action.as_str(),
            audit[0].actor.as_str(),
            audit[0].source.as_str(),
            audit[0].key.as_str()
        ),
        ("clear_override", "carol", "cli", "new-billing"),
        "{backend}"
    );
    let healed = reconcile(&db, &desired3, &request("bob"), later).await.unwrap();
    assert_eq!(healed.plan.summary().update, 1, "{backend}: drift healed");
    assert!(
        db.open_overrides()
            .await
            .unwrap()
            .iter()
            .all(|o| o.id != flag_hold.id)
    );

    // Api-owned resources are reported, and removed only with prune.
    exec(
        &db,
        "INSERT INTO feature_flags (name, enabled, owner) VALUES ('api-flag', TRUE, 'api')",
    )
    .await;
    let report = reconcile(&db, &desired3, &request("bob"), now()).await.unwrap();
    assert_eq!(
        (report.plan.summary().unmanaged, report.plan.has_changes()),
        (1, false),
        "{backend}"
    );
    let pruning = Request {
        options: PlanOptions { prune: true },
        ..request("bob")
    };
    let pruned = reconcile(&db, &desired3, &pruning, now()).await.unwrap();
    assert_eq!(pruned.plan.summary().delete, 1, "{backend}");

    // The mass-removal guard refuses, and the store is untouched.
    let before = db.snapshot().await.unwrap();
    let gutted = state(
        &renamed
            .replace("  - scope: user\n", "  - scope: user\n    enabled: true\n")
            .replace(
                &(0..8)
                    .map(|i| format!("    key: user-{i}\n    max_requests: {}\n", 10 + i))
                    .collect::<Vec<_>>()
                    .join("  - scope: user\n    enabled: true\n"),
                "    key: user-0\n    max_requests: 10\n",
            ),
    );
    assert_eq!(
        gutted.rules.len(),
        2,
        "{backend}: the fixture removes 7 of 9 rules"
    );
    match reconcile(&db, &gutted, &request("bob"), now()).await {
        Err(ReconcileError::Refused(Refusal::MassRemoval(m))) => {
            assert_eq!((m[0].removing, m[0].total), (7, 9))
        }
        other => panic!("{backend}: expected a refusal, got {other:?}"),
    }
    assert_eq!(
        db.snapshot().await.unwrap(),
        before,
        "{backend}: a refused plan wrote"
    );
    let allowed = Request {
        allow_mass_removal: true,
        ..request("bob")
    };
    assert_eq!(
        reconcile(&db, &gutted, &allowed, now())
            .await
            .unwrap()
            .plan
            .summary()
            .delete,
        7
    );
}

#[tokio::test]
async fn store_story_on_every_backend() {
    for test_db in all_backends() {
        let db = Db::open(&test_db.url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", test_db.backend));
        story(db).await;
    }
}

/// An apply plans on a snapshot read while the files loaded, before it takes the lock. If the
/// store is still at that snapshot's revision under the lock, that plan is written; if anyone
/// wrote in between, that plan is dropped and the store read again under the lock, so what was
/// written meanwhile is planned against, not overwritten blind.
#[tokio::test]
async fn an_apply_planned_before_the_lock_plans_again_if_the_store_moved() {
    let read = |db: &Db| {
        let db = db.clone();
        async move {
            let (actual, revision) = db.snapshot_at_revision().await.unwrap();
            let store_fingerprint = actual.fingerprint();
            Read {
                actual,
                store_fingerprint,
                revision,
            }
        }
    };
    let v2 = v1().replace(
        "key: user-0\n    max_requests: 10",
        "key: user-0\n    max_requests: 99",
    );
    assert_ne!(v2, v1());
    for test_db in all_backends() {
        let b = test_db.backend;
        let db = Db::open(&test_db.url).await.unwrap();
        reconcile(&db, &state(&v1()), &request("first"), now())
            .await
            .unwrap();

        // Nobody writes in between: the plan made before the lock is applied.
        let before = read(&db).await;
        let revision = before.revision;
        let applied = reconcile_read(&db, &state(&v2), before, &request("git"), now())
            .await
            .unwrap();
        assert_eq!(applied.plan.summary().update, 1, "{b}");
        assert_eq!(applied.snapshot.map(|s| s.read_at), Some(revision), "{b}");
        assert!(applied.snapshot.unwrap().written_at > revision, "{b}");

        // Someone applies v1 again after the snapshot was read: against that snapshot, v2 has
        // nothing to change; against the store, user-0's rule must be changed back.
        let stale = read(&db).await;
        reconcile(&db, &state(&v1()), &request("someone"), now())
            .await
            .unwrap();
        let again = reconcile_read(&db, &state(&v2), stale, &request("git"), now())
            .await
            .unwrap();
        assert_eq!(again.plan.summary().update, 1, "{b}: {:?}", again.plan.summary());
        assert_eq!(
            values(&db.snapshot().await.unwrap().rules),
            git_values(&state(&v2).rules),
            "{b}"
        );
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    for test_db in all_backends() {
        let db = Db::open(&test_db.url).await.unwrap();
        assert!(db.migrate().await.unwrap().is_empty(), "{}", test_db.backend);
        let other = crate::support::sqlite();
        let fresh = Db::connect(&other.url, Default::default()).await.unwrap();
        assert_eq!(
            fresh.migrate().await.unwrap(),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
        );
    }
}

/// Enough rows to take Postgres' COPY path and several SQLite statement chunks, with text that
/// COPY must escape; then a bulk update and a bulk removal.
#[tokio::test]
async fn bulk_writes_round_trip_on_every_backend() {
    use valhalla_ops::domain::{OnOutage, RuleKey, Scope, WindowSeconds};
    use valhalla_ops::model::RateLimitRule;
    let rules = |max: u32| -> DesiredState {
        let rules = (0..20_500)
            .map(|i| RateLimitRule {
                scope: Scope::User,
                key: RuleKey::parse(Scope::User, &format!("user-{i:05}")).unwrap(),
                window_seconds: WindowSeconds::new(60).unwrap(),
                max_requests: valhalla_ops::domain::MaxRequests::new((max + i % 7).into()).unwrap(),
                enabled: i % 3 != 0,
                shadow: i % 5 == 0,
                on_outage: OnOutage::ALL[(i % 3) as usize],
                description: format!("tab\there\nline two \\ back\\slash \"{i}\" é"),
            })
            .collect();
        DesiredState {
            rules,
            ..DesiredState::default()
        }
    };
    for test_db in all_backends() {
        let b = test_db.backend;
        let db = Db::open(&test_db.url).await.unwrap();
        let first = rules(10);
        let created = reconcile(&db, &first, &request("bulk"), now()).await.unwrap();
        assert_eq!(created.plan.summary().create, 20_500, "{b}");
        assert_eq!(
            values(&db.snapshot().await.unwrap().rules),
            git_values(&first.rules),
            "{b}"
        );
        assert_eq!(db.audit(30_000).await.unwrap().len(), 20_500, "{b}");

        let second = rules(20);
        let updated = reconcile(&db, &second, &request("bulk"), now()).await.unwrap();
        assert_eq!(updated.plan.summary().update, 20_500, "{b}");
        assert_eq!(
            values(&db.snapshot().await.unwrap().rules),
            git_values(&second.rules),
            "{b}"
        );

        let allowed = Request {
            allow_mass_removal: true,
            ..request("bulk")
        };
        let removed = reconcile(&db, &DesiredState::default(), &allowed, now())
            .await
            .unwrap();
        assert_eq!(removed.plan.summary().delete, 20_500, "{b}");
        assert!(db.snapshot().await.unwrap().rules.is_empty(), "{b}");
    }
}

/// The migrations of `backend` up to `last`, read from the repository as the binary embeds them.
fn migrations_up_to(backend: &str, last: i64) -> sqlx::migrate::Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let migrations = files
        .iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_str().unwrap();
            let version: i64 = name[..4].parse().unwrap();
            let sql = std::fs::read_to_string(path).unwrap();
            (version, name.to_owned(), sql)
        })
        .filter(|(version, _, _)| *version <= last)
        .map(|(version, name, sql)| {
            sqlx::migrate::Migration::new(
                version,
                name.into(),
                sqlx::migrate::MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(sql)),
                false,
            )
        })
        .collect();
    sqlx::migrate::Migrator::with_migrations(migrations)
}

/// Migration 9 (gateway clients) rebuilds SQLite's client table: a database that version 8 left,
/// with clients, keeps their ids (a deleted one's id is not given again), the key-prefix trigger,
/// the change log's triggers, and takes a gateway client.
#[tokio::test]
async fn clients_survive_the_migration_that_brings_gateways() {
    let hash = |c: char| c.to_string().repeat(64);
    let seed = format!(
        "INSERT INTO api_clients (name, client_type, role, key_sha256, key_prefix) VALUES \
         ('a', 'script', 'reader', '{}', 'vk_a'), ('b', 'tyr', 'admin', '{}', NULL), ('c', 'weweb', 'reader', '{}', NULL); \
         DELETE FROM api_clients WHERE name = 'c'",
        hash('a'),
        hash('b'),
        hash('c')
    );
    for test_db in all_backends() {
        let b = test_db.backend;
        if b == "sqlite" {
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", test_db.url))
                .await
                .unwrap();
            migrations_up_to("sqlite", 8).run(&pool).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(seed.clone()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&test_db.url).await.unwrap();
            migrations_up_to("postgres", 8).run(&pool).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(seed.clone()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let db = Db::open(&test_db.url)
            .await
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        exec(
            &db,
            &format!(
                "UPDATE api_clients SET key_sha256 = '{}' WHERE name = 'a'",
                hash('d')
            ),
        )
        .await;
        let gateway = format!(
            "INSERT INTO api_clients (name, client_type, role, key_sha256) VALUES ('edge', 'gateway', 'reader', '{}')",
            hash('e')
        );
        exec(&db, &gateway).await;
        let all = valhalla_ops::store::ClientFilter {
            active: None,
            client_type: None,
            page: valhalla_ops::store::Page { limit: 10, offset: 0 },
        };
        let clients = db.clients(&all).await.unwrap();
        let rows: Vec<(i64, &str, &str, Option<&str>)> = clients
            .iter()
            .map(|c| {
                (
                    c.id,
                    c.name.as_str(),
                    c.client_type.as_str(),
                    c.key_prefix.as_deref(),
                )
            })
            .collect();
        // The prefix of the replaced key is forgotten, as before the rebuild.
        assert_eq!(
            rows,
            [
                (1, "a", "script", None),
                (2, "b", "tyr", None),
                (4, "edge", "gateway", None)
            ],
            "{b}"
        );
        let logged = "SELECT COUNT(*) FROM store_changes WHERE table_name = 'api_clients' AND row_id = 4";
        let logged: i64 = if b == "sqlite" {
            let pool = sqlx::SqlitePool::connect(&test_db.url).await.unwrap();
            sqlx::query_scalar(logged).fetch_one(&pool).await.unwrap()
        } else {
            let pool = sqlx::PgPool::connect(&test_db.url).await.unwrap();
            sqlx::query_scalar(logged).fetch_one(&pool).await.unwrap()
        };
        assert_eq!(logged, 1, "{b}: the change log still hears of clients");
    }
}

#[tokio::test]
async fn the_follower_hears_other_handles_commits_and_not_rate_limit_snapshots() {
    use valhalla_ops::domain::{CounterStore, Scope};
    use valhalla_ops::store::{Usage, UsageBatch};
    for db in all_backends() {
        let here = Db::open(&db.url).await.unwrap();
        // Another process, as far as `here` can tell: its own pool and change count.
        let there = Db::open(&db.url).await.unwrap();
        let following = tokio::spawn({
            let here = here.clone();
            async move { here.follow_changes().await }
        });
        // Past the listener's first bump (Postgres) and the first poll (SQLite).
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let before = here.changes().current();
        let batch = UsageBatch {
            usage: vec![Usage {
                scope: Scope::User,
                rule_key: "user-1".into(),
                key: "user-1".into(),
                shadow: false,
                counter: CounterStore::Memory,
                window_seconds: 60,
                max_requests: 10,
                current_count: 3,
                window_started_at: Utc::now(),
            }],
            now: Utc::now(),
            keep_after: Utc::now() - Duration::hours(1),
        };
        there.record_usage("elsewhere", &batch).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        assert_eq!(
            here.changes().current(),
            before,
            "{}: a snapshot is not a change",
            db.backend
        );
        crate::support::app::apply(
            &there,
            "version: 1\nrate_limits:\n  - scope: global\n    max_requests: 5\n",
        )
        .await;
        let start = std::time::Instant::now();
        while here.changes().current() == before {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "{}: the commit was not heard",
                db.backend
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        following.abort();
    }
}

/// Clearing overrides while other writers commit never fails: the clear reads the mode before
/// it writes, and on SQLite a transaction that read first cannot take the write lock once
/// another has committed (SQLITE_BUSY_SNAPSHOT, at once, whatever the busy timeout); it must
/// take the lock first. Schemathesis met it as a 500 on `DELETE /system/overrides/{id}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_overrides_while_others_write_never_fails() {
    use valhalla_ops::store::{Lift, Lifting};
    for test_db in all_backends() {
        let db = Db::open(&test_db.url).await.unwrap();
        let hold = |n: usize| NewOverride {
            kind: Kind::FeatureFlag,
            key: format!("f{n}"),
            actor: "tyr".into(),
            reason: "test".into(),
            expires_at: None,
            group_id: None,
            git_value: None,
        };
        let mut ids = Vec::new();
        for n in 0..100 {
            ids.push(db.add_override(hold(n), Utc::now()).await.unwrap().id);
        }
        let writer = {
            let db = db.clone();
            tokio::spawn(async move {
                for n in 100..300 {
                    db.add_override(hold(n), Utc::now()).await.unwrap();
                }
            })
        };
        let lift = Lift {
            actor: "tyr",
            source: "api",
            reason: None,
            now: Utc::now(),
        };
        for id in ids {
            db.clear_overrides(Lifting::One(id), &lift)
                .await
                .unwrap_or_else(|e| panic!("{}: clearing #{id}: {e}", test_db.backend));
        }
        writer.await.unwrap();
    }
}

/// Replicas that find the shared counters back at the same moment close the outage: each once
/// counted the other's last look, still "down" until its own transaction committed, so neither
/// closed it, and a new outage a moment later was told as the old one going on (CI saw the
/// second of two outages never told on Postgres).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_see_the_counters_back_at_once_close_the_outage() {
    for test_db in all_backends() {
        let db = Db::open(&test_db.url).await.unwrap();
        let b = test_db.backend;
        let look = |replica: &'static str, down: bool| {
            let db = db.clone();
            tokio::spawn(async move {
                let now = Utc::now();
                db.look_at_counters(replica, down, now, now).await
            })
        };
        let both = |down: bool| async move {
            let (a, b) = tokio::join!(look("replica-a", down), look("replica-b", down));
            a.unwrap().unwrap();
            b.unwrap().unwrap();
        };
        for outage in 1..=20 {
            both(true).await;
            both(false).await;
            let told: Vec<String> = db
                .events(1000)
                .await
                .unwrap()
                .into_iter()
                .rev()
                .map(|e| e.event.id.rsplit_once(':').unwrap().0.to_owned())
                .collect();
            let expected: Vec<&str> = ["counters-unreachable", "counters-reachable"].repeat(outage);
            assert_eq!(told, expected, "{b}: outage {outage}");
        }
    }
}
