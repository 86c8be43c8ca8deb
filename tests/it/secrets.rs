//! The one rule for key hashes (SPEC §7): a hash appears only in state files and `export`. Every
//! GET route the OpenAPI document lists, the status page's event stream and the audit log are
//! read during an override, a key change and a lockdown, and no answer holds a stored hash or
//! any prefix of one.

use std::io::Read as _;

use serde_json::Value;
use valhalla_ops::domain::KeySha256;

use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, state_with};

/// The shortest run of a hash's first digits that counts as showing it (the audit once kept 12).
const PREFIX: usize = 8;

/// A client whose key changes and which an override then takes over.
fn victim(key: &str) -> String {
    format!(
        "  - name: victim\n    type: script\n    role: reader\n    key_sha256: {}\n",
        KeySha256::of_key(key).as_str()
    )
}

/// Every 64-hex-digit hash in `yaml`.
fn hashes_in(yaml: &str) -> Vec<String> {
    yaml.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|word| word.len() == 64)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The answer to `GET path` with `key`: the whole body, or the first event of a stream.
fn answer(app: &TestApp, path: &str, key: &str) -> (u16, String) {
    let request = ureq::http::Request::builder()
        .method("GET")
        .uri(format!("{}{path}", app.base))
        .header("Authorization", format!("Bearer {key}"))
        .body(())
        .unwrap();
    let mut response = app.agent.run(request).unwrap();
    let status = response.status().as_u16();
    let streamed = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut reader = response.body_mut().as_reader();
    let mut body = Vec::new();
    if streamed {
        // The first event, whole: it ends with an empty line.
        let mut byte = [0u8; 1];
        while !body.ends_with(b"\n\n") && reader.read(&mut byte).unwrap() == 1 {
            body.push(byte[0]);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Every GET path of the OpenAPI document, its parameters filled with `1`.
fn get_paths(app: &TestApp) -> Vec<String> {
    let (status, doc) = app.get("/openapi.json", Some(READER));
    assert_eq!(status, 200, "{doc}");
    let paths: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, ops)| ops.get("get").is_some())
        .map(|(path, _)| {
            path.split('/')
                .map(|part| if part.starts_with('{') { "1" } else { part })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert!(paths.len() >= 15, "{paths:?}");
    assert!(paths.iter().any(|p| p == "/status/events"), "{paths:?}");
    paths
}

/// Fails when any answer `key` gets holds one of `hashes` or a prefix of one.
fn assert_no_hash(app: &TestApp, moment: &str, key: &str, paths: &[String], hashes: &[String]) {
    let mut answers: Vec<(String, String)> = paths
        .iter()
        .map(|path| {
            let (status, body) = answer(app, path, key);
            assert!(
                status < 500,
                "{}: {moment}: GET {path}: {status} {body}",
                app.backend
            );
            (format!("GET {path}"), body)
        })
        .collect();
    let (status, audit) = app.send_json(
        "POST",
        "/admin/ops",
        Some(ADMIN),
        r#"{"action": "audit_log", "payload": {"limit": 500}}"#,
    );
    assert_eq!(status, 200, "{audit}");
    answers.push(("the audit log".into(), audit.to_string()));
    for (what, body) in &answers {
        let lower = body.to_ascii_lowercase();
        for hash in hashes {
            assert!(
                !lower.contains(&hash[..PREFIX]),
                "{}: {moment}: {what} shows (a prefix of) the hash {hash}: {body}",
                app.backend
            );
        }
    }
}

#[test]
fn no_answer_shows_a_key_hash_or_a_prefix_of_one() {
    for db in all_backends() {
        let first = state_with(&victim("vk_victim_first_00000000000000000000000000"));
        let second = state_with(&victim("vk_victim_second_0000000000000000000000000"));
        let mut hashes = hashes_in(&first);
        hashes.extend(hashes_in(&second));
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), 6, "{hashes:?}");
        let app = TestApp::spawn(db, &first);
        let b = app.backend;
        let paths = get_paths(&app);

        // A key change, applied through the server's own reconcile: its plan is an answer too.
        app.state_dir.write("state.yaml", &second);
        let (status, applied) =
            app.send_json("POST", "/admin/ops", Some(ADMIN), r#"{"action": "reconcile"}"#);
        assert_eq!(status, 200, "{b}: {applied}");
        let change = &applied["result"]["plan"]["changes"][0];
        assert_eq!(change["fields"][0]["field"], "key_sha256", "{b}: {applied}");
        // An override takes the changed client over: the status page shows what git restores.
        let id = app.client_id("victim");
        let (status, off) = app.send_json(
            "POST",
            &format!("/system/clients/{id}/deactivate"),
            Some(OPERATOR),
            r#"{"reason": "rotating its key"}"#,
        );
        assert_eq!(status, 200, "{b}: {off}");
        let (_, snapshot) = app.get("/status/snapshot", Some(READER));
        let restores = &snapshot["overrides"][0]["restores"];
        assert_eq!(restores["key_sha256"], "(hidden)", "{b}: {snapshot}");
        assert_eq!(restores["role"], "reader", "{b}: {snapshot}");
        assert_no_hash(&app, "during an override", READER, &paths, &hashes);

        // A lockdown turns every reader off: the admin, who sees at least what a reader sees, reads.
        let (status, locked) = app.send_json(
            "POST",
            "/admin/ops",
            Some(ADMIN),
            r#"{"action": "lockdown", "payload": {"reason": "breach"}}"#,
        );
        assert_eq!(status, 200, "{b}: {locked}");
        assert_no_hash(&app, "during a lockdown", ADMIN, &paths, &hashes);

        // The audit records the key change as a change, with no part of either hash.
        let (_, audit) = app.send_json(
            "POST",
            "/admin/ops",
            Some(ADMIN),
            r#"{"action": "audit_log", "payload": {"kind": "client", "key": "victim"}}"#,
        );
        let records = audit["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{b}: {audit}"));
        let changed: Vec<&Value> = records
            .iter()
            .filter(|r| r["action"] == "update" && !r["run_id"].is_null())
            .collect();
        let after: Value = serde_json::from_str(changed[0]["after"].as_str().unwrap()).unwrap();
        assert_eq!(after["key_sha256"], "(changed)", "{b}: {audit}");
    }
}
