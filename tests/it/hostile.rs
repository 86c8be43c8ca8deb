//! Hostile and careless state directories through the real binary: links out of the directory,
//! file kinds that never end, oversized and deeply nested files, forged output lines, other
//! encodings, emptied files.

use std::time::{Duration, Instant};

use crate::support::{StateDir, all_backends, run};

const FLAG: &str = "version: 1\nfeature_flags:\n  - name: ok\n    enabled: true\n";

/// `validate` on `state`, which must fail within `within`, with each diagnostic on a line of its own.
fn refused(state: &StateDir, args: &[&str], within: Duration) -> crate::support::Run {
    let db = crate::support::sqlite();
    let started = Instant::now();
    let mut all = vec!["validate"];
    all.extend(args);
    let out = run(&db, state.path(), &all);
    assert!(
        started.elapsed() < within,
        "took {:?}: {out:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 1, "{out:?}");
    out
}

#[test]
fn a_link_out_of_the_state_directory_is_not_followed_and_its_target_never_printed() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("token");
    std::fs::write(&secret, "s3cr3t-runner-token\n").unwrap();
    std::fs::create_dir(outside.path().join("dir")).unwrap();
    std::fs::write(outside.path().join("dir/x.yaml"), "s3cr3t-in-a-folder\n").unwrap();
    let state = StateDir::new(&[("flags.yaml", FLAG)]);
    std::os::unix::fs::symlink(&secret, state.path().join("leak.yaml")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("dir"), state.path().join("linked")).unwrap();
    let out = refused(&state, &[], Duration::from_secs(10));
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("s3cr3t"), "{out:?}");
    assert!(!all.contains(&outside.path().display().to_string()), "{out:?}");
    assert!(
        out.stderr.contains(
            "leak.yaml:1:1: error: a symbolic link to outside the state directory; it is not followed"
        ),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("linked:1:1: error: a symbolic link to outside"),
        "{out:?}"
    );
}

#[test]
fn links_inside_the_state_directory_are_followed_like_a_configmap() {
    // A ConfigMap mount: `flags.yaml -> ..data/flags.yaml`, `..data -> ..2026_11_28`.
    let state = StateDir::new(&[]);
    let version = state.path().join("..2026_11_28");
    std::fs::create_dir(&version).unwrap();
    std::fs::write(version.join("flags.yaml"), FLAG).unwrap();
    std::os::unix::fs::symlink("..2026_11_28", state.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/flags.yaml", state.path().join("flags.yaml")).unwrap();
    // A link back up the tree is walked once, not for ever.
    std::os::unix::fs::symlink(".", state.path().join("loop")).unwrap();
    let db = crate::support::sqlite();
    let out = run(&db, state.path(), &["validate"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("1 feature flags"), "{out:?}");
}

#[test]
fn fifos_sockets_and_devices_are_refused_without_being_read() {
    let state = StateDir::new(&[("flags.yaml", FLAG)]);
    let fifo = state.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(state.path().join("sock.yml")).unwrap();
    // A device reached through a link inside the directory would be followed: refuse it by kind.
    let devices = state.path().join("devices");
    std::fs::create_dir(&devices).unwrap();
    let zero = std::process::Command::new("mknod")
        .args([devices.join("zero.yaml").to_str().unwrap(), "c", "1", "5"])
        .status()
        .is_ok_and(|s| s.success());
    let out = refused(&state, &[], Duration::from_secs(10));
    assert!(
        out.stderr
            .contains("pipe.yaml:1:1: error: a FIFO: only regular files are read as state files"),
        "{out:?}"
    );
    assert!(out.stderr.contains("sock.yml:1:1: error: a socket"), "{out:?}");
    if zero {
        assert!(out.stderr.contains("zero.yaml:1:1: error: a device"), "{out:?}");
    }
    // reconcile meets the same refusal, and writes nothing.
    for db in all_backends() {
        let started = Instant::now();
        let out = run(&db, state.path(), &["reconcile"]);
        assert_eq!(out.code, 1, "{}: {out:?}", db.backend);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}: {out:?}",
            db.backend
        );
        assert!(out.stderr.contains("a FIFO"), "{}: {out:?}", db.backend);
    }
}

#[test]
fn a_file_over_the_cap_is_refused_and_the_cap_can_be_raised() {
    let big = format!("{FLAG}{}", "# padding\n".repeat(120_000));
    let state = StateDir::new(&[("big.yaml", &big)]);
    let out = refused(&state, &["--max-file-mib", "1"], Duration::from_secs(10));
    assert!(
        out.stderr
            .contains("big.yaml:1:1: error: the file is over the cap of 1 MiB"),
        "{out:?}"
    );
    assert!(out.stderr.contains("--max-file-mib"), "{out:?}");
    let db = crate::support::sqlite();
    let out = run(&db, state.path(), &["validate", "--max-file-mib", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn deep_nesting_is_refused_in_well_under_a_second_of_work() {
    let state = StateDir::new(&[
        ("brackets.yaml", &"[".repeat(100_000)),
        ("maps.yaml", &"{a: ".repeat(50_000)),
    ]);
    let out = refused(&state, &[], Duration::from_secs(5));
    assert!(
        out.stderr
            .contains("brackets.yaml:1:256: error: collections are nested more than 32 levels deep"),
        "{out:?}"
    );
    assert!(out.stderr.contains("maps.yaml:1:"), "{out:?}");
}

#[test]
fn a_value_cannot_forge_output_lines() {
    let forged = "version: 1\nfeature_flags:\n  - name: \"x\\nstate/a.yaml:1:1: error: forged\\n::error file=a::forged\\u001b[2J\"\n    enabled: true\n";
    let long = format!(
        "version: 1\nfeature_flags:\n  - name: \"{}\"\n    enabled: true\n",
        "y".repeat(10_000)
    );
    let state = StateDir::new(&[("a.yaml", forged), ("b.yaml", &long)]);
    let out = refused(&state, &[], Duration::from_secs(10));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "two diagnostics and the summary: {out:?}");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{out:?}");
    assert!(
        lines[0].starts_with(&format!("{}/a.yaml:3:11: error:", state.path().display())),
        "{out:?}"
    );
    assert!(
        lines[0].contains("`x\\nstate/a.yaml:1:1: error: forged\\n::error"),
        "{out:?}"
    );
    assert!(lines[1].len() < 400, "a long value is cut: {}", lines[1].len());
    assert!(lines[1].contains("more characters)"), "{out:?}");
}

#[test]
fn encodings_and_duplicates_are_positioned() {
    let utf16: Vec<u8> = FLAG.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let state = StateDir::new(&[
        ("bom.yaml", &format!("\u{feff}{FLAG}")),
        (
            "dup.yaml",
            "version: 1\nfeature_flags:\n  - name: a\n    enabled: true\n    enabled: false\n",
        ),
        (
            "top.yaml",
            "version: 1\ndeployment_profile: x\n# a comment\n\n\nversion: 1\n",
        ),
    ]);
    std::fs::write(state.path().join("wide.yaml"), utf16).unwrap();
    std::fs::write(state.path().join("bad.yaml"), b"version: 1\n# caf\xff\n").unwrap();
    let out = refused(&state, &[], Duration::from_secs(10));
    let at = |file: &str| format!("{}/{file}", state.path().display());
    assert!(
        !out.stderr.contains("bom.yaml"),
        "a UTF-8 byte-order mark is legal: {out:?}"
    );
    for expected in [
        format!("{}:2:6: error: invalid UTF-8 (byte 0xff)", at("bad.yaml")),
        format!(
            "{}:5:5: error: feature_flags[0]: duplicate entry with key \"enabled\"",
            at("dup.yaml")
        ),
        format!(
            "{}:6:1: error: duplicate entry with key \"version\"",
            at("top.yaml")
        ),
        format!("{}:1:2: error: a NUL byte", at("wide.yaml")),
    ] {
        assert!(out.stderr.contains(&expected), "{expected}\n{out:?}");
    }
}

#[test]
fn an_emptied_file_is_an_error_not_a_silent_delete() {
    for db in all_backends() {
        let b = db.backend;
        let state = StateDir::new(&[
            ("flags.yaml", FLAG),
            ("settings.yaml", "version: 1\ndeployment_profile: staging\n"),
        ]);
        let out = run(&db, state.path(), &["reconcile"]);
        assert_eq!(out.code, 0, "{b}: {out:?}");
        for emptied in ["", "# all gone\n", "~\n", "---\n"] {
            state.write("flags.yaml", emptied);
            let out = run(&db, state.path(), &["reconcile"]);
            assert_eq!(out.code, 1, "{b} {emptied:?}: {out:?}");
            assert!(
                out.stderr.contains(
                    "flags.yaml:1:1: error: the file declares nothing; to declare an empty file on purpose, write `version: 1`"
                ),
                "{b} {emptied:?}: {out:?}"
            );
        }
        // Declared empty on purpose: the flag goes.
        state.write("flags.yaml", "version: 1\n");
        let out = run(&db, state.path(), &["reconcile", "--dry-run"]);
        assert_eq!(out.code, 0, "{b}: {out:?}");
        assert!(out.stdout.contains("delete"), "{b}: {out:?}");
    }
}

/// Every 64-digit hex string in the files under `dir`, with where it is.
fn hashes_under(
    dir: &std::path::Path,
    out: &mut Vec<(String, String)>,
    words: &mut std::collections::BTreeSet<String>,
) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hashes_under(&path, out, words);
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for token in text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-') {
            if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push((token.to_ascii_lowercase(), path.display().to_string()));
            } else if !token.is_empty() && token.len() <= 32 {
                words.insert(token.to_owned());
            }
        }
    }
}

#[test]
fn no_shipped_key_hash_is_the_hash_of_a_guessable_key() {
    // The sample once gave the admin `tyr` the hash of the key `x`: anyone who applied it had
    // handed out an admin key. Every hash shipped must be of a key nobody holds.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut hashes, mut words) = (Vec::new(), std::collections::BTreeSet::new());
    for dir in ["state", "examples"] {
        hashes_under(&root.join(dir), &mut hashes, &mut words);
    }
    assert!(hashes.len() >= 8, "the sample declares key hashes: {hashes:?}");
    let shipped: std::collections::HashMap<String, String> = hashes.into_iter().collect();
    let check = |key: &str| {
        for candidate in [key.to_owned(), format!("{key}\n"), format!("vk_{key}")] {
            let hash = valhalla_ops::domain::KeySha256::of_key(&candidate);
            if let Some(file) = shipped.get(hash.as_str()) {
                panic!("{file} ships the hash of the key {candidate:?}");
            }
        }
    };
    // Every string of up to three printable ASCII characters.
    let printable: Vec<char> = (' '..='~').collect();
    for a in &printable {
        check(&a.to_string());
        for b in &printable {
            check(&format!("{a}{b}"));
            for c in &printable {
                let mut s = String::with_capacity(3);
                s.extend([*a, *b, *c]);
                let hash = valhalla_ops::domain::KeySha256::of_key(&s);
                assert!(
                    !shipped.contains_key(hash.as_str()),
                    "a shipped hash is of the key {s:?}"
                );
            }
        }
    }
    // Common passwords, and every word the shipped files themselves use (client names, roles).
    let common = [
        "password",
        "secret",
        "admin",
        "root",
        "test",
        "testing",
        "key",
        "apikey",
        "api_key",
        "token",
        "changeme",
        "letmein",
        "qwerty",
        "123456",
        "12345678",
        "1234567890",
        "valhalla",
        "default",
        "example",
        "sample",
        "demo",
        "dev",
        "prod",
        "production",
        "staging",
        "guest",
        "user",
    ];
    for word in common.iter().map(|w| w.to_string()).chain(words) {
        check(&word);
        check(&word.to_uppercase());
    }
}

#[test]
fn a_million_bad_items_are_a_thousand_lines_not_a_million() {
    // 200,000 invalid rules in 400 KB: the errors beyond the first thousand are counted.
    let items = format!("version: 1\nrate_limits: [{}]\n", "1,".repeat(200_000));
    let state = StateDir::new(&[("many.yaml", &items)]);
    let out = refused(&state, &[], Duration::from_secs(30));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1002,
        "a thousand errors, the count of the rest, the summary"
    );
    assert_eq!(
        lines[1000],
        "… and 199000 more errors, not shown (only the first 1000 are)"
    );
    assert!(
        lines[1001].ends_with("is invalid (200000 errors); nothing was written"),
        "{}",
        lines[1001]
    );
}
