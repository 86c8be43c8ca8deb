//! Notifications delivered by real `serve` processes to a real receiver: signed CloudEvents
//! that the CloudEvents SDK reads, within a second of a freeze; every event delivered once and
//! in order per resource after the receiver was down for a minute; `Retry-After` honoured; a
//! server killed mid-call loses nothing; two replicas send each event once; `notify test`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;

use crate::support::app::{OPERATOR, READER, state_with};
use crate::support::receiver::{Call, Receiver, Reply};
use crate::support::{Process, StateDir, TestDb, agent, all_backends, run};

const SECRET: &str = "whsec_0123456789abcdef";

/// The test clients and one webhook sink that takes every event.
fn state() -> String {
    state_with(
        "rate_limits:\n  - scope: user\n    key: u1\n  - scope: user\n    key: u2\n  - scope: user\n    key: u3\n\
         notifications:\n  - name: oncall\n    type: webhook\n    url_env: ONCALL_URL\n    secret_env: ONCALL_SECRET\n",
    )
}

/// The state reconciled into `db`, and a server over it that sends to `receiver`.
fn serving(db: &TestDb, receiver: &Receiver, args: &[&str]) -> (StateDir, Process) {
    let state = StateDir::new(&[("state.yaml", &state())]);
    let applied = run(db, state.path(), &["reconcile"]);
    assert_eq!(applied.code, 0, "{}: {applied:?}", db.backend);
    let server = start(db, &state, receiver, args);
    (state, server)
}

fn start(db: &TestDb, state: &StateDir, receiver: &Receiver, args: &[&str]) -> Process {
    let mut all = vec!["serve", "--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let url = receiver.url();
    Process::start_with(
        db,
        state,
        &all,
        &[("ONCALL_URL", url.as_str()), ("ONCALL_SECRET", SECRET)],
    )
}

/// A call with a key, its status and its JSON body.
fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let agent = agent();
    let mut response = match body {
        Some(body) => agent
            .post(url)
            .header("Authorization", format!("Bearer {key}"))
            .send_json(body),
        None if method == "DELETE" => agent
            .delete(url)
            .header("Authorization", format!("Bearer {key}"))
            .call(),
        None => agent
            .get(url)
            .header("Authorization", format!("Bearer {key}"))
            .call(),
    }
    .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// An override of user `user`'s rule over HTTP; its id.
fn override_rule(base: &str, user: &str, max: u32, ttl: Option<u32>) -> i64 {
    let mut body = serde_json::json!({"scope": "user", "key": user, "max_requests": max, "reason": format!("abuse from {user}")});
    if let Some(ttl) = ttl {
        body["ttl_seconds"] = ttl.into();
    }
    let (status, written) = call(
        "POST",
        &format!("{base}/system/ratelimits/rules"),
        OPERATOR,
        Some(body),
    );
    assert_eq!(status, 200, "{written}");
    written["override"]["id"].as_i64().unwrap()
}

/// The CloudEvents `type` of a call.
fn kind(call: &Call) -> String {
    call.json()["type"].as_str().unwrap_or_default().to_owned()
}

/// Every event the store holds, oldest first, with its deliveries.
fn stored_events(base: &str) -> Vec<Value> {
    let (status, body) = call(
        "GET",
        &format!("{base}/system/notifications?limit=1000"),
        READER,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let mut events = body.as_array().cloned().unwrap();
    events.reverse();
    events
}

/// Reads the calls as a receiver would: each signature checked with Python's own HMAC and
/// each body read by the CloudEvents SDK (`tests/notify/check.py`); what the SDK read.
fn checked_by_the_sdk(calls: &[Call]) -> Option<Vec<Value>> {
    if !crate::support::python_modules(
        &["cloudevents.core.bindings.http"],
        "cloudevents",
        "read delivered events with the CloudEvents SDK",
    ) {
        return None;
    }
    let deliveries: Vec<Value> = calls
        .iter()
        .map(|c| {
            let headers: BTreeMap<&str, &str> =
                c.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            serde_json::json!({"secret": SECRET, "headers": headers, "body": c.body})
        })
        .collect();
    let out = crate::support::check_deliveries(&deliveries);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn a_freeze_reaches_the_receiver_signed_within_a_second_and_shows_as_sent() {
    for db in all_backends() {
        let b = db.backend;
        let receiver = Receiver::start();
        let (_state, server) = serving(&db, &receiver, &["--public-url", "https://ops.example.com/"]);
        let base = server.base();
        // The reconcile that stored the sink is told first.
        receiver.wait_for(Duration::from_secs(10), "the reconcile", |calls| {
            calls.iter().any(|c| kind(c) == "valhalla.ops.reconcile.applied")
        });

        let asked = receiver.now();
        let freeze = serde_json::json!({"reason": "incident 4711"});
        let (status, body) = call(
            "POST",
            &format!("{base}/system/maintenance/state/maintenance"),
            OPERATOR,
            Some(freeze),
        );
        assert_eq!(status, 200, "{b}: {body}");
        let answered = receiver.now();
        let calls = receiver.wait_for(Duration::from_secs(5), "the freeze", |calls| {
            calls.iter().any(|c| kind(c) == "valhalla.ops.mode.changed")
        });
        let freeze_call = calls
            .iter()
            .find(|c| kind(c) == "valhalla.ops.mode.changed")
            .unwrap();
        assert!(
            freeze_call.at - answered < Duration::from_secs(1),
            "{b}: the freeze reached the receiver {:?} after it was answered ({:?} after it was asked)",
            freeze_call.at - answered,
            freeze_call.at - asked
        );
        let event = freeze_call.json();
        assert_eq!(
            (
                &event["data"]["actor"],
                &event["data"]["reason"],
                &event["data"]["details"]["to"]
            ),
            (&"operator".into(), &"incident 4711".into(), &"maintenance".into()),
            "{b}: {event}"
        );
        assert_eq!(event["data"]["link"], "https://ops.example.com/status", "{b}");
        assert_eq!(
            freeze_call.header("content-type"),
            Some("application/cloudevents+json")
        );

        if let Some(read) = checked_by_the_sdk(&calls) {
            let types: Vec<&str> = read.iter().map(|e| e["type"].as_str().unwrap()).collect();
            assert!(types.contains(&"valhalla.ops.mode.changed"), "{b}: {types:?}");
            assert!(
                read.iter().all(|e| e["source"] == "/valhalla-ops/default"),
                "{b}: {read:?}"
            );
        }

        // The store says it was sent, and so do the metrics.
        let events = stored_events(&base);
        let told = events.iter().find(|e| e["type"] == "mode.changed").unwrap();
        let deliveries = told["deliveries"].as_array().unwrap();
        let wait_sent = std::time::Instant::now();
        let mut delivery = deliveries[0].clone();
        while delivery["state"] != "sent" && wait_sent.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
            let events = stored_events(&base);
            delivery = events.iter().find(|e| e["type"] == "mode.changed").unwrap()["deliveries"][0].clone();
        }
        assert_eq!(
            (
                &delivery["sink"],
                &delivery["state"],
                &delivery["attempts"],
                &delivery["last_status"]
            ),
            (&"oncall".into(), &"sent".into(), &1.into(), &200.into()),
            "{b}: {told}"
        );
        let (status, metrics) = call("GET", &format!("{base}/metrics"), READER, None);
        assert_eq!(status, 200, "{b}");
        let metrics = metrics.as_str().unwrap_or_default().to_owned();
        let sent = format!(
            "valhalla_ops_notifications_sent_total{{sink=\"oncall\"}} {}",
            receiver.calls().len()
        );
        assert!(metrics.contains(&sent), "{b}: {sent}\n{metrics}");
        assert!(
            metrics.contains("valhalla_ops_notifications_oldest_undelivered_seconds 0"),
            "{b}: {metrics}"
        );
        // Neither the URL's token nor the secret is ever written to the log.
        let log = server.log();
        assert!(!log.contains("t0ps3cret") && !log.contains(SECRET), "{b}: {log}");
        assert!(log.contains("notification sink ready"), "{b}: {log}");
    }
}

/// The order each resource's events were first received in, by their ids.
fn first_arrivals(calls: &[Call]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    calls
        .iter()
        .map(|c| c.json())
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
        .map(|e| {
            let subject = e["subject"].as_str().unwrap_or_default().to_owned();
            (subject, e["id"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn a_receiver_down_for_a_minute_gets_every_event_once_and_each_resource_in_order() {
    std::thread::scope(|scope| {
        for db in all_backends() {
            scope.spawn(move || {
                let b = db.backend;
                let mut receiver = Receiver::start();
                receiver.down();
                let down_at = std::time::Instant::now();
                let (_state, server) = serving(&db, &receiver, &[]);
                let base = server.base();
                // Three resources, each changed three times while nobody listens.
                for round in 1..=3 {
                    for user in ["u1", "u2", "u3"] {
                        override_rule(&base, user, round, None);
                    }
                }
                // The status page shows the sink failing, and why, without the URL's secrets.
                std::thread::sleep(Duration::from_secs(3));
                let (status, page) = call("GET", &format!("{base}/status/snapshot"), READER, None);
                assert_eq!(status, 200, "{b}: {page}");
                let sink = &page["sinks"][0];
                assert_eq!(sink["sink"], "oncall", "{b}: {page}");
                assert!(sink["retrying"].as_i64().unwrap() >= 3, "{b}: {page}");
                let error = sink["last_error"].as_str().unwrap();
                assert!(
                    error.starts_with(&format!("cannot connect (http://127.0.0.1:{}/…)", receiver.port)),
                    "{b}: {error}"
                );
                assert!(!page.to_string().contains("t0ps3cret"), "{b}: {page}");
                std::thread::sleep(Duration::from_secs(60).saturating_sub(down_at.elapsed()));
                receiver.up();
                let expected: Vec<Value> = stored_events(&base);
                let ids: Vec<String> = expected
                    .iter()
                    .map(|e| e["id"].as_str().unwrap().to_owned())
                    .collect();
                let calls = receiver.wait_for(Duration::from_secs(120), "every event", |calls| {
                    let got: std::collections::HashSet<String> = calls
                        .iter()
                        .map(|c| c.json()["id"].as_str().unwrap().to_owned())
                        .collect();
                    ids.iter().all(|id| got.contains(id))
                });
                // Refused connections deliver nothing: no event came twice.
                assert_eq!(calls.len(), ids.len(), "{b}: {:?}", first_arrivals(&calls));
                // Each resource's events arrived in the order they were written.
                let seq: HashMap<&str, i64> = expected
                    .iter()
                    .map(|e| (e["id"].as_str().unwrap(), e["seq"].as_i64().unwrap()))
                    .collect();
                let mut by_subject: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                for (subject, id) in first_arrivals(&calls) {
                    by_subject.entry(subject).or_default().push(seq[id.as_str()]);
                }
                assert!(by_subject.len() >= 3, "{b}: {by_subject:?}");
                for (subject, seqs) in &by_subject {
                    assert!(seqs.is_sorted(), "{b}: {subject} arrived out of order: {seqs:?}");
                }
                let overrides: usize = by_subject
                    .iter()
                    .filter(|(s, _)| s.starts_with("rate_limit_rule/user:"))
                    .map(|(_, v)| v.len())
                    .sum();
                assert!(overrides >= 9, "{b}: {by_subject:?}");
                // Once everything is sent, no sink is listed.
                let began = std::time::Instant::now();
                loop {
                    let (_, page) = call("GET", &format!("{base}/status/snapshot"), READER, None);
                    if page["sinks"] == serde_json::json!([]) {
                        break;
                    }
                    assert!(began.elapsed() < Duration::from_secs(5), "{b}: {page}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
}

#[test]
fn a_receiver_that_answers_429_is_left_alone_as_long_as_retry_after_says() {
    for db in all_backends() {
        let b = db.backend;
        let receiver = Receiver::start();
        let (_state, server) = serving(&db, &receiver, &[]);
        let base = server.base();
        receiver.wait_for(Duration::from_secs(10), "the reconcile", |calls| {
            !calls.is_empty()
        });
        receiver.script(&[Reply::TooMany(3)]);
        override_rule(&base, "u1", 1, None);
        let calls = receiver.wait_for(Duration::from_secs(15), "the retry", |calls| {
            calls
                .iter()
                .filter(|c| kind(c) == "valhalla.ops.override.set")
                .count()
                >= 2
        });
        let tries: Vec<&Call> = calls
            .iter()
            .filter(|c| kind(c) == "valhalla.ops.override.set")
            .collect();
        assert_eq!(tries[0].json()["id"], tries[1].json()["id"], "{b}");
        let waited = tries[1].at - tries[0].at;
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(5),
            "{b}: tried again {waited:?} after a 429 that asked for 3 s"
        );
        let events = stored_events(&base);
        let set = events.iter().find(|e| e["type"] == "override.set").unwrap();
        let delivery = &set["deliveries"][0];
        assert_eq!(delivery["attempts"], 2, "{b}: {set}");
        assert_eq!(
            delivery["last_error"], "the receiver answered 429: slow down",
            "{b}: {set}"
        );
    }
}

#[test]
fn a_server_killed_while_delivering_loses_nothing() {
    std::thread::scope(|scope| {
        for db in all_backends() {
            scope.spawn(move || {
                let b = db.backend;
                let receiver = Receiver::start();
                let (state, mut server) = serving(&db, &receiver, &[]);
                let base = server.base();
                receiver.wait_for(Duration::from_secs(10), "the reconcile", |calls| {
                    !calls.is_empty()
                });
                receiver.script(&[Reply::Slow(Duration::from_secs(5))]);
                override_rule(&base, "u1", 1, None);
                let calls = receiver.wait_for(Duration::from_secs(5), "the call", |calls| {
                    calls.iter().any(|c| kind(c) == "valhalla.ops.override.set")
                });
                let id = calls.last().unwrap().json()["id"].clone();
                // Killed while the receiver holds the call: nothing recorded it as sent.
                server.kill();
                let again = start(&db, &state, &receiver, &[]);
                let calls = receiver.wait_for(Duration::from_secs(60), "the event again", |calls| {
                    calls.iter().filter(|c| c.json()["id"] == id).count() >= 2
                });
                let sent = calls.iter().filter(|c| c.json()["id"] == id).count();
                assert_eq!(sent, 2, "{b}");
                drop(again);
            });
        }
    });
}

#[test]
fn two_replicas_on_one_postgres_send_each_event_once() {
    let Some(db) = crate::support::postgres() else {
        return;
    };
    let receiver = Receiver::start();
    let (state, first) = serving(&db, &receiver, &[]);
    let second = start(&db, &state, &receiver, &[]);
    let bases = [first.base(), second.base()];
    // Overrides that expire soon, set on both: each is reminded of and expires by time, which
    // both replicas notice.
    for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
        override_rule(&bases[i % 2], user, 1, Some(3));
    }
    std::thread::sleep(Duration::from_secs(6));
    let expected = stored_events(&bases[0]);
    let types: Vec<&str> = expected.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "override.expired").count(),
        3,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "override.expiring").count(),
        3,
        "{types:?}"
    );
    let calls = receiver.wait_for(Duration::from_secs(10), "every event", |calls| {
        calls.len() >= expected.len()
    });
    std::thread::sleep(Duration::from_secs(2));
    let calls = if receiver.calls().len() > calls.len() {
        receiver.calls()
    } else {
        calls
    };
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for c in &calls {
        *count
            .entry(c.json()["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(count.values().all(|n| *n == 1), "{count:?}");
    assert_eq!(count.len(), expected.len(), "{count:?}");
}

#[test]
fn notify_test_sends_to_a_sink_and_prints_its_answer() {
    let db = crate::support::sqlite();
    let state = StateDir::new(&[("state.yaml", &state())]);
    let receiver = Receiver::start();
    let url = receiver.url();
    let test = |sink: &str| {
        crate::support::finish(
            crate::support::command(&db, state.path())
                .args(["notify", "test", sink])
                .env("ONCALL_URL", &url)
                .env("ONCALL_SECRET", SECRET)
                .output()
                .unwrap(),
        )
    };
    let sent = test("oncall");
    assert_eq!(sent.code, 0, "{sent:?}");
    let port = receiver.port;
    assert_eq!(
        sent.stdout,
        format!(
            "sink oncall (webhook, http://127.0.0.1:{port}/…): the receiver answered 200\n{{\"ok\":true}}\n"
        ),
        "{sent:?}"
    );
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(kind(&calls[0]), "valhalla.ops.notify.test");
    if let Some(read) = checked_by_the_sdk(&calls) {
        assert_eq!(read[0]["type"], "valhalla.ops.notify.test");
    }

    receiver.script(&[Reply::Status(500)]);
    let refused = test("oncall");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("sink oncall (webhook, http://127.0.0.1:")
            && refused.stderr.contains("did not take the test event (HTTP 500)"),
        "{refused:?}"
    );
    assert!(!format!("{refused:?}{sent:?}").contains("t0ps3cret"));

    let unknown = test("pager");
    assert_ne!(unknown.code, 0, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("declares no sink pager (it declares oncall)"),
        "{unknown:?}"
    );
}

#[test]
fn a_plan_shows_each_sink_added_changed_or_taken_out_and_validate_counts_them() {
    let db = crate::support::sqlite();
    let two = state_with(
        "notifications:\n  - name: oncall\n    type: webhook\n    url_env: ONCALL_URL\n    secret_env: ONCALL_SECRET\n\
         \x20 - name: chat\n    type: slack\n    url_env: SLACK_URL\n    events: [override.*]\n",
    );
    let state = StateDir::new(&[("state.yaml", &two)]);
    let valid = run(&db, state.path(), &["validate"]);
    assert!(valid.stdout.contains(", 2 notification sinks\n"), "{valid:?}");
    let planned = run(&db, state.path(), &["reconcile", "--dry-run"]);
    assert_eq!(planned.code, 0, "{planned:?}");
    assert!(
        planned
            .stdout
            .contains("sink chat=\"slack url_env=SLACK_URL events=override.* min_severity=info\""),
        "{planned:?}"
    );
    assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0);

    // One sink changed, one taken out: each is a line of the one change to the setting.
    let one = state_with(
        "notifications:\n  - name: oncall\n    type: webhook\n    url_env: ONCALL_URL\n    secret_env: ONCALL_SECRET\n    min_severity: warning\n",
    );
    state.write("state.yaml", &one);
    let planned = run(&db, state.path(), &["reconcile", "--dry-run", "--format", "json"]);
    assert_eq!(planned.code, 0, "{planned:?}");
    let plan: Value = serde_json::from_str(&planned.stdout).unwrap();
    let change = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "notifications")
        .unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(change["action"], "update", "{change}");
    let fields: Vec<(String, Value, Value)> = change["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["old"].clone(),
                f["new"].clone(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            (
                "sink oncall".to_owned(),
                "webhook url_env=ONCALL_URL secret_env=ONCALL_SECRET events=* min_severity=info".into(),
                "webhook url_env=ONCALL_URL secret_env=ONCALL_SECRET events=* min_severity=warning".into()
            ),
            (
                "sink chat".to_owned(),
                "slack url_env=SLACK_URL events=override.* min_severity=info".into(),
                Value::Null
            ),
        ],
        "{change}"
    );
    // Leaving the section out leaves them alone; `notifications: []` takes them all out.
    state.write("state.yaml", &state_with(""));
    let planned = run(&db, state.path(), &["reconcile", "--dry-run"]);
    assert!(!planned.stdout.contains("sink "), "{planned:?}");
    state.write("state.yaml", &state_with("notifications: []\n"));
    let planned = run(&db, state.path(), &["reconcile", "--dry-run"]);
    assert!(
        planned
            .stdout
            .contains("sink chat: \"slack url_env=SLACK_URL events=override.* min_severity=info\" → (none)"),
        "{planned:?}"
    );
}
