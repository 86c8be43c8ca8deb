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
    let out = Command::new("bash").args(["--norc", "-c", &program]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
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
        assert_eq!(stdout.trim(), "loaded", "{}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(fish) = tool("fish") {
        let script = completions("fish");
        let program = format!(
            "source '{}'; complete -C 'valhalla-ops reconcile --dry'",
            script.path().display()
        );
        let out = Command::new(fish).args(["--no-config", "-c", &program]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().any(|l| l.starts_with("--dry-run")),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
