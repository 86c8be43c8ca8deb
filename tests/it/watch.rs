//! `reconcile --watch` and `serve --watch` as processes: edits in every form an editor or git
//! makes them, invalid edits, drift, override expiry, two watchers, SIGTERM, a database outage.

use std::process::Stdio;
use std::time::{Duration, Instant};

use valhalla_ops::mirror::Mirror;
use valhalla_ops::store::{Db, RuleFilter};

use crate::support::app::{OPERATOR, state_with};
use crate::support::{Process, StateDir, TestDb, all_backends};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `max_requests` of each rule (by key), or None while the store is not set up yet.
fn limits(rt: &tokio::runtime::Runtime, url: &str) -> Option<Vec<(String, u32)>> {
    rt.block_on(async {
        let db = Db::connect(url, Default::default()).await.ok()?;
        let filter = RuleFilter {
            scope: None,
            key: None,
            enabled: None,
            page: valhalla_ops::store::Page {
                limit: 10_000,
                offset: 0,
            },
        };
        let rules = db.rules(&filter).await.ok()?;
        Some(
            rules
                .into_iter()
                .map(|r| (r.rule.key.as_str().to_owned(), r.rule.max_requests.get()))
                .collect(),
        )
    })
}

/// Waits until the rule of `key` has `max` (None: until it is gone).
fn wait_for(rt: &tokio::runtime::Runtime, url: &str, key: &str, max: Option<u32>, what: &str) {
    let start = Instant::now();
    loop {
        let now = limits(rt, url).map(|l| l.into_iter().find(|(k, _)| k == key).map(|(_, m)| m));
        if now == Some(max) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: still {now:?}, want {max:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn rules(max: u32) -> String {
    format!("rate_limits:\n  - scope: ip\n    key: 192.0.2.1\n    max_requests: {max}\n")
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// The test clients, and a rule for 192.0.2.1 of 10 requests: what the watch tests start from.
fn watched_state() -> StateDir {
    StateDir::new(&[("clients.yaml", &state_with("")), ("rules.yaml", &rules(10))])
}

/// A watcher started with `args` on [`watched_state`], once its first pass is applied.
fn start_watching(db: &TestDb, args: &[&str]) -> (tokio::runtime::Runtime, StateDir, Process) {
    let rt = runtime();
    let state = watched_state();
    let watching = Process::start(db, &state, args);
    let first = format!("{}: first pass", db.backend);
    wait_for(&rt, &db.url, "192.0.2.1", Some(10), &first);
    (rt, state, watching)
}

/// Waits for git's value of the rule to return after an override set at `set`: within `within`,
/// woken by the override's expiry.
fn git_value_back_on_expiry(
    rt: &tokio::runtime::Runtime,
    db: &TestDb,
    watching: &Process,
    set: Instant,
    within: Duration,
) {
    let b = db.backend;
    wait_for(
        rt,
        &db.url,
        "192.0.2.1",
        Some(10),
        &format!("{b}: git's value back"),
    );
    let back = set.elapsed();
    assert!(back < within, "{b}: back after {back:?}");
    watching.wait_log("trigger=\"override expired\"", Duration::from_secs(5));
}

/// Overrides git's rule for 192.0.2.1 over HTTP: `max` requests, for `ttl` seconds.
fn override_rule(base: &str, max: u32, ttl: u32) {
    let body = format!(
        r#"{{"scope": "ip", "key": "192.0.2.1", "max_requests": {max}, "reason": "load test", "ttl_seconds": {ttl}}}"#
    );
    let agent = crate::support::agent();
    let mut response = agent
        .post(format!("{base}/system/ratelimits/rules"))
        .header("Authorization", format!("Bearer {OPERATOR}"))
        .header("Content-Type", "application/json")
        .send(&body)
        .unwrap();
    let status = response.status();
    let answer = response.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 200, "overriding the rule through {base}: {answer}");
}

#[test]
fn edits_atomic_saves_recreated_files_and_checkouts_are_all_applied() {
    for db in all_backends() {
        let b = db.backend;
        let (rt, state, _watching) = start_watching(&db, &["reconcile", "--watch", "--interval", "60s"]);

        state.write("rules.yaml", &rules(11));
        wait_for(
            &rt,
            &db.url,
            "192.0.2.1",
            Some(11),
            &format!("{b}: an edit in place"),
        );

        // An editor's atomic save: a new file renamed over the old one.
        state.write(".rules.yaml.swp", &rules(12));
        std::fs::rename(
            state.path().join(".rules.yaml.swp"),
            state.path().join("rules.yaml"),
        )
        .unwrap();
        wait_for(
            &rt,
            &db.url,
            "192.0.2.1",
            Some(12),
            &format!("{b}: an atomic save"),
        );

        state.remove("rules.yaml");
        wait_for(&rt, &db.url, "192.0.2.1", None, &format!("{b}: a deleted file"));
        state.write("rules.yaml", &rules(13));
        wait_for(
            &rt,
            &db.url,
            "192.0.2.1",
            Some(13),
            &format!("{b}: a recreated file"),
        );

        // A checkout of another branch, and back.
        git(state.path(), &["init", "-q"]);
        git(state.path(), &["add", "."]);
        git(state.path(), &["commit", "-qm", "13"]);
        git(state.path(), &["checkout", "-qb", "other"]);
        state.write("rules.yaml", &rules(14));
        git(state.path(), &["commit", "-qam", "14"]);
        wait_for(&rt, &db.url, "192.0.2.1", Some(14), &format!("{b}: a commit"));
        git(state.path(), &["checkout", "-q", "main"]);
        wait_for(&rt, &db.url, "192.0.2.1", Some(13), &format!("{b}: git checkout"));
    }
}

#[test]
fn an_invalid_edit_is_not_applied_and_the_next_valid_one_is() {
    for db in all_backends() {
        let b = db.backend;
        let (rt, state, watching) = start_watching(&db, &["reconcile", "--watch", "--interval", "60s"]);

        // A duplicate of the rule in another file, and a syntax error: positions are logged.
        state.write("more.yaml", &rules(99));
        watching.wait_log("more.yaml:3:", Duration::from_secs(10));
        watching.wait_log("the last good state stays in force", Duration::from_secs(10));
        state.write("rules.yaml", "rate_limits:\n  - scope: ip\n    key: [unclosed\n");
        watching.wait_log("rules.yaml:", Duration::from_secs(10));
        assert_eq!(
            limits(&rt, &db.url).unwrap(),
            [("192.0.2.1".to_owned(), 10)],
            "{b}: nothing applied"
        );
        state.remove("more.yaml");
        state.write("rules.yaml", &rules(20));
        wait_for(
            &rt,
            &db.url,
            "192.0.2.1",
            Some(20),
            &format!("{b}: the next valid edit"),
        );
    }
}

#[test]
fn a_row_changed_by_hand_is_healed_on_the_next_interval() {
    for db in all_backends() {
        let b = db.backend;
        let (rt, _state, watching) = start_watching(&db, &["reconcile", "--watch", "--interval", "1s"]);
        rt.block_on(async {
            let store = Db::connect(&db.url, Default::default()).await.unwrap();
            crate::support::exec(&store, "UPDATE rate_limit_rules SET max_requests = 999").await;
        });
        wait_for(&rt, &db.url, "192.0.2.1", Some(10), &format!("{b}: healed"));
        watching.wait_log("drift corrected", Duration::from_secs(5));
        // The run says so too (the status page shows it).
        let runs = rt.block_on(async {
            let store = Db::connect(&db.url, Default::default()).await.unwrap();
            store.runs(100).await.unwrap()
        });
        let drifted: Vec<_> = runs.iter().filter(|r| r.drift).collect();
        assert_eq!(drifted.len(), 1, "{b}: {runs:?}");
        assert_eq!(
            (drifted[0].updated, drifted[0].refusal.as_deref()),
            (1, None),
            "{b}"
        );
        assert!(
            !runs.iter().any(|r| r.drift && r.updated == 0),
            "{b}: only changes correct drift"
        );
    }
}

#[test]
fn an_override_with_a_short_ttl_expires_and_gits_value_returns_on_time() {
    for db in all_backends() {
        let b = db.backend;
        // A long interval: only the expiry can wake the loop in time.
        let (rt, _state, watching) = start_watching(
            &db,
            &["serve", "--bind", "127.0.0.1:0", "--watch", "--interval", "10m"],
        );
        let base = watching.base();
        override_rule(&base, 77, 2);
        let set = Instant::now();
        assert_eq!(limits(&rt, &db.url).unwrap()[0].1, 77, "{b}: the override holds");
        git_value_back_on_expiry(&rt, &db, &watching, set, Duration::from_secs(4));
        // The loop's counters are in the server's /metrics.
        let metrics = ureq::get(format!("{base}/metrics"))
            .header("Authorization", format!("Bearer {OPERATOR}"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{b}: no {name} in\n{metrics}"))
        };
        assert!(value("valhalla_ops_watch_passes_total") >= 2.0, "{b}");
        // The first pass created the clients and the rule; the expiry pass restored the rule.
        assert!(value("valhalla_ops_watch_changes_total") >= 6.0, "{b}");
        assert_eq!(value("valhalla_ops_watch_failures_total"), 0.0, "{b}");
    }
}

#[test]
fn two_watchers_on_one_postgres_apply_each_change_once() {
    let Some(db) = crate::support::postgres() else {
        return;
    };
    let rt = runtime();
    let state = watched_state();
    let args = |actor: &'static str| ["reconcile", "--watch", "--interval", "1s", "--actor", actor];
    let _one = Process::start(&db, &state, &args("one"));
    let _two = Process::start(&db, &state, &args("two"));
    wait_for(&rt, &db.url, "192.0.2.1", Some(10), "first pass");
    for max in 11..=15 {
        state.write("rules.yaml", &rules(max));
        wait_for(&rt, &db.url, "192.0.2.1", Some(max), "an edit");
    }
    std::thread::sleep(Duration::from_millis(1500));
    rt.block_on(async {
        let store = Db::connect(&db.url, Default::default()).await.unwrap();
        let audit = store.audit(1000).await.unwrap();
        let mut applied: Vec<(String, Option<String>)> = audit
            .iter()
            .filter(|a| a.key.contains("192.0.2.1"))
            .map(|a| (a.action.clone(), a.after.clone()))
            .collect();
        let total = applied.len();
        applied.sort();
        applied.dedup();
        assert_eq!(applied.len(), total, "a change was applied twice: {audit:?}");
        assert_eq!(total, 6, "one create and five updates: {audit:?}");
        let runs = store.runs(1000).await.unwrap();
        let actors: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.actor.as_str()).collect();
        assert!(
            actors.contains("one") && actors.contains("two"),
            "both watchers ran: {actors:?}"
        );
    });
}

#[test]
fn sigterm_during_a_pass_leaves_a_whole_state() {
    for db in all_backends() {
        let rt = runtime();
        let b = db.backend;
        let mut big = String::from("rate_limits:\n");
        for i in 0..20_000 {
            big.push_str(&format!(
                "  - scope: user\n    key: user-{i}\n    max_requests: 5\n"
            ));
        }
        let state = StateDir::new(&[("clients.yaml", &state_with("")), ("rules.yaml", &big)]);
        let mut watching = Process::start(&db, &state, &["reconcile", "--watch"]);
        watching.wait_log("watching the state directory", Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(300));
        let status = watching.stop(Duration::from_secs(60));
        assert!(status.success(), "{b}: {status:?}\n{}", watching.log());
        let count = rt.block_on(async {
            let store = Db::connect(&db.url, Default::default()).await.unwrap();
            Mirror::load(&store).await.map_or(0, |m| m.rule_map().len())
        });
        // The signal came while the first pass was loading or applying (it takes over a second
        // here): the pass finished and committed whole, then the loop stopped.
        assert_eq!(count, 20_000, "{b}: half a state\n{}", watching.log());
        let log = watching.log();
        let applied = log
            .find("pass: applied 20004 changes")
            .expect("the pass finished");
        assert!(log[applied..].contains("watch loop stopped"), "{b}: {log}");
    }
}

#[test]
fn a_database_that_is_down_at_start_is_retried_not_fatal() {
    // A database that does not exist yet: connecting fails until it is created.
    let Some(later) = crate::support::postgres_unborn() else {
        return;
    };
    let rt = runtime();
    let state = watched_state();
    let watching = Process::start(&later, &state, &["reconcile", "--watch", "--interval", "1s"]);
    watching.wait_log("retrying in", Duration::from_secs(10));
    later.create();
    wait_for(
        &rt,
        &later.url,
        "192.0.2.1",
        Some(10),
        "applied once the database is up",
    );
}

#[cfg(unix)]
#[test]
fn a_configmap_update_and_a_replaced_directory_are_applied() {
    use std::os::unix::fs::symlink;
    let db = crate::support::sqlite();
    let rt = runtime();
    // As Kubernetes mounts a ConfigMap: files are symlinks into `..data`, itself a symlink to a
    // timestamped directory; an update swaps `..data` in one rename.
    let state = StateDir::new(&[]);
    let root = state.path();
    let version = |n: u32| {
        let dir = root.join(format!("..v{n}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("clients.yaml"), state_with("")).unwrap();
        std::fs::write(dir.join("rules.yaml"), rules(n)).unwrap();
        symlink(format!("..v{n}"), root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    };
    version(1);
    symlink("..data/clients.yaml", root.join("clients.yaml")).unwrap();
    symlink("..data/rules.yaml", root.join("rules.yaml")).unwrap();
    let _watching = Process::start(&db, &state, &["reconcile", "--watch", "--interval", "60s"]);
    wait_for(&rt, &db.url, "192.0.2.1", Some(1), "first pass");
    version(2);
    wait_for(&rt, &db.url, "192.0.2.1", Some(2), "the ..data swap");

    // The whole directory deleted and created again: its watch is gone, a new one is made.
    std::fs::remove_dir_all(root).unwrap();
    std::fs::create_dir(root).unwrap();
    std::fs::write(root.join("clients.yaml"), state_with("")).unwrap();
    std::fs::write(root.join("rules.yaml"), rules(3)).unwrap();
    wait_for(&rt, &db.url, "192.0.2.1", Some(3), "the recreated directory");
    std::fs::write(root.join("rules.yaml"), rules(4)).unwrap();
    wait_for(
        &rt,
        &db.url,
        "192.0.2.1",
        Some(4),
        "an edit in the recreated directory",
    );
}

#[test]
fn a_watcher_waits_out_another_applier_holding_the_lock() {
    let Some(db) = crate::support::postgres() else {
        return;
    };
    let rt = runtime();
    // Another applier holds the lock (as a long apply by another replica would).
    let mut holder = rt.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(valhalla_ops::store::testing::APPLY_LOCK)
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    });
    let state = watched_state();
    let watching = Process::start(
        &db,
        &state,
        &["--lock-timeout", "1", "reconcile", "--watch", "--interval", "60s"],
    );
    watching.wait_log("another replica held the apply lock", Duration::from_secs(20));
    assert_eq!(
        limits(&rt, &db.url).unwrap_or_default(),
        [],
        "nothing applied meanwhile"
    );
    rt.block_on(async {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(valhalla_ops::store::testing::APPLY_LOCK)
            .execute(&mut holder)
            .await
            .unwrap();
    });
    wait_for(
        &rt,
        &db.url,
        "192.0.2.1",
        Some(10),
        "applied once the lock is free",
    );
    assert!(!watching.log().contains("pass failed"), "{}", watching.log());
}

#[test]
fn an_override_set_by_another_process_is_undone_when_it_expires() {
    // The watcher hears nothing of a write made by another process: it reads the overrides again
    // every 5 s. One that expired meanwhile (here after 1 s) was passed over until the interval
    // (10 minutes), since only expiries still in the future were waited for.
    for db in all_backends() {
        let (rt, state, watching) = start_watching(&db, &["reconcile", "--watch", "--interval", "10m"]);
        let serving = Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
        override_rule(&serving.base(), 77, 1);
        let set = Instant::now();
        git_value_back_on_expiry(&rt, &db, &watching, set, Duration::from_secs(8));
    }
}
