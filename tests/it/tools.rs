//! Third-party tools that read what valhalla-ops writes: shells loading its completions,
//! promtool, OpenAPI validators and fuzzers, JSON Schema validators. Each test runs the real tool
//! and skips (saying so) when it is not installed, unless `VALHALLA_REQUIRE_TOOLS` is set.

use std::process::Command;

use crate::support::{StateDir, run, sqlite, tool};

/// The completion script `valhalla-ops completions SHELL` prints, written to a file.
fn completions(shell: &str) -> tempfile::NamedTempFile {
    let out = run(&sqlite(), StateDir::new(&[]).path(), &["completions", shell]);
    assert_eq!(out.code, 0, "{out:?}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &out.stdout).unwrap();
    file
}

/// What bash completes for `words`, the last one being completed, with the script loaded.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let last = words.len() - 1;
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={last}\n_valhalla__ops valhalla-ops '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[last],
        words[last - 1],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    let Some(_) = tool("bash") else { return };
    let script = completions("bash");
    let top = bash_completes(script.path(), &["valhalla-ops", "rec"]);
    assert_eq!(top, ["reconcile"]);
    // A subcommand's own options: what clap_complete's script misses for a hyphenated binary.
    let options = bash_completes(script.path(), &["valhalla-ops", "reconcile", "--d"]);
    assert!(options.contains(&"--dry-run".to_owned()), "{options:?}");
    assert!(options.contains(&"--detailed-exitcode".to_owned()), "{options:?}");
    let nested = bash_completes(script.path(), &["valhalla-ops", "keys", "generate", "--r"]);
    assert_eq!(nested, ["--role"], "{nested:?}");
}

#[test]
fn zsh_and_fish_load_the_completions() {
    if let Some(zsh) = tool("zsh") {
        let script = completions("zsh");
        let program = format!(
            "autoload -U compinit && compinit -u -D && source '{}' && (( $+functions[_valhalla-ops] )) && echo loaded",
            script.path().display()
        );
        let out = Command::new(zsh).args(["-f", "-c", &program]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.trim(),
            "loaded",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(fish) = tool("fish") {
        let script = completions("fish");
        let program = format!(
            "source '{}'; complete -C 'valhalla-ops reconcile --dry'",
            script.path().display()
        );
        let out = Command::new(fish)
            .args(["--no-config", "-c", &program])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().any(|l| l.starts_with("--dry-run")),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `promtool check metrics` on `text`; its exit status and what it said.
fn promtool_check(promtool: &std::path::Path, text: &str) -> (Option<i32>, String) {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), said)
}

#[test]
fn promtool_finds_nothing_to_complain_about_in_the_metrics() {
    use crate::support::app::{ADMIN, READER, TestApp, state_with};
    let Some(promtool) = tool("promtool") else { return };
    let app = TestApp::spawn(
        sqlite(),
        &state_with("rate_limits:\n  - scope: global\n    max_requests: 1000\n"),
    );
    // Something in every family: requests, a rate-limit verdict, an override, a reload.
    assert_eq!(app.get("/system/ratelimits/rules", Some(READER)).0, 200);
    let freeze = r#"{"reason": "drill", "ttl_seconds": 60}"#;
    let (status, _) = app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), freeze);
    assert_eq!(status, 200);
    // What curl and promtool get: the classic text format.
    let classic = app.exchange("GET", "/metrics", Some(READER), &[], None);
    assert_eq!(classic.status, 200);
    assert!(
        classic
            .header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = classic.body.as_str().unwrap().to_owned();
    let (code, said) = promtool_check(&promtool, &text);
    assert_eq!(code, Some(0), "promtool said:\n{said}\non:\n{text}");
    assert!(said.trim().is_empty(), "promtool said:\n{said}\non:\n{text}");
    // Every family's type is the truth: a count that only goes up is a counter.
    for counter in [
        "valhalla_ops_cache_reloads_total",
        "valhalla_ops_http_requests_total",
        "valhalla_ops_ratelimit_decisions_total",
        "valhalla_ops_watch_passes_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {counter} counter")),
            "{counter}:\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE valhalla_ops_active_overrides gauge"),
        "{text}"
    );
    // A scraper that asks for OpenMetrics gets it, ending with its EOF marker.
    let accept = [(
        "Accept",
        "application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
    )];
    let open = app.exchange("GET", "/metrics", Some(READER), &accept, None);
    assert!(
        open.header("content-type")
            .starts_with("application/openmetrics-text")
    );
    let open = open.body.as_str().unwrap().to_owned();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE valhalla_ops_cache_reloads counter"),
        "{open}"
    );
}

/// The server's OpenAPI document, as `GET /openapi.json` serves it, in a file.
fn openapi_document(app: &crate::support::app::TestApp) -> tempfile::NamedTempFile {
    let (status, doc) = app.get("/openapi.json", Some(crate::support::app::READER));
    assert_eq!(status, 200, "{doc}");
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    file
}

#[test]
fn openapi_spec_validator_accepts_the_document() {
    use crate::support::app::{TestApp, state_with};
    let Some(validator) = tool("openapi-spec-validator") else {
        return;
    };
    let app = TestApp::spawn(sqlite(), &state_with(""));
    let doc = openapi_document(&app);
    let out = Command::new(validator).arg(doc.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation has an id of its own that says what it does.
    let (_, doc) = app.get("/openapi.json", Some(crate::support::app::READER));
    let mut ids: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "{ids:?}");
    for vague in ["list", "get", "put", "delete", "ops", "scrape"] {
        assert!(
            !ids.iter().any(|id| id == vague),
            "`{vague}` says nothing: {ids:?}"
        );
    }
}

/// The operations that can freeze the platform, after which the freeze answers 503.
const FREEZING: [&str; 3] = ["create_window", "set_maintenance_mode", "run_admin_action"];

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let Some(schemathesis) = tool("schemathesis") else {
        return;
    };
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    // Every operation that cannot freeze the platform, then the three that can, each pass on a
    // fresh server with an admin key of its own.
    // In the second pass the freeze answers before authentication does (a frozen platform refuses
    // a request without a key with its 503, not a 401), so schemathesis's check that requests
    // without credentials are refused is left to the first pass.
    // The status page's event stream never ends by design (the browser test drives it), so it
    // is left out: schemathesis reads a response to its end.
    let passes: [(&str, &str, &[&str]); 2] = [
        (
            "the others",
            "--exclude-operation-id",
            &["--exclude-operation-id", "follow_status"],
        ),
        (
            "the freezing three",
            "--include-operation-id",
            &["--exclude-checks", "ignored_auth"],
        ),
    ];
    for (pass, filter, exclude) in passes {
        let db = sqlite();
        let state = StateDir::sample();
        let out = run(
            &db,
            state.path(),
            &["keys", "generate", "--client", "fuzzer", "--role", "admin"],
        );
        let key = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("key:        "))
            .unwrap()
            .to_owned();
        let entry = &out.stdout[out.stdout.find("  - name: ").unwrap()..];
        state.write("clients.yaml", &(state.read("clients.yaml") + entry));
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
        let mut serving = crate::support::Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
        let base = serving.base();
        let document = ureq::get(format!("{base}/openapi.json"))
            .header("Authorization", &format!("Bearer {key}"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), document).unwrap();
        let mut command = Command::new(&schemathesis);
        // Its caches (.schemathesis, .hypothesis) go into the working directory: not the repository.
        let scratch = tempfile::tempdir().unwrap();
        command
            .current_dir(scratch.path())
            .arg("--config-file")
            .arg(&config)
            .arg("--no-color")
            .arg("run")
            .arg(file.path())
            .args([
                "--url",
                &base,
                "--header",
                &format!("Authorization: Bearer {key}"),
            ])
            .args(["--checks", "all", "--phases", "examples,coverage,fuzzing"])
            .args(exclude)
            .args(["--max-examples", "25", "--seed", "1", "--workers", "1"]);
        for id in FREEZING {
            command.args([filter, id]);
        }
        let out = command.output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{pass}: schemathesis failed:\n{report}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            serving.log()
        );
        assert!(serving.stop(std::time::Duration::from_secs(10)).success());
    }
}

/// The shipped state files: the sample `state/` and the lockdown example.
fn shipped_state_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = ["state", "examples/lockdown"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    files
}

/// ajv in its default strict mode, with the standard formats, on one state file.
fn ajv_validate(
    ajv: &std::path::Path,
    schema: &std::path::Path,
    file: &std::path::Path,
) -> std::process::Output {
    Command::new(ajv)
        .args(["validate", "--spec=draft2020", "-c", "ajv-formats", "-s"])
        .arg(schema)
        .arg("-d")
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn json_schema_validators_accept_the_schema_and_the_shipped_files() {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/valhalla-ops.schema.json");
    let files = shipped_state_files();
    if let Some(ajv) = tool("ajv") {
        // ajv in its default strict mode, with the standard formats; its YAML reader reads an
        // unquoted timestamp as a date, as JavaScript YAML parsers do.
        for file in &files {
            let out = ajv_validate(&ajv, &schema, file);
            let said =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "ajv on {}:\n{said}", file.display());
            assert!(
                !said.contains("unknown format"),
                "ajv on {}:\n{said}",
                file.display()
            );
        }
    }
    if let Some(check) = tool("check-jsonschema") {
        let schema = schema.to_str().unwrap();
        let (ok, said) = accepts(&check, &["--schemafile", schema], &files);
        assert!(ok, "{said}");
    }
}

/// What the binary refuses, the schema refuses too: a window time without its offset (the
/// form editors offer) and a budget past the store's 32-bit bound.
#[test]
fn json_schema_validators_refuse_what_validate_refuses() {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/valhalla-ops.schema.json");
    let cases = [
        (
            "naive.yaml",
            "version: 1\nmaintenance:\n  windows:\n    - name: w\n      starts_at: \"2099-01-12 22:00\"\n      ends_at: \"2099-01-12T23:00:00Z\"\n",
        ),
        (
            "huge.yaml",
            "version: 1\nrate_limits:\n  - scope: global\n    max_requests: 4294967295\n",
        ),
        (
            "past_the_column.yaml",
            "version: 1\nrate_limits:\n  - scope: global\n    max_requests: 2147483648\n",
        ),
    ];
    for (name, text) in cases {
        let state = StateDir::new(&[(name, text)]);
        let file = state.path().join(name);
        let ours = run(&sqlite(), state.path(), &["validate"]);
        assert_eq!(ours.code, 1, "{name}: {ours:?}");
        if let Some(ajv) = tool("ajv") {
            let out = ajv_validate(&ajv, &schema, &file);
            assert!(!out.status.success(), "ajv accepts {name}");
        }
        if let Some(check) = tool("check-jsonschema") {
            let out = Command::new(check)
                .arg("--schemafile")
                .arg(&schema)
                .arg(&file)
                .output()
                .unwrap();
            assert!(!out.status.success(), "check-jsonschema accepts {name}");
        }
    }
}

/// The GitLab plan job's script, run by bash as GitLab runs it (`set -eo pipefail`, one shell),
/// with `valhalla-ops`, `git` and `curl` stubbed; returns the exit status and the curl calls.
fn run_gitlab_plan(refused: bool, previous_note: Option<i64>) -> (Option<i32>, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("examples/ci/gitlab-ci.yml")).unwrap())
            .unwrap();
    let lines: Vec<&str> = pipeline["plan"]["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let work = tempfile::tempdir().unwrap();
    let notes = match previous_note {
        Some(id) => format!(
            r####"[{{"id": 1, "body": "LGTM"}}, {{"id": {id}, "body": "### valhalla-ops plan\n..."}}]"####
        ),
        None => r#"[{"id": 1, "body": "LGTM"}]"#.to_owned(),
    };
    let stubs = format!(
        r####"set -eo pipefail
cd '{dir}'
valhalla-ops() {{ case "$1" in validate) return 0;; diff) echo "### valhalla-ops plan"; {exit};; esac; }}
git() {{ :; }}
curl() {{ echo "curl $*" >> calls; case "$*" in *"--request"*) ;; *) echo '{notes}';; esac; }}
export CI_API_V4_URL=https://gitlab.example/api/v4 CI_PROJECT_ID=7 CI_MERGE_REQUEST_IID=42
export CI_MERGE_REQUEST_TARGET_BRANCH_NAME=main VALHALLA_NOTE_TOKEN=t
touch calls
"####,
        dir = work.path().display(),
        exit = if refused { "return 1" } else { "return 0" },
    );
    let program = format!("{stubs}{}\n", lines.join("\n"));
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(work.path().join("calls")).unwrap_or_default();
    (out.status.code(), calls + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_ci_examples_post_one_plan_comment_even_when_the_plan_is_refused() {
    let Some(_) = tool("jq") else { return };
    // GitLab: a new note the first time, the same note updated after; a refused plan is posted
    // and then fails the job.
    let (code, calls) = run_gitlab_plan(false, None);
    assert_eq!(code, Some(0), "{calls}");
    assert!(
        calls.contains("--request POST") && !calls.contains("--request PUT"),
        "{calls}"
    );
    let (code, calls) = run_gitlab_plan(true, Some(9));
    assert_eq!(code, Some(1), "a refused plan fails the job: {calls}");
    assert!(
        calls.contains("--request PUT") && calls.contains("/notes/9"),
        "{calls}"
    );
    assert!(!calls.contains("--request POST"), "one note, updated: {calls}");
    // GitHub: the comment step runs whatever the plan step's exit, and a last step fails the
    // job on a refused plan; the full plan is attached. Its script is valid JavaScript.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workflow: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("examples/ci/github-actions.yml")).unwrap())
            .unwrap();
    let steps = workflow["jobs"]["plan"]["steps"].as_sequence().unwrap();
    let step = |name: &str| {
        let found = steps
            .iter()
            .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with(name)));
        found.unwrap_or_else(|| panic!("no step {name}"))
    };
    let comment = step("Post or update the plan comment");
    assert!(
        comment["if"].as_str().unwrap().contains("always()"),
        "{comment:?}"
    );
    assert!(
        step("Attach the full plan")["uses"]
            .as_str()
            .unwrap()
            .starts_with("actions/upload-artifact")
    );
    assert!(
        step("Fail when the plan was refused")["if"]
            .as_str()
            .unwrap()
            .contains("steps.plan.outputs.status")
    );
    if let Some(node) = tool("node") {
        let script = comment["with"]["script"].as_str().unwrap();
        let file = tempfile::Builder::new().suffix(".js").tempfile().unwrap();
        std::fs::write(file.path(), format!("(async () => {{\n{script}\n}})();\n")).unwrap();
        let out = Command::new(node)
            .arg("--check")
            .arg(file.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn ajv_accepts_what_export_writes() {
    let Some(ajv) = tool("ajv") else { return };
    let db = sqlite();
    let state = StateDir::sample_as_shipped();
    // A one-off window too: its times are the ones JavaScript readers would take for dates.
    state.write(
        "once.yaml",
        "version: 1\nmaintenance:\n  windows:\n    - name: once\n      starts_at: \"2099-01-10T02:00:00Z\"\n      ends_at: \"2099-01-10T04:00:00Z\"\n",
    );
    assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);
    let (_dir, out) = crate::support::scratch("export-ajv");
    let export = run(&db, state.path(), &["export", "--out", out.to_str().unwrap()]);
    assert_eq!(export.code, 0, "{export:?}");
    let windows = std::fs::read_to_string(out.join("maintenance.yaml")).unwrap();
    assert!(windows.contains("starts_at: \""), "{windows}");
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/valhalla-ops.schema.json");
    for file in std::fs::read_dir(&out).unwrap() {
        let file = file.unwrap().path();
        let out = ajv_validate(&ajv, &schema, &file);
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ajv on {}:\n{said}", file.display());
    }
    // Quoted, the times still load back as they were.
    let check = run(&db, &out, &["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(check.code, 0, "{check:?}");
}

/// A copy of the shipped state directory `dir` (`state`, `examples/lockdown`).
fn shipped(dir: &str) -> StateDir {
    let copy = StateDir::new(&[]);
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    copy
}

/// The shipped samples on a later day: with the clock moved years ahead by `faketime`, every
/// command a newcomer or the suite runs on them (validate, diff, the dry run, two reconciles,
/// export and the export read back) succeeds and warns of nothing, on every backend.
#[test]
fn the_shipped_samples_do_not_age() {
    let Some(faketime) = tool("faketime") else { return };
    let at = |offset: &str, db: &crate::support::TestDb, state: &std::path::Path, args: &[&str]| {
        crate::support::finish(
            crate::support::command_at(&faketime, offset, db, state)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    // The moved clock is real: a window a year from today is wholly in the past five years on.
    let ahead = chrono::Utc::now() + chrono::Duration::days(365);
    let soon = StateDir::new(&[(
        "m.yaml",
        &format!(
            "version: 1\nmaintenance:\n  windows:\n    - name: w\n      starts_at: \"{}\"\n      ends_at: \"{}\"\n",
            ahead.to_rfc3339(),
            (ahead + chrono::Duration::hours(1)).to_rfc3339()
        ),
    )]);
    let today = at("+0d", &sqlite(), soon.path(), &["validate"]);
    assert!(today.code == 0 && !today.stderr.contains("warning"), "{today:?}");
    let later = at("+5y", &sqlite(), soon.path(), &["validate"]);
    assert!(
        later.stderr.contains("window w is wholly in the past"),
        "{later:?}"
    );

    let lockdown = shipped("examples/lockdown");
    for offset in ["+5y", "+30y"] {
        for db in crate::support::all_backends() {
            let state = StateDir::sample_as_shipped();
            let said = |what: &str, out: &crate::support::Run, codes: &[i32]| {
                assert!(
                    codes.contains(&out.code) && !out.stderr.contains("warning"),
                    "{offset} {}: {what}: {out:?}",
                    db.backend
                );
            };
            let (old, new) = (state.path().to_str().unwrap(), lockdown.path().to_str().unwrap());
            said("validate", &at(offset, &db, state.path(), &["validate"]), &[0]);
            said("validate", &at(offset, &db, lockdown.path(), &["validate"]), &[0]);
            said("diff", &at(offset, &db, state.path(), &["diff", old, new]), &[0]);
            said(
                "dry run",
                &at(offset, &db, state.path(), &["reconcile", "--dry-run"]),
                &[0],
            );
            said("reconcile", &at(offset, &db, state.path(), &["reconcile"]), &[0]);
            let again = at(offset, &db, state.path(), &["reconcile", "--detailed-exitcode"]);
            said("reconcile again", &again, &[0]);
            let (_dir, out) = crate::support::scratch("export");
            let export = at(
                offset,
                &db,
                state.path(),
                &["export", "--out", out.to_str().unwrap()],
            );
            said("export", &export, &[0]);
            said(
                "the export validated",
                &at(offset, &db, &out, &["validate"]),
                &[0],
            );
        }
    }
}

/// Runs `tool` with `args` and then `files`; whether it accepted them, and what it said.
fn accepts<F: AsRef<std::ffi::OsStr>>(
    tool: &std::path::Path,
    args: &[&str],
    files: impl IntoIterator<Item = F>,
) -> (bool, String) {
    let out = Command::new(tool).args(args).args(files).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[test]
fn kubernetes_validate_accepts_the_kubernetes_example_strictly() {
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes/valhalla-ops.yaml");
    let (ok, said) = accepts(&validate, &["--strict", "--quiet"], [&example]);
    assert!(ok, "{said}");
    // A misspelt field is refused: the tool really reads the file.
    let text = std::fs::read_to_string(&example).unwrap();
    let broken = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(broken.path(), text.replace("minAvailable:", "minAvailble:")).unwrap();
    let (ok, said) = accepts(&validate, &["--strict", "--quiet"], [broken.path()]);
    assert!(!ok && said.contains("minAvailble"), "{said}");
}

#[test]
fn the_ci_examples_pass_their_platforms_workflow_schemas() {
    let Some(check) = tool("check-jsonschema") else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    for (file, schema) in [
        ("github-actions.yml", "vendor.github-workflows"),
        ("gitlab-ci.yml", "vendor.gitlab-ci"),
    ] {
        let example = root.join(file);
        let (ok, said) = accepts(&check, &["--builtin-schema", schema], [&example]);
        assert!(ok, "{file}: {said}");
        // A step or job of the wrong shape is refused: the schema is really applied.
        let text = std::fs::read_to_string(&example).unwrap();
        let broken = tempfile::Builder::new().suffix(".yml").tempfile().unwrap();
        std::fs::write(
            broken.path(),
            text.replacen("stages: [plan, apply]", "stages: plan", 1)
                .replacen("runs-on: ubuntu-latest", "runs-on: [[1]]", 1),
        )
        .unwrap();
        let (ok, said) = accepts(&check, &["--builtin-schema", schema], [broken.path()]);
        assert!(!ok, "{file}: the broken copy passes: {said}");
    }
}

#[test]
fn shellcheck_finds_nothing_wrong_in_the_shipped_scripts() {
    let Some(shellcheck) = tool("shellcheck") else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = [
        "scripts/build-image",
        "scripts/release",
        "scripts/bench",
        ".ci/run",
        ".ci/image",
    ];
    let (ok, said) = accepts(
        &shellcheck,
        &["--shell=bash", "--severity=warning"],
        scripts.map(|s| root.join(s)),
    );
    assert!(ok, "{said}");
}

/// The webhook deliveries as a receiver reads them: each signature checked with Python's own
/// HMAC, each body read by the CloudEvents SDK (Python's `cloudevents`), which nobody here wrote.
#[test]
fn the_cloudevents_sdk_reads_our_events_and_a_plain_hmac_checks_their_signatures() {
    use valhalla_ops::event::Event;
    use valhalla_ops::model::{Kind, Override};
    use valhalla_ops::notify::{CONTENT_TYPE, Origin, SIGNATURE_HEADER, cloudevent, signature};
    if !crate::support::python_modules(
        &["cloudevents.core.bindings.http"],
        "cloudevents",
        "read our events with the CloudEvents SDK",
    ) {
        return;
    }
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-04T03:00:00.250Z")
        .unwrap()
        .to_utc();
    let hold = Override {
        id: 42,
        kind: Kind::MaintenanceMode,
        key: "mode".into(),
        actor: "tyr".into(),
        reason: "incident 4711: \"db\" <down> & ünïcode".into(),
        created_at: at,
        expires_at: Some(at + chrono::Duration::hours(1)),
        group_id: None,
    };
    let events = [
        Event::override_set(&hold),
        Event::lockdown_started("lockdown-1", 3, "admin", "breach", at),
    ];
    let origin = Origin {
        source: "/valhalla-ops/production".into(),
        link: "https://ops.example.com/status".into(),
    };
    let secret = "whsec_test";
    let deliveries: Vec<serde_json::Value> = events
        .iter()
        .map(|event| {
            let body = cloudevent(event, &origin).to_string();
            serde_json::json!({
                "secret": secret,
                "headers": {
                    "Content-Type": CONTENT_TYPE,
                    SIGNATURE_HEADER: signature(secret.as_bytes(), 1_796_353_200, body.as_bytes()),
                },
                "body": body,
            })
        })
        .collect();
    let check = crate::support::check_deliveries;
    let out = check(&deliveries);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &read[0];
    assert_eq!(
        (
            &first["specversion"],
            &first["id"],
            &first["type"],
            &first["source"]
        ),
        (
            &"1.0".into(),
            &"override-set:42".into(),
            &"valhalla.ops.override.set".into(),
            &"/valhalla-ops/production".into()
        ),
        "{read}"
    );
    assert_eq!(
        (&first["subject"], &first["time"], &first["severity"]),
        (
            &"maintenance_mode/mode".into(),
            &"2026-12-04T03:00:00.250000+00:00".into(),
            &"warning".into()
        ),
        "{read}"
    );
    assert_eq!(first["data"]["reason"], hold.reason, "{read}");
    assert_eq!(first["data"]["link"], "https://ops.example.com/status", "{read}");
    assert_eq!(
        (&read[1]["type"], &read[1]["subject"], &read[1]["severity"]),
        (
            &"valhalla.ops.lockdown.started".into(),
            &serde_json::Value::Null,
            &"critical".into()
        ),
        "{read}"
    );

    // A body changed in transit fails the receiver's check.
    let mut tampered = deliveries[0].clone();
    tampered["body"] = serde_json::json!(tampered["body"].as_str().unwrap().replace("tyr", "eve"));
    let out = check(&[tampered]);
    assert!(!out.status.success(), "a tampered body was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad signature"));
}
