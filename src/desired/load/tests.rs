//! Loader tests: one per error kind with its exact position, warnings, and whole-directory runs.

use std::path::Path;

use chrono::{TimeZone, Utc};

use super::*;
use crate::desired::{StateDir, load_dir, raw};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn load(files: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    let mut loader = Loader::new(now());
    for (name, text) in files {
        loader.add_file(Path::new(name), text);
    }
    loader.finish()
}

/// The diagnostics of an invalid load, as printed.
fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Err(LoadError::Invalid { errors, .. }) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected errors, got {other:?}"),
    }
}

fn one_error(text: &str) -> String {
    let errs = errors(&[("s.yaml", text)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn a_full_file_loads_with_defaults() {
    let text = format!(
        "version: 1\nrate_limits:\n  - scope: global\n  - scope: ip\n    key: 10.0.0.0/8\n    max_requests: 0\n    shadow: true\n  - scope: api_key\n    key: bot\nclients:\n  - name: bot\n    type: script\n    key_sha256: {HASH_A}\nmaintenance:\n  mode: read_only\n  reason: migration\n  windows:\n    - name: w1\n      starts_at: 2026-12-01T02:00:00Z\n      ends_at: 2026-12-01T04:00:00+01:00\nfeature_flags:\n  - name: f\n    enabled: true\ndeployment_profile: staging\n"
    );
    let loaded = load(&[("s.yaml", &text)]).unwrap();
    let s = &loaded.state;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(s.rules.len(), 3);
    let global = &s.rules.iter().find(|r| r.scope == Scope::Global).unwrap();
    assert_eq!(
        (
            global.key.as_str(),
            global.window_seconds.get(),
            global.max_requests.get()
        ),
        ("*", 60, 60)
    );
    assert!(global.enabled && !global.shadow);
    let ip = s.rules.iter().find(|r| r.scope == Scope::Ip).unwrap();
    assert_eq!((ip.max_requests.get(), ip.shadow), (0, true));
    assert_eq!(
        s.clients[0].role,
        crate::domain::Role::Reader,
        "role defaults to reader"
    );
    assert!(s.clients[0].active);
    assert_eq!(s.windows[0].mode, crate::domain::WindowMode::Maintenance);
    let crate::calendar::When::Once(once) = &s.windows[0].when else {
        panic!("a one-off window")
    };
    assert_eq!(once.ends_at, Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap());
    assert_eq!(
        s.maintenance.as_ref().unwrap().mode,
        crate::domain::Mode::ReadOnly
    );
    assert_eq!(s.profile.as_ref().unwrap().name.as_str(), "staging");
    assert!(s.flags[0].enabled);
}

#[test]
fn a_file_that_declares_nothing_is_an_error_unless_it_says_version_1() {
    // An emptied file would otherwise delete, silently, everything it used to declare.
    let message = "the file declares nothing; to declare an empty file on purpose, write `version: 1`";
    assert_eq!(
        errors(&[("a.yaml", ""), ("b.yaml", "# nothing yet\n"), ("c.yaml", "~\n")]),
        ["a.yaml", "b.yaml", "c.yaml"].map(|f| format!("{f}:1:1: {message}"))
    );
    let loaded = load(&[
        ("a.yaml", "version: 1\n"),
        ("b.yaml", "# kept for later\nversion: 1\n"),
    ])
    .unwrap();
    assert_eq!(loaded.state, DesiredState::default());
    assert_eq!(loaded.files, 2);
}

#[test]
fn syntax_error_has_its_position() {
    assert_eq!(
        one_error("rate_limits:\n  - scope: ip\n   key: [\n"),
        "s.yaml:3:4: did not find expected '-' indicator, while parsing a block collection at line 2 column 3"
    );
}

#[test]
fn unknown_field_points_at_the_key() {
    let e = one_error("rate_limits:\n  - scope: ip\n    key: 10.0.0.1\n    windw_seconds: 5\n");
    assert!(
        e.starts_with("s.yaml:4:5: unknown field `windw_seconds`, expected one of"),
        "{e}"
    );
}

#[test]
fn unknown_top_level_key_points_at_the_key() {
    let e = one_error("version: 1\nrate_limit:\n  - scope: ip\n");
    assert!(e.starts_with("s.yaml:2:1: unknown field `rate_limit`"), "{e}");
}

#[test]
fn wrong_type_points_at_the_value() {
    let e = one_error("rate_limits:\n  - scope: ip\n    key: 10.0.0.1\n    max_requests: lots\n");
    assert!(
        e.starts_with("s.yaml:4:19: rate_limits[0].max_requests: invalid type: string \"lots\""),
        "{e}"
    );
}

#[test]
fn bad_enum_value_lists_the_choices() {
    let e = one_error("rate_limits:\n  - scope: ipp\n    key: x\n");
    assert_eq!(
        e,
        "s.yaml:2:12: rate_limits[0].scope: unknown scope `ipp`, expected one of: ip, user, api_key, global"
    );
}

#[test]
fn missing_field_points_at_the_item() {
    let e = one_error("clients:\n  - name: a\n    type: script\n");
    assert_eq!(e, "s.yaml:2:5: missing field `key_sha256`");
}

#[test]
fn bad_rule_key_for_its_scope() {
    assert_eq!(
        one_error("rate_limits:\n  - scope: ip\n    key: 10.0.0.1/8\n"),
        "s.yaml:3:10: rate_limits[0].key: invalid ip key `10.0.0.1/8`: host bits are set; did you mean `10.0.0.0/8`?"
    );
    assert_eq!(
        one_error("rate_limits:\n  - scope: user\n"),
        "s.yaml:2:5: a rule of scope user needs a key"
    );
}

#[test]
fn window_seconds_out_of_range() {
    let e = one_error("rate_limits:\n  - scope: global\n    window_seconds: 90000\n");
    assert_eq!(
        e,
        "s.yaml:3:21: rate_limits[0].window_seconds must be between 1 and 86400, not 90000"
    );
    // A unit written after the number is the usual slip: the message says what is wanted.
    let e = one_error("rate_limits:\n  - scope: global\n    window_seconds: 60s\n");
    assert_eq!(
        e,
        "s.yaml:3:21: rate_limits[0].window_seconds: invalid type: string \"60s\", expected a whole number of seconds, e.g. 60"
    );
}

#[test]
fn bad_client_name_and_hash() {
    let e = one_error(&format!(
        "clients:\n  - name: Bad Name\n    type: script\n    key_sha256: {HASH_A}\n"
    ));
    assert!(
        e.starts_with("s.yaml:2:11: clients[0].name: invalid client name `Bad Name`"),
        "{e}"
    );
    let e = one_error("clients:\n  - name: ok\n    type: script\n    key_sha256: abc\n");
    assert!(
        e.starts_with("s.yaml:4:17: clients[0].key_sha256: key_sha256 must be the 64 hex digits"),
        "{e}"
    );
}

#[test]
fn naive_times_and_inverted_windows() {
    let e = one_error(
        "maintenance:\n  windows:\n    - name: w\n      starts_at: 2026-12-01T02:00:00\n      ends_at: 2026-12-01T04:00:00Z\n",
    );
    assert!(
        e.starts_with(
            "s.yaml:4:18: maintenance.windows[0].starts_at: invalid time `2026-12-01T02:00:00`: use RFC 3339 with an offset"
        ),
        "{e}"
    );
    let e = one_error(
        "maintenance:\n  windows:\n    - name: w\n      starts_at: 2026-12-01T04:00:00Z\n      ends_at: 2026-12-01T02:00:00Z\n",
    );
    assert_eq!(e, "s.yaml:5:16: window w: ends_at must be after starts_at");
}

#[test]
fn unsupported_version() {
    assert_eq!(
        one_error("version: 2\n"),
        "s.yaml:1:10: unsupported version 2; this valhalla-ops reads version 1"
    );
}

#[test]
fn duplicates_across_files_name_both_places() {
    let a = "rate_limits:\n  - scope: ip\n    key: 10.0.0.1\n";
    let b = "# b\nrate_limits:\n  - scope: ip\n    key: 10.0.0.1/32\n";
    assert_eq!(
        errors(&[("a.yaml", a), ("b.yaml", b)]),
        ["b.yaml:4:10: rate-limit rule ip:10.0.0.1 is declared twice (first at a.yaml:3:10)"]
    );
    let p = "deployment_profile: prod\n";
    assert_eq!(
        errors(&[("a.yaml", p), ("b.yaml", p)]),
        ["b.yaml:1:21: deployment_profile is declared twice (first at a.yaml:1:21)"]
    );
}

/// The sinks of `notifications:`: each checked on its own and against the others, each error
/// at its place.
#[test]
fn notification_sinks_are_checked_where_they_are_written() {
    let sinks = |items: &str| format!("notifications:\n{items}");
    let ok = load(&[(
        "s.yaml",
        &sinks(
            "  - name: pager\n    type: pagerduty\n    url_env: PD_URL\n    secret_env: PD_KEY\n    min_severity: critical\n\
             \x20 - name: chat\n    type: slack\n    url_env: SLACK_URL\n    events: [override.*, mode.changed]\n",
        ),
    )])
    .unwrap();
    let declared = ok.state.notifications.unwrap().0;
    // Sorted by name; defaults filled in.
    assert_eq!(
        declared.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["chat", "pager"]
    );
    assert_eq!(declared[1].events, [crate::domain::EventPattern::All]);
    assert_eq!(declared[0].min_severity, crate::domain::Severity::Info);
    assert!(declared[0].takes(
        crate::domain::EventType::OverrideExpired,
        crate::domain::Severity::Info
    ));
    assert!(!declared[0].takes(
        crate::domain::EventType::ReconcileApplied,
        crate::domain::Severity::Critical
    ));

    assert_eq!(
        one_error(&sinks(
            "  - name: hook\n    type: webhook\n    url_env: HOOK_URL\n"
        )),
        "s.yaml:2:5: sink hook is a webhook and needs secret_env: the variable that holds the key its events are signed with"
    );
    assert_eq!(
        one_error(&sinks(
            "  - name: chat\n    type: slack\n    url_env: SLACK_URL\n    secret_env: SLACK_SECRET\n"
        )),
        "s.yaml:2:5: sink chat is a slack sink and takes no secret_env: its URL is the secret"
    );
    assert_eq!(
        one_error(&sinks(
            "  - name: pager\n    type: pagerduty\n    url_env: PD_URL\n    secret_env: PD_KEY\n"
        )),
        "s.yaml:2:5: sink pager is a pagerduty sink, which pages for critical events only: write min_severity: critical"
    );
    assert_eq!(
        one_error(&sinks(
            "  - name: chat\n    type: slack\n    url_env: https://hooks.slack.com/x\n"
        )),
        "s.yaml:4:14: notifications[0].url_env: invalid environment variable name `https://hooks.slack.com/x`: use A-Z, 0-9 and `_`, not starting with a digit (the value itself never belongs in git)"
    );
    let typo = one_error(&sinks(
        "  - name: chat\n    type: slack\n    url_env: SLACK_URL\n    events: [overide.*]\n",
    ));
    assert!(
        typo.starts_with("s.yaml:5:14: notifications[0].events[0]: event pattern `overide.*` matches no event: write `*`, a family (client.*, "),
        "{typo}"
    );
    let twice =
        "  - name: chat\n    type: slack\n    url_env: A\n  - name: chat\n    type: slack\n    url_env: B\n";
    assert_eq!(
        one_error(&sinks(twice)),
        "s.yaml:5:11: sink chat is declared twice"
    );
    let one = sinks("  - name: chat\n    type: slack\n    url_env: A\n");
    assert_eq!(
        errors(&[("a.yaml", &one), ("b.yaml", &one)]),
        ["b.yaml:2:3: notifications is declared twice (first at a.yaml:2:3)"]
    );
}

#[test]
fn dangling_api_key_rule_is_an_error() {
    let e = one_error("rate_limits:\n  - scope: api_key\n    key: ghost\n");
    assert_eq!(
        e,
        "s.yaml:3:10: rule api_key:ghost names client `ghost`, which no state file declares"
    );
}

#[test]
fn two_clients_with_one_key_is_an_error() {
    let text = format!(
        "clients:\n  - name: a\n    type: script\n    key_sha256: {HASH_A}\n  - name: b\n    type: script\n    key_sha256: {}\n",
        HASH_A.to_uppercase()
    );
    assert_eq!(
        one_error(&text),
        "s.yaml:5:11: clients a and b have the same key_sha256; every client needs its own key"
    );
}

#[test]
fn every_error_of_a_directory_is_reported_sorted() {
    let a = "rate_limits:\n  - scope: nope\n  - scope: ip\n    key: bad\n  - scope: global\n    extra: 1\n";
    let b = "clients:\n  - name: x\n    type: robot\n    key_sha256: 00\n";
    let errs = errors(&[("b.yaml", b), ("a.yaml", a)]);
    let places: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        places,
        ["a.yaml:2:12", "a.yaml:4:10", "a.yaml:6:5", "b.yaml:3:11"],
        "{errs:#?}"
    );
}

#[test]
fn warnings_are_not_errors() {
    let text = "rate_limits:\n  - scope: global\n    enabled: false\nmaintenance:\n  windows:\n    - name: old\n      starts_at: 2020-01-01T00:00:00Z\n      ends_at: 2020-01-01T01:00:00Z\n    - name: a\n      starts_at: 2026-12-01T00:00:00Z\n      ends_at: 2026-12-01T03:00:00Z\n    - name: b\n      starts_at: 2026-12-01T02:00:00Z\n      ends_at: 2026-12-01T05:00:00Z\n";
    let loaded = load(&[("s.yaml", text)]).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "s.yaml:3:14: rule global:* is declared but disabled",
            "s.yaml:8:16: window old is wholly in the past",
            "s.yaml:12:13: window b overlaps window a",
        ]
    );
    assert_eq!(loaded.state.rules.len(), 1);
    assert_eq!(loaded.state.windows.len(), 3);
}

#[test]
fn invalid_load_keeps_warnings_and_returns_no_state() {
    let text = "rate_limits:\n  - scope: global\n    enabled: false\n  - scope: bogus\n";
    match load(&[("s.yaml", text)]) {
        Err(LoadError::Invalid { errors, warnings, .. }) => {
            assert_eq!((errors.len(), warnings.len()), (1, 1))
        }
        other => panic!("{other:?}"),
    }
}

/// Diagnostics as printed, errors then warnings.
fn printed(result: Result<Loaded, LoadError>) -> Vec<String> {
    let (errors, warnings) = match result {
        Ok(loaded) => (Vec::new(), loaded.warnings),
        Err(LoadError::Invalid { errors, warnings, .. }) => (errors, warnings),
        Err(other) => panic!("{other:?}"),
    };
    errors.iter().chain(&warnings).map(ToString::to_string).collect()
}

#[test]
fn a_load_that_lets_texts_go_positions_as_one_that_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = "rate_limits:\n  - scope: ip\n    key: 10.0.0.1\n  - scope: global\n    enabled: false\n  - scope: api_key\n    key: ghost\n";
    let b = "# the same rule again\nrate_limits:\n  - scope: user\n    key: u\n  - scope: ip\n    key: 10.0.0.1/32\nmaintenance:\n  windows:\n    - name: old\n      starts_at: 2020-01-01T00:00:00Z\n      ends_at: 2020-01-01T01:00:00Z\n";
    std::fs::write(dir.path().join("a.yaml"), a).unwrap();
    std::fs::write(dir.path().join("b.yaml"), b).unwrap();
    let state = StateDir::new(dir.path());
    let let_go = state.load(now());
    let held = state.load_to_follow(now());
    let shown = printed(let_go);
    assert_eq!(shown, printed(held));
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("b.yaml").display().to_string();
    assert_eq!(
        shown,
        [
            format!("{a}:7:10: rule api_key:ghost names client `ghost`, which no state file declares"),
            format!("{b}:6:10: rate-limit rule ip:10.0.0.1 is declared twice (first at {a}:3:10)"),
            format!("{a}:5:14: rule global:* is declared but disabled"),
            format!("{b}:11:16: window old is wholly in the past"),
        ]
    );
    // A valid load that let its texts go has no origin to follow the directory with.
    std::fs::write(dir.path().join("a.yaml"), "version: 1\n").unwrap();
    assert!(state.load(now()).unwrap().origin.is_none());
    assert!(state.load_to_follow(now()).unwrap().origin.is_some());
}

#[test]
fn a_file_changed_since_it_was_read_is_not_positioned_by_its_new_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    let text = "rate_limits:\n  - scope: ip\n    key: 10.0.0.1\n";
    std::fs::write(&path, text).unwrap();
    let source = |hash| Source {
        path: path.clone(),
        text: Text::OnDisk {
            len: text.len(),
            hash,
            max_bytes: 1024,
        },
        index: OnceLock::new(),
    };
    let key = "rate_limits[0].key";
    assert_eq!(
        source(Text::hash(text)).index().value(key),
        Pos { line: 3, column: 10 }
    );
    assert_eq!(
        source(Text::hash("another text")).index().value(key),
        Pos { line: 1, column: 1 }
    );
}

#[test]
fn the_shipped_state_directory_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("state");
    let loaded = load_dir(&dir, now()).unwrap();
    assert!(
        loaded.state.rules.len() >= 5 && loaded.state.clients.len() >= 4,
        "{:?}",
        loaded.state
    );
}

#[test]
fn a_directory_without_state_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not state").unwrap();
    assert!(matches!(load_dir(dir.path(), now()), Err(LoadError::Empty(_))));
    std::fs::write(dir.path().join("empty.yaml"), "version: 1\n").unwrap();
    assert_eq!(
        load_dir(dir.path(), now()).unwrap().state,
        DesiredState::default()
    );
}

#[test]
fn a_missing_directory_is_an_io_error() {
    assert!(matches!(
        load_dir(Path::new("/nonexistent/state"), now()),
        Err(LoadError::Io { .. })
    ));
}

#[test]
fn every_example_state_is_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let dir = entry.unwrap().path();
        // `ci/`, `envoy/` and `kubernetes/` hold pipelines and configurations, not states.
        let state = dir
            .file_name()
            .is_some_and(|n| !["ci", "envoy", "kubernetes"].contains(&n.to_str().unwrap_or_default()));
        if dir.is_dir() && state {
            load_dir(&dir, now()).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn the_committed_schema_is_the_one_the_command_prints() {
    let committed = include_str!("../../../schema/valhalla-ops.schema.json");
    assert!(
        committed == raw::json_schema(),
        "schema/valhalla-ops.schema.json is stale: run `valhalla-ops schema > schema/valhalla-ops.schema.json`"
    );
}

#[test]
fn the_schema_accepts_the_shipped_states_and_rejects_bad_input() {
    let schema: serde_json::Value = serde_json::from_str(&raw::json_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in [root.join("state"), root.join("examples/lockdown")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let value: serde_json::Value =
                serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 8);
    let hash = "a".repeat(64);
    for bad in [
        "rate_limit: []".to_owned(),
        "rate_limits:\n  - scope: ipp\n    key: x\n".to_owned(),
        "rate_limits:\n  - scope: ip\n    key: x\n    windw_seconds: 5\n".to_owned(),
        "rate_limits:\n  - scope: global\n    window_seconds: 0\n".to_owned(),
        "rate_limits:\n  - scope: global\n    max_requests: lots\n".to_owned(),
        "clients:\n  - name: Bad Name\n    type: script\n    key_sha256: {hash}\n".replace("{hash}", &hash),
        "clients:\n  - name: ok\n    type: robot\n    key_sha256: {hash}\n".replace("{hash}", &hash),
        "clients:\n  - name: ok\n    type: script\n    key_sha256: abc\n".to_owned(),
        "clients:\n  - name: ok\n    type: script\n".to_owned(),
        "maintenance:\n  mode: frozen\n".to_owned(),
        "version: 2\n".to_owned(),
    ] {
        let value: serde_json::Value = serde_yaml::from_str(&bad).unwrap();
        assert!(!validator.is_valid(&value), "the schema accepts:\n{bad}");
    }
}

/// The shipped state files: valid seeds for the mutation property below.
const SEEDS: &[&str] = &[
    include_str!("../../../state/clients.yaml"),
    include_str!("../../../state/maintenance.yaml"),
    include_str!("../../../state/rate_limits.yaml"),
    include_str!("../../../state/settings.yaml"),
    include_str!("../../../examples/lockdown/maintenance.yaml"),
];

/// How many lines YAML (and an editor) sees at most: CR, LF, NEL, LS and PS each break a line.
fn yaml_lines(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    1 + text
        .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .count()
}

/// Loads `bytes` as one state file the way a directory is loaded. It must not panic, must
/// finish quickly, and every error must point inside the file on one line.
fn load_bytes_as_a_user_would(bytes: Vec<u8>) {
    let started = std::time::Instant::now();
    let lines = yaml_lines(&bytes);
    let path = Path::new("fuzzed.yaml");
    let mut loader = Loader::new(now());
    match files::decode(bytes) {
        Ok(text) => loader.add_text(path, text),
        Err(refusal) => loader.add_refusal(path, refusal),
    }
    if let Err(LoadError::Invalid { errors, warnings, .. }) = loader.finish() {
        assert!(!errors.is_empty());
        for d in errors.iter().chain(&warnings) {
            assert_eq!(d.file, path);
            assert!(d.pos.line >= 1 && d.pos.column >= 1, "{d:?}");
            assert!(d.pos.line <= lines, "{d:?} is past the file's {lines} lines");
            let shown = d.to_string();
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 256, ..Default::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_error_is_positioned(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1024)
    ) {
        load_bytes_as_a_user_would(bytes);
    }

    #[test]
    fn mutated_valid_states_never_panic_and_every_error_is_positioned(
        seed in proptest::sample::select(SEEDS),
        // (where, what, how): overwrite, insert or delete a byte, or insert a YAML token.
        edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY, 0u8..4), 1..8),
    ) {
        const TOKENS: &[&[u8]] = &[b"[", b"{", b": ", b"- ", b"\n  ", b"&a ", b"*a", b"!!str ", b"\"", b"'", b"#", b"---\n", b"~", b"\xef\xbb\xbf", b"\xff"];
        let mut bytes = seed.as_bytes().to_vec();
        for (at, byte, how) in edits {
            let at = at % (bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {
                    let token = TOKENS[usize::from(byte) % TOKENS.len()];
                    bytes.splice(at..at, token.iter().copied());
                }
            }
        }
        load_bytes_as_a_user_would(bytes);
    }
}

#[test]
fn positions_count_lines_as_yaml_does() {
    // Found by the fuzz target: YAML breaks lines at a lone CR too, so an error after old
    // Mac line ends is on a line an LF count would not reach. Editors count the same way.
    let text = "version: 1\r\r\rfeature_flags:\r  - name: [\r";
    assert_eq!(
        one_error(text).split(':').nth(1),
        Some("6"),
        "{}",
        one_error(text)
    );
    load_bytes_as_a_user_would(text.as_bytes().to_vec());
}

#[test]
fn an_error_at_the_end_of_a_file_without_a_final_line_break_is_inside_the_file() {
    // Found by the fuzz target: libyaml put this one line below the last.
    let text = "# yaml\n\n\nge-server: $schema\n\n\ns.schem";
    let error = one_error(text);
    assert!(error.starts_with("s.yaml:7:8:"), "{error}");
    load_bytes_as_a_user_would(text.as_bytes().to_vec());
}

#[test]
fn a_node_the_index_places_past_the_end_is_reported_inside_the_file() {
    // Found by the fuzz target: a complex key (`?`) with no value, before trailing blank lines.
    let text = format!("# c\n{}?\n{}# end", "\n".repeat(3), "\n".repeat(3));
    let error = one_error(&text);
    load_bytes_as_a_user_would(text.into_bytes());
    assert!(error.starts_with("s.yaml:"), "{error}");
}

#[test]
fn a_value_yaml_reads_as_a_number_says_to_quote_it() {
    let digits = "1".repeat(64);
    let text = format!("clients:\n  - name: bot\n    type: script\n    key_sha256: {digits}\n");
    let error = one_error(&text);
    assert!(
        error.starts_with("s.yaml:4:17: clients[0].key_sha256: invalid type: floating point"),
        "{error}"
    );
    assert!(
        error.ends_with("; quote the value (\"…\") so that YAML reads it as text"),
        "{error}"
    );
    // Quoted, the same digits are a valid hash.
    let quoted = format!("clients:\n  - name: bot\n    type: script\n    key_sha256: \"{digits}\"\n");
    assert!(load(&[("s.yaml", &quoted)]).is_ok());
}

mod typed_and_tree {
    //! A file read straight into its types must give exactly what the library's tree gives: the
    //! same state, warnings and errors, whatever YAML spells a value with.

    use proptest::prelude::*;

    use super::*;

    /// Spellings of a value that YAML may read as text, a number, a boolean, null or a
    /// collection, quoted or not, tagged, anchored, aliased or folded.
    const SPELLINGS: &[&str] = &[
        "ip",
        "user",
        "global",
        "api_key",
        "\"ip\"",
        "'user'",
        "bot",
        "\"bot\"",
        "123",
        "\"123\"",
        "1.5e3",
        "true",
        "True",
        "false",
        "yes",
        "no",
        "on",
        "~",
        "null",
        "",
        "0x1F",
        "0o17",
        ".inf",
        "60",
        "\"60\"",
        "60.0",
        "+60",
        "-1",
        "6e1",
        "1_000",
        "4294967296",
        "0",
        "10.0.0.1",
        "10.0.0.0/8",
        "2027-01-01T02:00:00Z",
        "\"2027-01-01T03:00:00+01:00\"",
        "2026-01-01T00:00:00Z",
        "2027-01-01 02:00:00",
        "&a ip",
        "*a",
        "!!str 123",
        "!!int \"60\"",
        "!custom ip",
        "!custom 60",
        "!custom true",
        "!!bool yes",
        "|\n      text",
        ">-\n      folded",
        "[a]",
        "{a: 1}",
        "staging",
        "normal",
        "read_only",
        "maintenance",
        "closed",
        "script",
        "operator",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "1111111111111111111111111111111111111111111111111111111111111111",
        "\"1111111111111111111111111111111111111111111111111111111111111111\"",
    ];

    /// Each section's fields, with a spelling that is valid for them.
    const RULE: &[(&str, &str)] = &[
        ("scope", "ip"),
        ("key", "\"10.0.0.1\""),
        ("window_seconds", "60"),
        ("max_requests", "5"),
        ("enabled", "true"),
        ("shadow", "false"),
        ("on_outage", "closed"),
        ("description", "a rule"),
    ];
    const CLIENT: &[(&str, &str)] = &[
        ("name", "bot"),
        ("type", "script"),
        ("role", "operator"),
        (
            "key_sha256",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        ("active", "true"),
        ("description", "a client"),
    ];
    const WINDOW: &[(&str, &str)] = &[
        ("name", "w"),
        ("starts_at", "2027-01-01T02:00:00Z"),
        ("ends_at", "2027-01-01T03:00:00Z"),
        ("mode", "read_only"),
        ("description", "a window"),
    ];
    const FLAG: &[(&str, &str)] = &[("name", "f"), ("enabled", "true"), ("description", "a flag")];
    const TOP: &[&str] = &[
        "version: 1",
        "version: 1",
        "version: 1",
        "version: \"1\"",
        "version: 2",
        "deployment_profile: staging",
        "deployment_profile: 123",
        "deployment_profile: ~",
        "notifications: []",
        "notifications:\n  - name: chat\n    type: slack\n    url_env: SLACK_URL",
        "notifications:\n  - name: hook\n    type: webhook\n    url_env: HOOK_URL",
        "notifications:\n  - name: hook\n    type: webhook\n    url_env: hook_url\n    secret_env: S",
        "maintenance:\n  mode: maintenance\n  reason: 42",
        "maintenance:\n  reason: upgrade",
        "maintenance:\n  mode: ~",
        "extra: 1",
        "",
    ];

    /// One item: each field left out, written validly, or written with a spelling from the list;
    /// sometimes a field it does not have, or a merge key.
    type Item = (Vec<Option<Option<usize>>>, Option<usize>);

    fn item(fields: usize) -> impl Strategy<Value = Item> {
        let field = prop::option::weighted(0.9, prop::option::weighted(0.1, 0..SPELLINGS.len()));
        (
            prop::collection::vec(field, fields),
            prop::option::weighted(0.05, 0..SPELLINGS.len()),
        )
    }

    /// A section of `items`, the n-th item's first text field suffixed with n to keep keys apart.
    fn section(name: &str, indent: &str, fields: &[(&str, &str)], items: &[Item]) -> String {
        let mut out = format!("{name}:\n");
        for (n, (values, extra)) in items.iter().enumerate() {
            let mut lines: Vec<String> = Vec::new();
            for ((field, valid), value) in fields.iter().zip(values) {
                match value {
                    None => {}
                    Some(None) if lines.is_empty() && !valid.starts_with('"') => lines.push(format!(
                        "{field}: {valid}{}",
                        if *field == "name" {
                            n.to_string()
                        } else {
                            String::new()
                        }
                    )),
                    Some(None) if *field == "key" => lines.push(format!("{field}: \"10.0.0.{n}\"")),
                    Some(None) => lines.push(format!("{field}: {valid}")),
                    Some(Some(spelling)) => lines.push(format!("{field}: {}", SPELLINGS[*spelling])),
                }
            }
            if let Some(spelling) = extra {
                let field = if spelling % 2 == 0 { "<<" } else { "nope" };
                lines.push(format!("{field}: {}", SPELLINGS[*spelling]));
            }
            if lines.is_empty() {
                lines.push("{}".into());
            }
            for (i, line) in lines.iter().enumerate() {
                let lead = if i == 0 { "- " } else { "  " };
                out.push_str(&format!("{indent}{lead}{line}\n"));
            }
        }
        out
    }

    fn items(fields: usize) -> impl Strategy<Value = Vec<Item>> {
        prop::collection::vec(item(fields), 0..5)
    }

    pub(super) fn file() -> impl Strategy<Value = String> {
        (
            items(RULE.len()),
            items(CLIENT.len()),
            items(WINDOW.len()),
            items(FLAG.len()),
            0..TOP.len(),
            any::<u8>(),
        )
            .prop_map(|(rules, clients, windows, flags, top, sections)| {
                let mut text = String::new();
                text.push_str(TOP[top]);
                text.push('\n');
                if sections & 1 != 0 {
                    text.push_str(&section("rate_limits", "  ", RULE, &rules));
                }
                if sections & 2 != 0 {
                    text.push_str(&section("clients", "  ", CLIENT, &clients));
                }
                if sections & 4 != 0 && !text.contains("maintenance:") {
                    text.push_str("maintenance:\n");
                    text.push_str(&section("  windows", "    ", WINDOW, &windows));
                }
                if sections & 8 != 0 {
                    text.push_str(&section("feature_flags", "  ", FLAG, &flags));
                }
                text
            })
    }

    /// The whole outcome of loading `text`, as comparable text.
    fn outcome(text: &str, typed_first: bool) -> String {
        let mut loader = Loader::new(now());
        loader.typed_first = typed_first;
        loader.add_file(Path::new("s.yaml"), text);
        match loader.finish() {
            Ok(loaded) => format!("{:?}\n{:?}", loaded.state, loaded.warnings),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn a_file_read_straight_into_types_loads_as_through_the_tree() {
        use proptest::test_runner::{Config, TestRunner};
        const CASES: u32 = 2000;
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let typed = std::cell::Cell::new(0);
        let result = runner.run(&file(), |text| {
            if read_typed(&text).is_some() {
                typed.set(typed.get() + 1);
            }
            prop_assert_eq!(outcome(&text, true), outcome(&text, false), "{}", text);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        // The cases must take the typed way often enough to mean something.
        let typed = typed.get();
        assert!(
            typed >= CASES as usize / 10,
            "only {typed} of {CASES} files were read typed"
        );
    }

    #[test]
    fn valid_files_of_every_kind_are_read_straight_into_types() {
        let text = format!(
            "version: 1\nrate_limits:\n  - scope: ip\n    key: \"10.0.0.1\"\nclients:\n  - name: bot\n    type: script\n    key_sha256: {HASH_A}\nmaintenance:\n  mode: normal\n  reason: x\n  windows:\n    - name: w\n      starts_at: 2027-01-01T02:00:00Z\n      ends_at: 2027-01-01T03:00:00Z\nfeature_flags:\n  - name: f\ndeployment_profile: p\n"
        );
        assert!(read_typed(&text).is_some());
        assert_eq!(outcome(&text, true), outcome(&text, false));
        // A number where text belongs is left to the tree, which says to quote it.
        assert!(read_typed("clients:\n  - name: 123\n").is_none());
        // A custom tag is left to the tree too, which reads the text under it.
        let tagged = "deployment_profile: !team staging\n";
        assert!(read_typed(tagged).is_none());
        assert_eq!(
            load(&[("s.yaml", tagged)])
                .unwrap()
                .state
                .profile
                .unwrap()
                .name
                .as_str(),
            "staging"
        );
    }
}

mod on_every_core {
    //! A directory's files parsed on every core must load exactly as the same files added to a
    //! loader one after the other.

    use proptest::prelude::*;

    use super::typed_and_tree::file;
    use super::*;

    /// The whole outcome of a load, as comparable text.
    fn shown(loaded: Result<Loaded, LoadError>) -> String {
        match loaded {
            Ok(loaded) => format!("{:?}\n{:?}\n{}", loaded.state, loaded.warnings, loaded.files),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn a_directory_parsed_on_every_core_loads_as_its_files_added_one_by_one() {
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            cases: 200,
            failure_persistence: None,
            ..Config::default()
        });
        // Up to a dozen files, so that the threads take them in turns and finish out of order;
        // one in eight is not a state file's text at all (refused before it is parsed).
        let texts = prop::collection::vec(prop::option::weighted(0.875, file()), 1..12);
        let result = runner.run(&texts, |texts| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (i, text) in texts.iter().enumerate() {
                let bytes = text.as_deref().map_or(&b"\xff\xfe not text"[..], str::as_bytes);
                std::fs::write(dir.path().join(format!("f{i:02}.yaml")), bytes)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let state = StateDir::new(dir.path());
            let mut one_by_one = Loader::letting_texts_go(now(), state.max_file_bytes);
            for found in
                files::find_state_files(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?
            {
                let file = found.read(state.max_file_bytes);
                match file.text {
                    Ok(text) => one_by_one.add_text(&file.path, text),
                    Err(refusal) => one_by_one.add_refusal(&file.path, refusal),
                }
            }
            prop_assert_eq!(
                shown(state.load(now())),
                shown(one_by_one.finish()),
                "{:?}",
                texts
            );
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn results_are_taken_in_order_however_the_threads_finish() {
        let mut taken = Vec::new();
        // Early items take longest, so later ones are done first.
        let items: Vec<u64> = (0..40).collect();
        in_order(
            items,
            Cores::All,
            |i| {
                std::thread::sleep(std::time::Duration::from_micros((40 - i) * 200));
                i * 2
            },
            |doubled| taken.push(doubled),
        );
        assert_eq!(taken, (0..40).map(|i| i * 2).collect::<Vec<u64>>());
    }
}

#[test]
fn a_budget_past_the_store_bound_is_an_error_at_its_field() {
    let errs = errors(&[(
        "s.yaml",
        "rate_limits:\n  - scope: global\n    max_requests: 2147483648\n",
    )]);
    assert_eq!(
        errs,
        ["s.yaml:3:19: rate_limits[0].max_requests must be between 0 and 2147483647, not 2147483648"]
    );
    assert!(
        load(&[(
            "s.yaml",
            "rate_limits:\n  - scope: global\n    max_requests: 2147483647\n"
        )])
        .is_ok()
    );
}

#[test]
fn a_resource_declared_twice_is_reported_with_its_other_errors() {
    // The first `dup` has a bad role: the duplicate is reported now, not once the role is fixed.
    let text = format!(
        "clients:\n  - name: dup\n    type: script\n    role: boss\n    key_sha256: {HASH_A}\n  - name: dup\n    type: script\n    key_sha256: {HASH_B}\nmaintenance:\n  windows:\n    - name: w\n      starts_at: 2031-01-01T02:00:00\n      ends_at: 2031-01-01T04:00:00Z\n    - name: w\n      starts_at: 2031-01-02T02:00:00Z\n      ends_at: 2031-01-02T04:00:00Z\nrate_limits:\n  - scope: user\n    key: u\n    window_seconds: 0\n  - scope: user\n    key: u\n"
    );
    let errs = errors(&[("s.yaml", &text)]);
    for want in [
        "s.yaml:2:11: client dup is declared twice (also at s.yaml:6:11)",
        "s.yaml:4:11: clients[0].role: unknown role `boss`",
        "s.yaml:11:13: maintenance window w is declared twice (also at s.yaml:14:13)",
        "s.yaml:12:18: maintenance.windows[0].starts_at: invalid time",
        "s.yaml:18:12: rate-limit rule user:u is declared twice (also at s.yaml:22:10)",
        "rate_limits[0].window_seconds must be between 1 and 86400, not 0",
    ] {
        assert!(errs.iter().any(|e| e.contains(want)), "{want} not in {errs:#?}");
    }
}
