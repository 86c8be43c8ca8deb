//! The binary end to end on every backend: exit codes, what is written, what is never printed.

use crate::support::{StateDir, TestDb, all_backends, command, finish, run, runs, scratch};

/// The key behind the test client's hash; it must never appear in any output.
const SECRET_KEY: &str = "vk_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn secret_hash() -> String {
    valhalla_ops::domain::KeySha256::of_key(SECRET_KEY)
        .as_str()
        .to_owned()
}

/// Counts rows of `table` through the binary-independent store.
fn count_rules(db: &TestDb) -> usize {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
        store.snapshot().await.unwrap().rules.len()
    })
}

#[test]
fn dry_run_writes_nothing_then_apply_then_in_sync() {
    for db in all_backends() {
        let state = StateDir::sample();
        let b = db.backend;
        let dry = run(
            &db,
            state.path(),
            &["reconcile", "--dry-run", "--detailed-exitcode"],
        );
        assert_eq!(dry.code, 2, "{b}: {dry:?}");
        assert!(
            dry.stdout.contains("+ create     ip:203.0.113.0/24"),
            "{b}: {dry:?}"
        );
        assert!(
            dry.stdout.contains("Plan: 14 to create, 0 to update"),
            "{b}: {dry:?}"
        );
        assert_eq!(count_rules(&db), 0, "{b}: dry run wrote rules");
        assert!(runs(&db).is_empty(), "{b}: dry run recorded a run");

        let apply = run(&db, state.path(), &["reconcile", "--actor", "ci"]);
        assert_eq!(apply.code, 0, "{b}: {apply:?}");
        assert!(
            apply
                .stdout
                .contains("Applied 14 changes in one transaction (run #1)."),
            "{b}: {apply:?}"
        );

        let again = run(
            &db,
            state.path(),
            &["reconcile", "--dry-run", "--detailed-exitcode"],
        );
        assert_eq!(again.code, 0, "{b}: {again:?}");
        assert!(again.stdout.starts_with("No changes."), "{b}: {again:?}");

        // A change is shown old → new, exit 2 with --detailed-exitcode.
        state.write(
            "rate_limits.yaml",
            &state
                .read("rate_limits.yaml")
                .replace("max_requests: 600", "max_requests: 900"),
        );
        let change = run(
            &db,
            state.path(),
            &["reconcile", "--dry-run", "--detailed-exitcode"],
        );
        assert_eq!(change.code, 2, "{b}: {change:?}");
        assert!(
            change
                .stdout
                .contains("~ update     ip:203.0.113.0/24\n      max_requests: 600 → 900\n"),
            "{b}: {change:?}"
        );
        assert_eq!(runs(&db).len(), 1, "{b}");
    }
}

#[test]
fn invalid_state_changes_nothing_and_reports_every_error() {
    for db in all_backends() {
        let state = StateDir::sample();
        state.write(
            "broken.yaml",
            "rate_limits:\n  - scope: ipp\n    key: 10.0.0.1\n  - scope: api_key\n    key: ghost\nfeature_flags:\n  - name: new-billing\n",
        );
        let out = run(&db, state.path(), &["reconcile"]);
        assert_eq!(out.code, 1, "{out:?}");
        let file = state.path().join("broken.yaml");
        let f = file.display();
        for expected in [
            format!("{f}:2:12: error: rate_limits[0].scope: unknown scope `ipp`"),
            format!("{f}:5:10: error: rule api_key:ghost names client `ghost`"),
            format!(
                "{}:6:11: error: feature flag new-billing is declared twice (first at {f}:7:11)",
                state.path().join("settings.yaml").display()
            ),
        ] {
            assert!(
                out.stderr.contains(&expected),
                "{}: missing {expected:?} in {out:?}",
                db.backend
            );
        }
        assert!(
            out.stderr.contains("is invalid (3 errors); nothing was written"),
            "{out:?}"
        );
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        assert_eq!(count_rules(&db), 0, "{}", db.backend);
        assert!(runs(&db).is_empty());

        let validate = run(&db, state.path(), &["validate"]);
        assert_eq!(validate.code, 1, "{validate:?}");
        state.remove("broken.yaml");
        let validate = run(&db, state.path(), &["validate"]);
        assert_eq!(validate.code, 0, "{validate:?}");
        assert!(
            validate
                .stdout
                .contains("is valid: 4 files, 7 rate-limit rules, 4 clients"),
            "{validate:?}"
        );
    }
}

#[test]
fn export_writes_gits_values_where_overrides_hold_resources() {
    use valhalla_ops::domain::{Mode, Scope};
    use valhalla_ops::store::{ApiChange, ClientFilter, Page, RuleFilter};
    for db in all_backends() {
        let state = StateDir::sample();
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
        // An incident: the office network's limit raised, a client switched off, a rule deleted,
        // the platform frozen; each an override over HTTP.
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
            let change = ApiChange {
                actor: "tyr".into(),
                reason: Some("incident 9".into()),
                expires_at: None,
                now: chrono::Utc::now(),
                group_id: None,
            };
            let rule = |key: &str| RuleFilter {
                scope: Some(Scope::Ip),
                key: Some(key.into()),
                enabled: None,
                page: Page { limit: 10, offset: 0 },
            };
            let office = store.rules(&rule("203.0.113.0/24")).await.unwrap().remove(0);
            let raised = valhalla_ops::model::RateLimitRule {
                max_requests: valhalla_ops::domain::MaxRequests::new(60_000).unwrap(),
                ..office.rule
            };
            store.put_rule(&raised, &change).await.unwrap();
            let blocked = store.rules(&rule("198.51.100.23")).await.unwrap().remove(0);
            store.delete_rule(blocked.id, &change).await.unwrap();
            let all = ClientFilter {
                active: None,
                client_type: None,
                page: Page {
                    limit: 100,
                    offset: 0,
                },
            };
            let weweb = store
                .clients(&all)
                .await
                .unwrap()
                .into_iter()
                .find(|c| c.name.as_str() == "weweb")
                .unwrap();
            store.set_client_active(weweb.id, false, &change).await.unwrap();
            store.set_mode(Mode::ReadOnly, &change).await.unwrap();
        });
        let single = run(&db, state.path(), &["export"]);
        assert_eq!(single.code, 0, "{single:?}");
        let text = &single.stdout;
        assert!(text.starts_with("# yaml-language-server: $schema="), "{text}");
        // Git's values, each under a comment that says why.
        assert!(
            !text.contains("60000"),
            "the emergency limit is not git's: {text}"
        );
        assert!(
            text.contains("key: 203.0.113.0/24\n    max_requests: 600"),
            "{text}"
        );
        assert!(
            text.contains("key: 198.51.100.23"),
            "the rule deleted over HTTP is still git's: {text}"
        );
        assert!(text.contains("mode: normal"), "{text}");
        let held = text.lines().filter(|l| l.contains("held by override #")).count();
        assert_eq!(held, 4, "{text}");
        for kind in [
            "rate_limit_rule ip:203.0.113.0/24",
            "rate_limit_rule ip:198.51.100.23",
            "client weweb",
            "maintenance_mode",
        ] {
            assert!(
                single.stderr.contains(&format!("note: {kind}")),
                "{kind}: {single:?}"
            );
        }
        // Committed, the export changes nothing: what it declares is git's, and the overrides
        // still hold the rest.
        let one = StateDir::new(&[("all.yaml", text)]);
        let check = run(
            &db,
            one.path(),
            &["reconcile", "--dry-run", "--detailed-exitcode"],
        );
        assert_eq!(check.code, 0, "{}: {check:?}", db.backend);
        assert!(check.stdout.contains("4 held by override"), "{check:?}");
        let (_dir, out) = scratch("export-held");
        let files = run(&db, state.path(), &["export", "--out", out.to_str().unwrap()]);
        assert_eq!(files.code, 0, "{files:?}");
        let rules = std::fs::read_to_string(out.join("rate_limits.yaml")).unwrap();
        assert!(
            rules.contains("held by override") && rules.contains("max_requests: 600"),
            "{rules}"
        );
    }
}

#[test]
fn export_then_reconcile_is_in_sync() {
    for db in all_backends() {
        let state = StateDir::sample();
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
        let (_dir, out) = scratch("export");
        let export = run(&db, state.path(), &["export", "--out", out.to_str().unwrap()]);
        assert_eq!(export.code, 0, "{export:?}");
        let check = run(&db, &out, &["reconcile", "--dry-run", "--detailed-exitcode"]);
        assert_eq!(check.code, 0, "{}: export is not in sync: {check:?}", db.backend);
        // A second export into the same directory would replace hand-written files: refused,
        // naming them, and nothing changes; --force replaces them.
        std::fs::write(out.join("clients.yaml"), "# written by hand\nversion: 1\n").unwrap();
        let again = run(&db, state.path(), &["export", "--out", out.to_str().unwrap()]);
        assert_eq!(again.code, 1, "{again:?}");
        assert_eq!(again.stderr.lines().count(), 1, "{again:?}");
        assert!(
            again.stderr.contains("clients.yaml") && again.stderr.contains("--force"),
            "{again:?}"
        );
        let kept = std::fs::read_to_string(out.join("clients.yaml")).unwrap();
        assert_eq!(kept, "# written by hand\nversion: 1\n");
        let forced = run(
            &db,
            state.path(),
            &["export", "--out", out.to_str().unwrap(), "--force"],
        );
        assert_eq!(forced.code, 0, "{forced:?}");
        assert!(
            std::fs::read_to_string(out.join("clients.yaml"))
                .unwrap()
                .contains("tyr")
        );
        // The single-file form on stdout is a valid state file too.
        let single = run(&db, state.path(), &["export"]);
        let one = StateDir::new(&[("all.yaml", &single.stdout)]);
        let check = run(
            &db,
            one.path(),
            &["reconcile", "--dry-run", "--detailed-exitcode"],
        );
        assert_eq!(check.code, 0, "{}: {check:?}", db.backend);
    }
}

#[test]
fn mass_removal_is_refused_without_the_flag() {
    for db in all_backends() {
        let state = StateDir::sample();
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
        // A file emptied on purpose (`version: 1`) still must not wipe production: all 7 rules
        // would go. (One emptied to nothing is an error of its own: see `hostile`.)
        state.write("rate_limits.yaml", "version: 1\n");
        let dry = run(&db, state.path(), &["reconcile", "--dry-run"]);
        assert_eq!(dry.code, 1, "{dry:?}");
        // The plan is still shown, so the reviewer sees what would go.
        assert!(dry.stdout.contains("- delete     global:*"), "{dry:?}");
        assert!(
            dry.stdout
                .contains("refused: Rate-limit rules: removes 7 of 7 git-owned resources"),
            "{dry:?}"
        );
        let refused = run(&db, state.path(), &["reconcile"]);
        assert_eq!(refused.code, 1, "{refused:?}");
        assert!(
            refused
                .stderr
                .contains("refusing to remove 7 of 7 rate-limit rules"),
            "{refused:?}"
        );
        assert_eq!(count_rules(&db), 7, "{}", db.backend);
        let allowed = run(&db, state.path(), &["reconcile", "--allow-mass-removal"]);
        assert_eq!(allowed.code, 0, "{allowed:?}");
        assert_eq!(count_rules(&db), 0, "{}", db.backend);
    }
}

#[test]
fn saved_plan_applies_once_and_stale_plans_are_refused() {
    for db in all_backends() {
        let state = StateDir::sample();
        let (_dir, plan) = scratch("plan.json");
        let plan = plan.to_str().unwrap();
        let save = run(&db, state.path(), &["reconcile", "--dry-run", "--out", plan]);
        assert_eq!(save.code, 0, "{save:?}");
        let apply = run(&db, state.path(), &["reconcile", "--plan", plan]);
        assert_eq!(apply.code, 0, "{apply:?}");
        assert_eq!(count_rules(&db), 7);
        // The store changed (by that very apply): the same plan is now stale.
        let stale = run(&db, state.path(), &["reconcile", "--plan", plan]);
        assert_eq!(stale.code, 1, "{stale:?}");
        assert!(stale.stderr.contains("the saved plan is stale"), "{stale:?}");
        // A plan made from other files is refused too.
        let fresh = run(&db, state.path(), &["reconcile", "--dry-run", "--out", plan]);
        assert_eq!(fresh.code, 0);
        state.write(
            "settings.yaml",
            &state.read("settings.yaml").replace("production", "staging"),
        );
        let other = run(&db, state.path(), &["reconcile", "--plan", plan]);
        assert_eq!(other.code, 1, "{other:?}");
        assert!(
            other.stderr.contains("computed from another desired state"),
            "{other:?}"
        );
        // The refusals are runs too, applying nothing, with why (the status page lists them).
        let runs = runs(&db);
        let refusals: Vec<&str> = runs.iter().filter_map(|r| r.refusal.as_deref()).collect();
        assert_eq!(runs.len(), 3, "{}: {runs:?}", db.backend);
        assert!(
            refusals[0].contains("computed from another desired state"),
            "{refusals:?}"
        );
        assert!(refusals[1].contains("the saved plan is stale"), "{refusals:?}");
        let refused = runs.iter().filter(|r| r.refusal.is_some());
        assert!(
            refused.clone().count() == 2
                && refused
                    .into_iter()
                    .all(|r| r.created + r.updated + r.deleted == 0)
        );
    }
}

#[test]
fn concurrent_reconciles_never_both_apply() {
    for db in all_backends() {
        let state = StateDir::sample();
        // Make sure the schema exists so both processes race on the apply, not the migration.
        assert_eq!(run(&db, state.path(), &["migrate"]).code, 0);
        let children: Vec<_> = (0..3)
            .map(|_| {
                command(&db, state.path())
                    .args(["reconcile"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outcomes: Vec<_> = children
            .into_iter()
            .map(|c| finish(c.wait_with_output().unwrap()))
            .collect();
        for o in &outcomes {
            // Each either applied or waited and found nothing to do; a lock error is allowed too.
            assert!(
                o.code == 0 || o.stderr.contains("apply lock"),
                "{}: {o:?}",
                db.backend
            );
        }
        let runs = runs(&db);
        let applied: Vec<_> = runs.iter().filter(|r| r.created > 0).collect();
        assert_eq!(applied.len(), 1, "{}: {runs:?}", db.backend);
        assert_eq!(applied[0].created, 14);
        assert_eq!(count_rules(&db), 7);
    }
}

#[test]
fn secrets_never_appear_in_output() {
    for db in all_backends() {
        let hash = secret_hash();
        let client =
            format!("clients:\n  - name: vault-bot\n    type: integration\n    key_sha256: {hash}\n");
        let state = StateDir::new(&[("c.yaml", &client)]);
        let (_dir, plan) = scratch("plan.json");
        let plan = plan.to_str().unwrap();
        let mut outputs = Vec::new();
        for format in ["text", "json", "markdown"] {
            outputs.push(run(
                &db,
                state.path(),
                &["reconcile", "--dry-run", "--format", format, "--out", plan],
            ));
        }
        outputs.push(run(&db, state.path(), &["reconcile"]));
        // Rotating the key shows only that it changed.
        let rotated = valhalla_ops::domain::KeySha256::of_key("vk_rotated")
            .as_str()
            .to_owned();
        state.write("c.yaml", &client.replace(&hash, &rotated));
        let rotate = run(&db, state.path(), &["reconcile", "-v"]);
        assert!(rotate.stdout.contains("key_sha256: (changed)"), "{rotate:?}");
        outputs.push(rotate);
        let plan_file = std::fs::read_to_string(plan).unwrap();
        for o in &outputs {
            assert_eq!(o.code, 0, "{o:?}");
            for secret in [SECRET_KEY, hash.as_str(), rotated.as_str()] {
                assert!(
                    !o.stdout.contains(secret) && !o.stderr.contains(secret),
                    "{}: secret printed: {o:?}",
                    db.backend
                );
                assert!(!plan_file.contains(secret), "secret in saved plan");
            }
        }
        // A database URL's password is never echoed in errors.
        let bad = run(
            &db,
            state.path(),
            &[
                "reconcile",
                "--database-url",
                "postgres://u:hunter2@127.0.0.1:1/x",
            ],
        );
        assert_eq!(bad.code, 1, "{bad:?}");
        assert!(
            !bad.stderr.contains("hunter2") && bad.stderr.contains("u:***@"),
            "{bad:?}"
        );
    }
}

#[test]
fn keys_generate_prints_a_key_and_its_hash() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    let out = run(&db, state.path(), &["keys", "generate", "--client", "backup-job"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (key, hash) = key_and_hash(&out.stdout);
    assert_eq!(valhalla_ops::domain::KeySha256::of_key(&key).as_str(), hash);
    // The entry pastes under the `clients:` list that ends the sample's clients.yaml: a second
    // `clients:` key in the same file would be a duplicate.
    assert!(!out.stdout.lines().any(|l| l.starts_with("clients:")), "{out:?}");
    let entry = entry_of(&out.stdout);
    assert!(
        entry.contains("role: reader") && entry.contains("type: script"),
        "{entry}"
    );
    state.write("clients.yaml", &(state.read("clients.yaml") + &entry));
    let validated = run(&db, state.path(), &["validate"]);
    assert_eq!(validated.code, 0, "{validated:?}\n{entry}");
}

/// The key and its hash from `keys generate`'s output.
fn key_and_hash(stdout: &str) -> (String, String) {
    let field = |name: &str| {
        let found = stdout.lines().find_map(|l| l.strip_prefix(name));
        found
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_owned()
    };
    (field("key:        "), field("key_sha256: "))
}

/// The client entry `keys generate --client` prints: the lines from its `  - name:`.
fn entry_of(stdout: &str) -> String {
    let start = stdout
        .find("  - name: ")
        .unwrap_or_else(|| panic!("no entry in {stdout}"));
    stdout[start..].to_owned()
}

#[test]
fn the_first_hour_of_the_readme_works_as_written() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    // "valhalla-ops keys generate --client ops-console --role admin"
    let out = run(
        &db,
        state.path(),
        &["keys", "generate", "--client", "ops-console", "--role", "admin"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let (key, _) = key_and_hash(&out.stdout);
    // "paste the entry under `clients:` in state/clients.yaml"
    state.write(
        "clients.yaml",
        &(state.read("clients.yaml") + &entry_of(&out.stdout)),
    );
    // "valhalla-ops reconcile"
    let reconciled = run(&db, state.path(), &["reconcile"]);
    assert_eq!(reconciled.code, 0, "{reconciled:?}");
    // "valhalla-ops serve &", then an admin call with the new key.
    let mut serving = crate::support::Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
    let answer = ureq::post(format!("{}/admin/ops", serving.base()))
        .header("Authorization", &format!("Bearer {key}"))
        .send_json(serde_json::json!({ "action": "security_snapshot" }))
        .unwrap()
        .into_body()
        .read_json::<serde_json::Value>()
        .unwrap();
    assert_eq!(answer["action"], "security_snapshot", "{answer}");
    assert!(serving.stop(std::time::Duration::from_secs(10)).success());
}

#[test]
fn keys_generate_writes_a_new_state_file_and_never_overwrites_one() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    let file = state.path().join("ops.yaml");
    let file_arg = file.to_str().unwrap();
    let args = [
        "keys",
        "generate",
        "--client",
        "ops",
        "--role",
        "operator",
        "--type",
        "integration",
        "--out",
        file_arg,
    ];
    let out = run(&db, state.path(), &args);
    assert_eq!(out.code, 0, "{out:?}");
    let (_, hash) = key_and_hash(&out.stdout);
    let written = state.read("ops.yaml");
    assert!(
        written.starts_with("# yaml-language-server: $schema="),
        "{written}"
    );
    assert!(written.contains(&hash), "{written}");
    assert!(
        !out.stdout.contains("  - name:"),
        "the entry went to the file: {out:?}"
    );
    let validated = run(&db, state.path(), &["validate"]);
    assert_eq!(validated.code, 0, "{validated:?}\n{written}");
    // A second run does not overwrite the file (nor print a key it did not record).
    let again = run(&db, state.path(), &args);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("cannot create"), "{again:?}");
    assert!(!again.stdout.contains("key:"), "{again:?}");
    assert_eq!(state.read("ops.yaml"), written);
    // Options that describe a client need one.
    let orphan = run(&db, state.path(), &["keys", "generate", "--role", "admin"]);
    assert_eq!(orphan.code, 2, "{orphan:?}");
}

#[test]
fn migrate_says_which_version_and_a_missing_database_is_named_plainly() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[]);
    let out = run(&db, state.path(), &["migrate"]);
    assert!(
        out.stdout
            .contains("migrated to version 13 (13 migrations applied)"),
        "{out:?}"
    );
    let out = run(&db, state.path(), &["migrate"]);
    assert_eq!(out.stdout, "sqlite database is up to date.\n", "{out:?}");
    if let Some(missing) = crate::support::postgres_unborn() {
        let out = run(&missing, state.path(), &["migrate"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("does not exist (SQLSTATE 3D000)"), "{out:?}");
        assert!(
            !out.stderr.contains("at line"),
            "a line of Postgres's C source: {out:?}"
        );
    }
}

#[test]
fn overrides_list_lines_up_whatever_the_values() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
        let hold = |kind, key: &str, actor: &str, reason: &str| valhalla_ops::model::NewOverride {
            kind,
            key: key.into(),
            actor: actor.into(),
            reason: reason.into(),
            expires_at: None,
            group_id: None,
            git_value: None,
        };
        use valhalla_ops::model::Kind;
        let now = chrono::Utc::now();
        store
            .add_override(hold(Kind::MaintenanceMode, "mode", "tyr", "incident 9"), now)
            .await
            .unwrap();
        // A long key and a reason with a line break, as an HTTP caller may send.
        let long = hold(
            Kind::RateLimitRule,
            "ip:2001:db8:ffff:ffff:ffff:ffff:ffff:0/112",
            "an-operator-with-a-long-name",
            "two\nlines",
        );
        store.add_override(long, now).await.unwrap();
    });
    let list = run(&db, state.path(), &["overrides", "list"]);
    // Every column starts where its heading does, and each override is one line.
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{list:?}");
    for heading in ["KIND", "RESOURCE", "ACTOR", "UNTIL", "REASON"] {
        let at = lines[0].find(heading).unwrap();
        for line in &lines[1..] {
            let before = line.chars().nth(at - 1);
            let here = line.chars().nth(at);
            assert!(
                before == Some(' ') && here.is_some_and(|c| c != ' '),
                "{heading}:\n{}",
                list.stdout
            );
        }
    }
}

#[test]
fn overrides_list_and_clear() {
    for db in all_backends() {
        let state = StateDir::sample();
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
            let new = valhalla_ops::model::NewOverride {
                kind: valhalla_ops::model::Kind::MaintenanceMode,
                key: "mode".into(),
                actor: "tyr".into(),
                reason: "incident 9".into(),
                expires_at: None,
                group_id: None,
                git_value: None,
            };
            store.add_override(new, chrono::Utc::now()).await.unwrap();
        });
        let list = run(&db, state.path(), &["overrides", "list"]);
        assert!(
            list.stdout.contains("maintenance_mode") && list.stdout.contains("incident 9"),
            "{list:?}"
        );
        let plan = run(&db, state.path(), &["reconcile", "--dry-run"]);
        assert!(
            plan.stdout
                .contains("! held       mode  held by override #1 (tyr, \"incident 9\", until cleared)"),
            "{plan:?}"
        );
        let missing = run(&db, state.path(), &["overrides", "clear", "99"]);
        assert_eq!(missing.code, 1, "{missing:?}");
        let clear = run(&db, state.path(), &["overrides", "clear", "--all"]);
        assert!(clear.stdout.contains("Cleared 1 override"), "{clear:?}");
        let list = run(&db, state.path(), &["overrides", "list", "--format", "json"]);
        assert_eq!(list.stdout.trim(), "[]", "{list:?}");
    }
}

#[test]
fn a_held_lock_is_a_one_line_error_and_changes_nothing() {
    for db in all_backends() {
        let state = StateDir::sample();
        assert_eq!(run(&db, state.path(), &["migrate"]).code, 0);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // Another writer holds the lock for as long as this value lives.
        let holder: Box<dyn std::any::Any> = runtime.block_on(async {
            use sqlx::Connection as _;
            if db.backend == "postgres" {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(valhalla_ops::store::testing::APPLY_LOCK)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Box::new(conn) as Box<dyn std::any::Any>
            } else {
                let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
                Box::new(conn)
            }
        });
        let out = run(&db, state.path(), &["reconcile", "--lock-timeout", "1"]);
        assert_eq!(out.code, 1, "{}: {out:?}", db.backend);
        assert_eq!(
            out.stderr.trim(),
            "valhalla-ops: error: another reconcile holds the apply lock (waited 1s); try again when it has finished",
            "{}",
            db.backend
        );
        runtime.block_on(async { drop(holder) });
        assert_eq!(count_rules(&db), 0, "{}", db.backend);
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0, "{}", db.backend);
    }
}

/// A budget past the 32-bit column that an earlier release let into SQLite no longer stops
/// every read of the store: export, the dry run and serve read the rest (the row as the largest
/// budget, with a warning naming it), and a reconcile writes git's value over it.
#[test]
fn a_stored_budget_past_the_bound_does_not_brick_the_store() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE rate_limit_rules SET max_requests = 4294967295 WHERE scope = 'global'")
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let export = run(&db, state.path(), &["export"]);
    assert_eq!(export.code, 0, "{export:?}");
    assert!(
        export.stderr.contains("rate_limit_rules row"),
        "the row is named: {export:?}"
    );
    let plan = run(&db, state.path(), &["reconcile", "--dry-run"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains("max_requests: 2147483647 → 6000"),
        "{plan:?}"
    );
    assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
    let healed = run(&db, state.path(), &["reconcile", "--detailed-exitcode"]);
    assert_eq!(healed.code, 0, "{healed:?}");
    assert!(!healed.stderr.contains("rate_limit_rules row"), "{healed:?}");
}

/// A first try with a broken state leaves no database file behind, dry run or not; a good one
/// creates it.
#[test]
fn a_failed_first_reconcile_creates_no_database_file() {
    let db = crate::support::sqlite();
    let (_dir, file) = crate::support::scratch("fresh.db");
    let url = format!("sqlite://{}", file.display());
    let broken = StateDir::new(&[("s.yaml", "rate_limits:\n  - scope: bogus\n")]);
    for args in [vec!["reconcile", "--dry-run"], vec!["reconcile"]] {
        let mut args = args;
        args.extend(["--database-url", &url]);
        let out = run(&db, broken.path(), &args);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(!file.exists(), "{args:?} created {}", file.display());
    }
    let good = StateDir::sample();
    let out = run(
        &db,
        good.path(),
        &["reconcile", "--dry-run", "--database-url", &url],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(file.exists());
}

/// A misspelt setting is named with the one meant, rather than silently ignored; `-q` hides it
/// with every other warning.
#[test]
fn a_misspelt_variable_is_named_in_a_warning() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    let out = finish(
        crate::support::command(&db, state.path())
            .env("DATABSE_URL", "postgres://nowhere/x")
            .env("VALHALLA_COUNTER", "redis://nowhere")
            .arg("validate")
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(
            "DATABSE_URL is set, but valhalla-ops reads no such variable: did you mean DATABASE_URL?"
        ),
        "{out:?}"
    );
    assert!(out.stderr.contains("did you mean VALHALLA_COUNTERS?"), "{out:?}");
    let quiet = finish(
        crate::support::command(&db, state.path())
            .env("DATABSE_URL", "postgres://nowhere/x")
            .args(["-q", "validate"])
            .output()
            .unwrap(),
    );
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""), "{quiet:?}");
    // The state's own warnings too.
    state.write(
        "disabled.yaml",
        "rate_limits:\n  - scope: user\n    key: idle\n    enabled: false\n",
    );
    let warned = run(&db, state.path(), &["validate"]);
    assert!(warned.stderr.contains("declared but disabled"), "{warned:?}");
    let quiet = run(&db, state.path(), &["-q", "validate"]);
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""), "{quiet:?}");
}

/// One row edited by hand into something invalid (a client name with a space, a rule key that
/// is no address) does not stop the server: it starts, authenticates and limits everyone else,
/// and the log names the row. A reconcile still refuses it, naming it.
#[test]
fn a_row_edited_into_nonsense_does_not_stop_the_server() {
    for db in all_backends() {
        let extra = format!(
            "  - name: victim\n    type: script\n    key_sha256: {}\nrate_limits:\n  - scope: ip\n    key: 10.0.0.0/8\n    max_requests: 5\n",
            "c".repeat(64)
        );
        let state = StateDir::new(&[("state.yaml", &crate::support::app::state_with(&extra))]);
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0, "{}", db.backend);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = valhalla_ops::store::Db::open(&db.url).await.unwrap();
            crate::support::exec(
                &store,
                "UPDATE api_clients SET name = 'Bad Name' WHERE name = 'victim'",
            )
            .await;
            crate::support::exec(
                &store,
                "UPDATE rate_limit_rules SET key = 'not-an-address' WHERE scope = 'ip'",
            )
            .await;
        });
        let serving = crate::support::Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
        let base = serving.base();
        let status = ureq::get(format!("{base}/system/feature-flags"))
            .header("Authorization", format!("Bearer {}", crate::support::app::READER))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 200, "{}: {}", db.backend, serving.log());
        let log = serving.log();
        assert_eq!(
            log.matches("the server leaves it out").count(),
            2,
            "{}: {log}",
            db.backend
        );
        assert!(
            log.contains("api_clients, row") && log.contains("rate_limit_rules, row"),
            "{log}"
        );
        let refused = run(&db, state.path(), &["reconcile", "--dry-run"]);
        assert_eq!(refused.code, 1, "{}: {refused:?}", db.backend);
        assert!(
            refused.stderr.contains("fix or remove the row by hand"),
            "{refused:?}"
        );
    }
}

#[test]
fn an_empty_state_directory_is_refused() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[]);
    let out = run(&db, state.path(), &["reconcile", "--dry-run"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("no state files (*.yaml, *.yml) under"),
        "{out:?}"
    );
}

#[test]
fn bad_database_url_and_missing_state_are_one_line_errors() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    let out = run(&db, state.path(), &["reconcile", "--database-url", "mysql://x"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "valhalla-ops: error: cannot open the store: unsupported database URL `mysql://x`: use postgres://… or sqlite://…"
    );
    let out = run(&db, std::path::Path::new("/nonexistent"), &["validate"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("valhalla-ops: error: cannot read state directory /nonexistent"),
        "{out:?}"
    );
}

/// A password never reaches the terminal, whether or not its URL parses.
#[test]
fn a_password_in_a_url_that_does_not_parse_is_not_printed() {
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    for url in [
        "postgres://u:hunter2pw@db1:5432,db2:5432/x",
        "postgres://u:hunter2pw@127.0.0.1:99999/x",
        "postgres://u:hunter2pw@a host/x",
        "postgres://u:hunter2/pw@127.0.0.1:1/x",
        "postgres://u@127.0.0.1:1/x?password=hunter2pw",
    ] {
        let out = run(
            &db,
            state.path(),
            &["reconcile", "--dry-run", "--database-url", url],
        );
        assert_eq!(out.code, 1, "{url}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{url}: {out:?}");
        assert!(!out.stderr.contains("hunter2"), "{url}: {out:?}");
    }
    for url in [
        "redis://:hunter2pw@127.0.0.1:99999/0",
        "redis://:hunter2pw@a host/0",
    ] {
        let out = run(
            &db,
            state.path(),
            &["serve", "--bind", "127.0.0.1:0", "--counters", url],
        );
        assert_eq!(out.code, 1, "{url}: {out:?}");
        assert!(!out.stderr.contains("hunter2"), "{url}: {out:?}");
    }
}

#[test]
fn serve_answers_and_shuts_down_cleanly_on_sigterm() {
    for db in all_backends() {
        let state = StateDir::sample();
        let mut serving = crate::support::Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
        let health = ureq::get(format!("{}/healthz", serving.base()))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        assert_eq!(health, r#"{"status":"ok"}"#, "{}", db.backend);
        let status = serving.stop(std::time::Duration::from_secs(10));
        assert!(status.success(), "{}: {status:?}", db.backend);
    }
}

#[test]
fn a_second_signal_forces_exit_while_a_request_is_in_flight() {
    use std::time::Duration;
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &crate::support::app::state_with(""))]);
    assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
    let mut serving = crate::support::Process::start(
        &db,
        &state,
        &["serve", "--bind", "127.0.0.1:0", "--lock-timeout", "60"],
    );
    let base = serving.base();
    // A write that waits for another writer's lock: the graceful shutdown waits for it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let holder = runtime.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
        conn
    });
    std::thread::spawn(move || {
        let _ = ureq::post(format!("{base}/system/ratelimits/rules"))
            .header(
                "Authorization",
                format!("Bearer {}", crate::support::app::OPERATOR),
            )
            .content_type("application/json")
            .send(r#"{"scope": "user", "key": "waiting"}"#);
    });
    std::thread::sleep(Duration::from_millis(300));
    serving.signal();
    serving.wait_log("a second signal forces exit", Duration::from_secs(5));
    assert!(
        serving.exited(Duration::from_millis(700)).is_none(),
        "the first signal waits for the request in flight"
    );
    serving.signal();
    let status = serving
        .exited(Duration::from_secs(5))
        .expect("the second signal forces exit");
    assert_eq!(status.code(), Some(130), "{}", serving.log());
    assert!(
        serving.log().contains("a second signal: exiting now"),
        "{}",
        serving.log()
    );
    runtime.block_on(async { drop(holder) });
}

/// A request whose body never comes does not hold a shutdown up: it is answered 503 at once
/// (it once held a SIGTERM for the whole body deadline).
#[test]
fn an_unfinished_request_body_does_not_delay_a_shutdown() {
    use std::io::Write as _;
    use std::time::Duration;
    let db = crate::support::sqlite();
    let state = StateDir::sample();
    let mut serving = crate::support::Process::start(
        &db,
        &state,
        &["serve", "--bind", "127.0.0.1:0", "--body-timeout", "60s"],
    );
    let addr = serving.base().trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /system/ratelimits/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Well within the body deadline of a minute.
    let status = serving.stop(Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", serving.log());
    slow.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut slow, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("shutting down"), "{answer}");
}

#[test]
fn diff_plans_between_two_state_directories_without_a_database() {
    let db = crate::support::sqlite();
    let old = StateDir::sample_as_shipped();
    let lockdown = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lockdown");
    let (old_path, new_path) = (old.path().to_str().unwrap(), lockdown.to_str().unwrap());
    let text = run(
        &db,
        old.path(),
        &["diff", old_path, new_path, "--detailed-exitcode"],
    );
    assert_eq!(text.code, 2, "{text:?}");
    assert!(
        text.stdout
            .contains("~ update     weweb\n      active: true → false\n"),
        "{text:?}"
    );
    assert!(text.stdout.contains("+ create     incident-banner"), "{text:?}");
    assert!(
        text.stdout
            .contains("Plan: 1 to create, 5 to update, 0 to delete, 0 to deactivate."),
        "{text:?}"
    );
    let json = run(&db, old.path(), &["diff", old_path, new_path, "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (
            doc["summary"]["create"].as_i64(),
            doc["summary"]["update"].as_i64()
        ),
        (Some(1), Some(5))
    );
    let markdown = run(
        &db,
        old.path(),
        &["diff", old_path, new_path, "--format", "markdown"],
    );
    assert!(
        markdown.stdout.starts_with("### valhalla-ops plan"),
        "{markdown:?}"
    );
    // The same state on both sides: nothing to do.
    let same = run(
        &db,
        old.path(),
        &["diff", old_path, old_path, "--detailed-exitcode"],
    );
    assert_eq!(same.code, 0, "{same:?}");
    // No database is touched: the default SQLite file was never created.
    assert!(!old.path().join("valhalla-ops.db").exists());
    // Emptying a file is refused as the apply would be, and an invalid side is reported.
    let emptied = StateDir::sample();
    emptied.write("rate_limits.yaml", "version: 1\n");
    let refused = run(
        &db,
        old.path(),
        &["diff", old_path, emptied.path().to_str().unwrap()],
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stdout.contains("- delete     global:*")
            && refused.stderr.contains("refusing to remove 7 of 7"),
        "{refused:?}"
    );
    emptied.write("broken.yaml", "rate_limits:\n  - scope: nope\n");
    let invalid = run(
        &db,
        old.path(),
        &["diff", old_path, emptied.path().to_str().unwrap()],
    );
    assert_eq!(invalid.code, 1, "{invalid:?}");
    assert!(
        invalid
            .stderr
            .contains("broken.yaml:2:12: error: rate_limits[0].scope: unknown scope `nope`"),
        "{invalid:?}"
    );
}

#[test]
fn completions_and_the_man_page_generate() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[]);
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&db, state.path(), &["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {out:?}");
        for word in ["reconcile", "dry-run", "overrides", "diff"] {
            assert!(out.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    let man = run(&db, state.path(), &["man"]);
    assert_eq!(man.code, 0, "{man:?}");
    assert!(
        man.stdout.lines().any(|l| l.starts_with(".TH valhalla-ops")),
        "no .TH header"
    );
    assert!(man.stdout.contains("reconcile"), "man page lacks the subcommands");
    // Every page the top page refers to exists (`man --out DIR` writes them all).
    let (_pages, dir) = scratch("man1");
    let written = run(&db, state.path(), &["man", "--out", dir.to_str().unwrap()]);
    assert_eq!(written.code, 0, "{written:?}");
    let referred: Vec<String> = man
        .stdout
        .lines()
        .filter_map(|l| l.strip_suffix("(1)"))
        .map(|page| page.replace("\\-", "-"))
        .collect();
    assert!(referred.len() >= 10, "{referred:?}");
    for page in referred {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}: {text}");
    }
    assert!(
        dir.join("valhalla-ops-overrides-clear.1").exists(),
        "nested subcommands too"
    );
    assert!(
        !man.stdout.contains("valhalla\\-ops\\-help"),
        "no page is listed that does not exist"
    );
    assert!(
        !state.path().join("valhalla-ops.db").exists(),
        "no store is needed"
    );
}

/// The `valhalla-ops …` command lines of a CI file's shell steps.
fn ci_commands(steps: Vec<String>) -> Vec<Vec<String>> {
    steps
        .iter()
        .flat_map(|s| s.lines().map(str::trim).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| line.starts_with("valhalla-ops "))
        .map(|line| line.split_whitespace().skip(1).map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_ci_examples_are_valid_yaml_and_use_real_commands() {
    use clap::CommandFactory as _;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    let read = |name: &str| -> serde_json::Value {
        serde_yaml::from_str(&std::fs::read_to_string(root.join(name)).unwrap()).unwrap()
    };
    let github = read("github-actions.yml");
    let mut github_runs = Vec::new();
    for job in github["jobs"].as_object().unwrap().values() {
        for step in job["steps"].as_array().unwrap() {
            github_runs.extend(step["run"].as_str().map(str::to_owned));
        }
    }
    let gitlab = read("gitlab-ci.yml");
    let gitlab_scripts: Vec<String> = [
        ("default", "before_script"),
        ("plan", "script"),
        ("apply", "script"),
    ]
    .iter()
    .flat_map(|(job, part)| {
        gitlab[job][part]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
    })
    .collect();

    let cli = valhalla_ops::cli::Cli::command();
    for (name, commands) in [
        ("github", ci_commands(github_runs)),
        ("gitlab", ci_commands(gitlab_scripts)),
    ] {
        let used: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
        for needed in ["--version", "validate", "diff", "reconcile"] {
            assert!(used.contains(&needed), "{name} does not run {needed}: {used:?}");
        }
        for command in &commands {
            if command[0] == "--version" {
                continue;
            }
            let sub = cli
                .find_subcommand(&command[0])
                .unwrap_or_else(|| panic!("{name}: no subcommand {}", command[0]));
            for flag in command.iter().filter_map(|w| w.strip_prefix("--")) {
                assert!(
                    sub.get_arguments()
                        .chain(cli.get_arguments())
                        .any(|a| a.get_long() == Some(flag)),
                    "{name}: `{}` has no --{flag}",
                    command[0]
                );
            }
        }
    }
}

#[test]
fn the_kubernetes_example_runs_the_image_with_real_commands_and_settings() {
    use clap::{CommandFactory as _, Parser as _};
    use serde::Deserialize as _;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes/valhalla-ops.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let documents: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = documents.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Deployment", "PodDisruptionBudget", "Service"]);
    let pod = &documents[0]["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let container = &pod["containers"][0];
    let cli = valhalla_ops::cli::Cli::command();
    // Every environment variable a container sets is one the binary reads.
    let known: Vec<String> = cli
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .chain(cli.get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for (one, first) in [(init, "migrate"), (container, "serve")] {
        // The image scripts/build-image builds, at this version, pushed to a registry.
        let image = one["image"].as_str().unwrap();
        assert_eq!(
            image.rsplit_once('/').map(|(_, name)| name),
            Some(format!("valhalla-ops:{}", env!("CARGO_PKG_VERSION")).as_str()),
            "{image}"
        );
        let args: Vec<String> = one["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(args[0], first);
        // The arguments parse as the binary would parse them.
        let parsed = valhalla_ops::cli::Cli::try_parse_from(
            std::iter::once("valhalla-ops".to_owned()).chain(args.clone()),
        );
        assert!(
            parsed.is_ok(),
            "{args:?}: {}",
            parsed.err().map(|e| e.to_string()).unwrap_or_default()
        );
        for var in one["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap();
            assert!(
                known.iter().any(|k| k == name),
                "{name} is not read by valhalla-ops"
            );
        }
        assert_eq!(one["securityContext"]["readOnlyRootFilesystem"], true);
    }
    assert_eq!(pod["securityContext"]["runAsUser"], 65532, "the image's user");
    let probes = [
        &container["startupProbe"],
        &container["readinessProbe"],
        &container["livenessProbe"],
    ];
    assert_eq!(
        probes.map(|p| p["httpGet"]["path"].as_str().unwrap()),
        ["/readyz", "/readyz", "/healthz"]
    );
    assert_eq!(
        documents[1]["spec"]["selector"], documents[0]["spec"]["selector"],
        "the disruption budget covers the replicas"
    );
}

#[test]
fn a_subcommand_help_lists_only_the_global_options_it_uses() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[]);
    let help = |args: &[&str]| {
        let out = run(&db, state.path(), args);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    for ask in [
        &["keys", "generate", "--help"][..],
        &["help", "keys", "generate"],
        &["keys", "generate", "-h"],
    ] {
        let keys = help(ask);
        assert!(
            keys.contains("--role") && keys.contains("--verbose"),
            "{ask:?}:\n{keys}"
        );
        for unused in ["--database-url", "--state", "--lock-timeout", "--max-file-mib"] {
            assert!(
                !keys.contains(unused),
                "{unused} does nothing for keys generate ({ask:?}):\n{keys}"
            );
        }
    }
    let validate = help(&["validate", "--help"]);
    assert!(
        validate.contains("--state") && !validate.contains("--database-url"),
        "{validate}"
    );
    let reconcile = help(&["reconcile", "--help"]);
    for used in ["--database-url", "--state", "--lock-timeout", "--max-file-mib"] {
        assert!(reconcile.contains(used), "{used}:\n{reconcile}");
    }
    // Still accepted where it is not listed, before or after the subcommand.
    assert_eq!(
        run(&db, state.path(), &["--state", "x", "keys", "generate"]).code,
        0
    );
    assert_eq!(
        run(&db, state.path(), &["schema", "--database-url", "sqlite://x.db"]).code,
        0
    );
    assert_eq!(
        run(&db, state.path(), &["validate", "--max-file-mib", "2"]).code,
        1,
        "an empty directory"
    );
}

#[test]
fn version_names_the_commit_the_build_and_what_is_compiled_in() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[]);
    let long = run(&db, state.path(), &["--version"]);
    assert_eq!(long.code, 0, "{long:?}");
    let lines: Vec<&str> = long.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", long.stdout);
    assert_eq!(lines[0], format!("valhalla-ops {}", env!("CARGO_PKG_VERSION")));
    // The commit of the checkout the tests were built in (a source archive says `unknown`).
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).map(std::path::PathBuf::from);
    let commit = lines[1].strip_prefix("commit: ").expect(lines[1]);
    if top.and_then(|t| t.canonicalize().ok()) == std::path::Path::new(root).canonicalize().ok() {
        let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap();
        assert!(
            commit == head || commit == format!("{head}-dirty"),
            "{commit} is not HEAD ({head})"
        );
    } else {
        assert_eq!(commit, "unknown");
    }
    assert!(
        lines[2].starts_with("build: x86_64-") || lines[2].starts_with("build: aarch64-"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains(" build, rustc 1."), "{}", lines[2]);
    let features = lines[3].strip_prefix("features: ").expect(lines[3]);
    for compiled_in in ["sqlite", "postgres", "redis-counters", "grpc-envoy-rls"] {
        assert!(features.split(' ').any(|f| f == compiled_in), "{features}");
    }
    // -V: one line, with the commit.
    let short = run(&db, state.path(), &["-V"]);
    assert_eq!(
        short.stdout,
        format!("valhalla-ops {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn health_asks_the_serve_on_this_host_and_fails_when_it_is_not_ready() {
    for db in all_backends() {
        let state = StateDir::sample();
        let mut serving = crate::support::Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
        let base = serving.base();
        let at = base.trim_start_matches("http://");
        let ready = run(&db, state.path(), &["health", "--bind", at]);
        assert_eq!(ready.code, 0, "{}: {ready:?}", db.backend);
        assert!(ready.stdout.contains(r#""status":"ready""#), "{ready:?}");
        // The image's setting: the server binds every address, health asks loopback.
        let port = at.rsplit(':').next().unwrap();
        let live = command(&db, state.path())
            .args(["health", "--live"])
            .env("VALHALLA_BIND", format!("0.0.0.0:{port}"))
            .output()
            .unwrap();
        let live = finish(live);
        assert_eq!(live.code, 0, "{live:?}");
        assert_eq!(live.stdout, "{\"status\":\"ok\"}\n");
        assert!(serving.stop(std::time::Duration::from_secs(10)).success());
        let gone = run(&db, state.path(), &["health", "--bind", at]);
        assert_eq!(gone.code, 1, "{gone:?}");
        assert!(
            gone.stderr.contains(&format!("cannot ask http://{at}/readyz")),
            "{gone:?}"
        );
    }
}

#[test]
fn health_fails_on_an_answer_that_is_not_200_and_says_it_on_one_line() {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let body = "{\"error\":\"no database\"}\n\u{1b}[2Jforged: line";
        let _ = write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let db = crate::support::sqlite();
    let state = StateDir::new(&[]);
    let out = run(&db, state.path(), &["health", "--bind", &at]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("answered 503"), "{out:?}");
    assert!(!out.stderr.contains('\u{1b}'), "escaped: {out:?}");
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out:?}");
}
