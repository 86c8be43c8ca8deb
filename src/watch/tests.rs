//! Followed passes against whole ones: random edits of the files, overrides made over the API,
//! edits by hand in the database, time passing and whole passes, interleaved; every pass must
//! apply exactly the plan a whole pass would have made, on SQLite and on Postgres.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;

use super::pass::{Passes, Trigger};
use super::{WatchMetrics, WatchOptions};
use crate::desired::{DesiredState, StateDir, load_dir};
use crate::domain::{KeySha256, Scope};
use crate::plan::{Plan, PlanOptions, plan};
use crate::store::testing::{drop_postgres, postgres, runtime, sqlite};
use crate::store::{ApiChange, Backend, Db};

const RULES: usize = 16;
const CLIENTS: usize = 3;
const FILES: usize = 4;

#[derive(Debug, Clone)]
enum Step {
    /// A rule's limit edited in its file.
    Edit { rule: usize, max: u32 },
    /// A rule moved to another file.
    Move { rule: usize, file: usize },
    /// A rule taken out of the files, or put back.
    Toggle { rule: usize },
    /// A client (and the rule naming it) taken out, or put back.
    ToggleClient { client: usize },
    /// A rule changed over the API: an override for this many minutes.
    Override { rule: usize, minutes: i64 },
    /// A rule's limit changed by hand in the database.
    ByHand { rule: usize },
    /// A rule git does not declare inserted by hand, owned by the API.
    HandInsert { n: u32 },
    /// Time passes (overrides expire).
    Tick { minutes: i64 },
    /// A whole pass (the interval's).
    Whole,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..RULES, 1..500u32).prop_map(|(rule, max)| Step::Edit { rule, max }),
        2 => (0..RULES, 0..FILES).prop_map(|(rule, file)| Step::Move { rule, file }),
        2 => (0..RULES).prop_map(|rule| Step::Toggle { rule }),
        1 => (0..CLIENTS).prop_map(|client| Step::ToggleClient { client }),
        2 => (0..RULES, 1..30i64).prop_map(|(rule, minutes)| Step::Override { rule, minutes }),
        2 => (0..RULES).prop_map(|rule| Step::ByHand { rule }),
        1 => (0..1000u32).prop_map(|n| Step::HandInsert { n }),
        2 => (1..40i64).prop_map(|minutes| Step::Tick { minutes }),
        1 => Just(Step::Whole),
    ]
}

/// The files as a model: where each rule is and its limit, which clients are declared.
struct Model {
    file: [usize; RULES],
    max: [u32; RULES],
    present: [bool; RULES],
    clients: [bool; CLIENTS],
}

impl Model {
    fn new() -> Model {
        Model {
            file: std::array::from_fn(|i| i % FILES),
            max: std::array::from_fn(|i| 10 + i as u32),
            present: [true; RULES],
            clients: [true; CLIENTS],
        }
    }

    /// Rule `i`: the last ones name clients, the others users.
    fn rule(&self, i: usize) -> (Scope, String) {
        if i >= RULES - CLIENTS {
            (Scope::ApiKey, format!("client-{}", i - (RULES - CLIENTS)))
        } else {
            (Scope::User, format!("user-{i}"))
        }
    }

    fn declared(&self, i: usize) -> bool {
        self.present[i] && (i < RULES - CLIENTS || self.clients[i - (RULES - CLIENTS)])
    }

    fn write(&self, dir: &std::path::Path) {
        for f in 0..FILES {
            let mut text = String::from("version: 1\nrate_limits:\n");
            let mut any = false;
            for i in (0..RULES).filter(|i| self.file[*i] == f && self.declared(*i)) {
                let (scope, key) = self.rule(i);
                text.push_str(&format!(
                    "  - scope: {scope}\n    key: \"{key}\"\n    window_seconds: 60\n    max_requests: {}\n",
                    self.max[i]
                ));
                any = true;
            }
            if !any {
                text = String::from("version: 1\nrate_limits: []\n");
            }
            std::fs::write(dir.join(format!("rules-{f}.yaml")), text).unwrap();
        }
        let mut text = String::from("version: 1\nclients:\n");
        for c in (0..CLIENTS).filter(|c| self.clients[*c]) {
            text.push_str(&format!(
                "  - name: client-{c}\n    type: integration\n    role: reader\n    key_sha256: {}\n",
                KeySha256::of_key(&format!("key-{c}")).as_str()
            ));
        }
        text.push_str("maintenance:\n  mode: normal\n");
        std::fs::write(dir.join("clients.yaml"), text).unwrap();
    }
}

/// The files in `dir` and the plan a whole pass would make of them against the store at `now`.
async fn whole_plan(db: &Db, dir: &std::path::Path, now: DateTime<Utc>) -> (DesiredState, Plan) {
    let desired = load_dir(dir, now).unwrap().state;
    let plan = plan(
        &desired,
        &db.snapshot().await.unwrap(),
        now,
        PlanOptions::default(),
    );
    (desired, plan)
}

async fn run(db: Db, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    model.write(dir.path());
    let seconds = Arc::new(AtomicI64::new(1_900_000_000));
    let clock: crate::clock::Clock = {
        let seconds = Arc::clone(&seconds);
        Arc::new(move || DateTime::from_timestamp(seconds.load(Ordering::SeqCst), 0).unwrap())
    };
    let mut passes = Passes::new(
        db.clone(),
        StateDir::new(dir.path()),
        WatchOptions::default(),
        WatchMetrics::default(),
        Arc::clone(&clock),
    );
    passes.pass(Trigger::Start).await.unwrap();
    let mut followed = 0;
    for step in &steps {
        let now: DateTime<Utc> = clock();
        let mut trigger = Trigger::Files;
        match *step {
            Step::Edit { rule, max } => model.max[rule] = max,
            Step::Move { rule, file } => model.file[rule] = file,
            Step::Toggle { rule } => model.present[rule] = !model.present[rule],
            Step::ToggleClient { client } => model.clients[client] = !model.clients[client],
            Step::Override { rule: i, minutes } => {
                let (scope, key) = model.rule(i);
                let change = ApiChange {
                    actor: "tyr".into(),
                    reason: Some("property test".into()),
                    expires_at: Some(now + Duration::minutes(minutes)),
                    now,
                    group_id: None,
                };
                // A rule naming a client the store no longer has is refused; that is fine.
                let (_, rule) = crate::limit::table::tests::record(0, scope, &key, 1);
                let _ = db.put_rule(&rule, &change).await;
                trigger = Trigger::Expiry;
            }
            Step::ByHand { rule: i } => {
                let (scope, key) = model.rule(i);
                let sql = "UPDATE rate_limit_rules SET max_requests = max_requests + 7 WHERE scope = $1 AND key = $2";
                let scope = scope.to_string();
                match db.pool() {
                    Backend::Postgres(p) => sqlx::query(sql).bind(scope).bind(key).execute(p).await.map(drop),
                    Backend::Sqlite(p) => sqlx::query(sql).bind(scope).bind(key).execute(p).await.map(drop),
                }
                .unwrap();
            }
            Step::HandInsert { n } => {
                let sql = "INSERT INTO rate_limit_rules (scope, key, window_seconds, max_requests, owner) \
                           VALUES ('user', $1, 60, 5, 'api') ON CONFLICT DO NOTHING";
                let key = format!("by-hand-{n}");
                match db.pool() {
                    Backend::Postgres(p) => sqlx::query(sql).bind(key).execute(p).await.map(drop),
                    Backend::Sqlite(p) => sqlx::query(sql).bind(key).execute(p).await.map(drop),
                }
                .unwrap();
            }
            Step::Tick { minutes } => {
                seconds.fetch_add(minutes * 60, Ordering::SeqCst);
                trigger = Trigger::Expiry;
            }
            Step::Whole => trigger = Trigger::Interval,
        }
        model.write(dir.path());
        let now = clock();
        let (desired, expected) = whole_plan(&db, dir.path(), now).await;
        let passed = passes.pass(trigger).await.unwrap();
        followed += usize::from(passed.followed);
        prop_assert_eq!(&passed.plan, &expected, "{:?} ({})", step, db.backend());
        let after = plan(
            &desired,
            &db.snapshot().await.unwrap(),
            now,
            PlanOptions::default(),
        );
        prop_assert!(!after.has_changes(), "{:?} left {:?}", step, after.summary());
    }
    let wholes = steps.iter().filter(|s| matches!(s, Step::Whole)).count();
    // Every pass after an edit follows it, except those the store moved under (another
    // writer between the log's reading and the lock: not here) and the one after the first
    // apply, whose snapshot the change log could not follow row by row (none here either).
    prop_assert_eq!(followed, steps.len() - wholes, "passes followed");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn followed_passes_apply_the_whole_plan_on_sqlite(steps in prop::collection::vec(step(), 1..14)) {
        runtime().block_on(async {
            let (db, _dir) = sqlite().await;
            run(db, steps).await
        })?;
    }

    #[test]
    fn followed_passes_apply_the_whole_plan_on_postgres(steps in prop::collection::vec(step(), 1..14)) {
        runtime().block_on(async {
            let Some((db, admin, name)) = postgres("watch property test").await else { return Ok(()) };
            let result = run(db.clone(), steps).await;
            drop_postgres(db, &admin, &name).await;
            result
        })?;
    }
}

/// A loop over a fresh directory of the model's files, after its first pass.
async fn watching(db: &Db) -> (Passes, Model, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::new();
    model.write(dir.path());
    let mut passes = Passes::new(
        db.clone(),
        StateDir::new(dir.path()),
        WatchOptions::default(),
        WatchMetrics::default(),
        crate::clock::system(),
    );
    passes.pass(Trigger::Start).await.unwrap();
    (passes, model, dir)
}

/// A row edited by hand into something that does not decode is not planned around: the pass
/// after an edit does not follow it, and the whole pass names the row and applies nothing;
/// once the row is fixed, passes follow again.
#[test]
fn an_unreadable_row_makes_passes_whole_until_it_is_fixed() {
    runtime().block_on(async {
        let (db, _db_dir) = sqlite().await;
        let (mut passes, mut model, dir) = watching(&db).await;
        let by_hand = |scope: &'static str| {
            let sql = format!("UPDATE rate_limit_rules SET scope = '{scope}' WHERE key = 'user-0'");
            let Backend::Sqlite(pool) = db.pool() else {
                unreachable!()
            };
            let pool = pool.clone();
            async move {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap()
            }
        };
        // `user-0` is no address: as an ip rule the row does not decode.
        by_hand("ip").await;
        model.max[1] += 1;
        model.write(dir.path());
        let failed = passes.pass(Trigger::Files).await.unwrap_err();
        assert!(failed.to_string().contains("rate_limit_rules, row"), "{failed}");
        by_hand("user").await;
        passes.pass(Trigger::Interval).await.unwrap();
        model.max[1] += 1;
        model.write(dir.path());
        assert!(passes.pass(Trigger::Files).await.unwrap().followed);
    });
}

/// A whole pass also checks the loop's copy of the store: a row written where the change log
/// did not see it (its trigger dropped for the write) is found by the fingerprint of the
/// snapshot the whole pass planned from, the copy is read again, and the next followed pass
/// plans exactly what a whole one would.
#[test]
fn a_whole_pass_finds_a_copy_the_log_left_behind_and_reads_it_again() {
    runtime().block_on(async {
        let (db, _db_dir) = sqlite().await;
        let (mut passes, mut model, dir) = watching(&db).await;
        let Backend::Sqlite(pool) = db.pool() else {
            unreachable!()
        };
        // An API-owned rule git does not declare: a plan lists it, and never writes it. One
        // transaction on one connection: another pooled connection could still see the old
        // schema and its trigger.
        let mut tx = pool.begin().await.unwrap();
        for sql in [
            "DROP TRIGGER rate_limit_rules_inserted",
            "INSERT INTO rate_limit_rules (scope, key, window_seconds, max_requests, owner) \
             VALUES ('user', 'unseen', 60, 5, 'api')",
            "CREATE TRIGGER rate_limit_rules_inserted AFTER INSERT ON rate_limit_rules BEGIN \
             INSERT INTO store_changes (table_name, row_id) VALUES ('rate_limit_rules', NEW.id); END",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        passes.pass(Trigger::Interval).await.unwrap();
        model.max[1] += 1;
        model.write(dir.path());
        let (_, expected) = whole_plan(&db, dir.path(), crate::clock::now()).await;
        let passed = passes.pass(Trigger::Files).await.unwrap();
        assert!(passed.followed);
        assert_eq!(passed.plan, expected);
        assert!(
            passed.plan.rules.iter().any(|op| op.key == "user:unseen"),
            "{:?}",
            passed.plan.rules
        );
    });
}

/// Invalid files are told once per distinct error, not every pass: the same error on the next
/// passes tells nothing more, another error tells again.
#[test]
fn an_invalid_state_is_told_once_per_distinct_error() {
    runtime().block_on(async {
        let (db, _db_dir) = sqlite().await;
        let (mut passes, _model, dir) = watching(&db).await;
        let refused = |db: Db| async move {
            let events = db.events(100).await.unwrap();
            events
                .into_iter()
                .filter(|e| e.event.kind == crate::domain::EventType::ReconcileRefused)
                .map(|e| e.event.reason)
                .collect::<Vec<_>>()
        };
        std::fs::write(dir.path().join("broken.yaml"), "version: 1\nrate_limits: [\n").unwrap();
        for _ in 0..3 {
            let _ = passes.pass(Trigger::Interval).await;
        }
        let told = refused(db.clone()).await;
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains("broken.yaml"), "{told:?}");
        std::fs::write(dir.path().join("broken.yaml"), "version: 1\nclients: 7\n").unwrap();
        let _ = passes.pass(Trigger::Files).await;
        let _ = passes.pass(Trigger::Interval).await;
        assert_eq!(refused(db.clone()).await.len(), 2);
    });
}

/// A freeze of changes refuses every pass while it lasts; the refusal is recorded and told once,
/// not once a pass (a freeze lasts days, a pass comes every minute).
#[test]
fn a_freeze_is_recorded_and_told_once_however_many_passes_it_refuses() {
    runtime().block_on(async {
        let (db, _db_dir) = sqlite().await;
        let (mut passes, mut model, dir) = watching(&db).await;
        let now = crate::clock::now();
        let freeze = crate::model::Window {
            name: crate::domain::WindowName::parse("freeze").unwrap(),
            when: crate::calendar::When::once(now - Duration::hours(1), now + Duration::hours(2)).unwrap(),
            mode: crate::domain::WindowMode::FreezeChanges,
            active: true,
            description: String::new(),
        };
        let change = ApiChange {
            actor: "tyr".into(),
            reason: None,
            expires_at: None,
            now,
            group_id: None,
        };
        db.create_window(&freeze, &change).await.unwrap();
        model.max[1] += 1;
        model.write(dir.path());
        for trigger in [Trigger::Files, Trigger::Interval, Trigger::Interval] {
            let refused = passes.pass(trigger).await;
            assert!(
                matches!(refused, Err(super::pass::PassError::Refused(_))),
                "{refused:?}"
            );
        }
        let refusals: Vec<_> = (db.runs(100).await.unwrap().into_iter())
            .filter_map(|r| r.refusal)
            .collect();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(
            refusals[0].contains("changes are frozen by window freeze"),
            "{refusals:?}"
        );
        let told = (db.events(100).await.unwrap().into_iter())
            .filter(|e| e.event.kind == crate::domain::EventType::ReconcileRefused)
            .count();
        assert_eq!(told, 1);
    });
}
