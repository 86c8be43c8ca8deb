//! Fuzzes the state-file loader with arbitrary bytes: decoding, YAML, validation, positions.
//! It must never panic, and every error must point inside the file on one line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use valhalla_ops::desired::{LoadError, Loader, files};

fuzz_target!(|data: &[u8]| {
    // Lines as YAML (and an editor) counts them: CR, LF, NEL, LS and PS each break a line.
    let text = String::from_utf8_lossy(data);
    let lines = 1 + text
        .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .count();
    let path = Path::new("fuzzed.yaml");
    let mut loader = Loader::new(chrono::DateTime::UNIX_EPOCH);
    match files::decode(data.to_vec()) {
        Ok(text) => loader.add_text(path, text),
        Err(refusal) => loader.add_refusal(path, refusal),
    }
    if let Err(LoadError::Invalid { errors, warnings, .. }) = loader.finish() {
        for d in errors.iter().chain(&warnings) {
            assert!(
                d.pos.line >= 1 && d.pos.column >= 1 && d.pos.line <= lines,
                "{d:?}"
            );
            assert!(!d.to_string().chars().any(char::is_control), "{d}");
        }
    }
});
