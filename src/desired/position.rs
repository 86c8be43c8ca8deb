//! Where each node of a YAML document starts, by path (`rate_limits[2].key`), for error positions.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use saphyr_parser::{Event, Parser};

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// The positions of the values and mapping keys of the first document of a file.
#[derive(Debug, Default)]
pub struct PositionIndex {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
    /// Where a mapping key is written the second time, for "duplicate entry" errors.
    duplicates: HashMap<String, Pos>,
    /// Where the text ends: no position is reported past it.
    end: Pos,
}

enum Frame {
    Mapping {
        path: String,
        pending_key: Option<String>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

/// Joins a child segment onto a path: `a` + `b` is `a.b`, the root has an empty path.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl PositionIndex {
    /// Indexes `text`. Syntax errors stop indexing silently: the YAML deserializer reports them.
    pub fn build(text: &str) -> PositionIndex {
        let mut index = PositionIndex {
            end: end_of(text),
            ..PositionIndex::default()
        };
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            match event {
                Event::DocumentEnd => break,
                Event::Scalar(value, ..) => {
                    if let Some(path) = index.place(&mut stack, pos, Some(&value)) {
                        index.values.insert(path, pos);
                    }
                }
                Event::Alias(_) => {
                    if let Some(path) = index.place(&mut stack, pos, Some("*")) {
                        index.values.insert(path, pos);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    // A collection used as a mapping key cannot be addressed; index it under "?".
                    let path = index.place(&mut stack, pos, None).unwrap_or_else(|| "?".into());
                    index.values.insert(path.clone(), pos);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Mapping {
                            path,
                            pending_key: None,
                        }
                    } else {
                        Frame::Sequence { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        index
    }

    /// Records a node in its parent and returns the node's path when it is a value; a scalar in
    /// key position is recorded as a key and returns `None`.
    fn place(&mut self, stack: &mut [Frame], pos: Pos, scalar: Option<&str>) -> Option<String> {
        match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Mapping { path, pending_key }) => match pending_key.take() {
                Some(key) => Some(join(path, &key)),
                None => {
                    let key = scalar.unwrap_or("?").to_owned();
                    let at = join(path, &key);
                    match self.keys.entry(at) {
                        Entry::Occupied(first) => {
                            self.duplicates.entry(first.key().clone()).or_insert(pos);
                        }
                        Entry::Vacant(first) => {
                            first.insert(pos);
                        }
                    }
                    *pending_key = Some(key);
                    None
                }
            },
        }
    }

    /// Where the value at `path` starts, else where the nearest enclosing node starts.
    pub fn value(&self, path: &str) -> Pos {
        let mut p = path;
        let pos = loop {
            if let Some(pos) = self.values.get(p) {
                break *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => break self.values.get("").copied().unwrap_or(Pos { line: 1, column: 1 }),
            }
        };
        // The parser's span can end a line past the text.
        no_later_than(pos, self.end)
    }

    /// Where the mapping key at `path` is written a second time, if it is.
    pub fn duplicate(&self, path: &str) -> Option<Pos> {
        self.duplicates.get(path).copied()
    }

    /// Where the mapping key at `path` is written, falling back to its value.
    pub fn key(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .map(|pos| no_later_than(*pos, self.end))
            .unwrap_or_else(|| self.value(path))
    }
}

/// `pos`, or the end of `text` when `pos` is past it: libyaml reports an error at the end of a
/// file that does not end with a line break one line below its last line.
pub fn clamp(text: &str, pos: Pos) -> Pos {
    no_later_than(pos, end_of(text))
}

/// `pos`, or `end` when `pos` is on a later line.
fn no_later_than(pos: Pos, end: Pos) -> Pos {
    if pos.line <= end.line { pos } else { end }
}

/// The position just past the last character of `text`.
fn end_of(text: &str) -> Pos {
    let (lines, last_line_start) = lines(text);
    Pos {
        line: lines,
        column: text[last_line_start..].chars().count() + 1,
    }
}

/// How many lines `text` has as YAML (and an editor) breaks them: at CRLF, CR, LF, NEL, LS and
/// PS; and where its last line starts.
fn lines(text: &str) -> (usize, usize) {
    let mut lines = 1;
    let mut last_line_start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let breaks = match c {
            '\r' => {
                if chars.peek().is_some_and(|(_, next)| *next == '\n') {
                    chars.next();
                }
                true
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => true,
            _ => false,
        };
        if breaks {
            lines += 1;
            last_line_start = chars.peek().map_or(text.len(), |(next, _)| *next);
        }
    }
    (lines, last_line_start)
}

/// The most levels of nested collections a state file may have; a state file needs four.
pub const MAX_DEPTH: usize = 32;

/// Where a state file first nests collections deeper than [`MAX_DEPTH`], if it does.
///
/// libyaml, under the YAML deserializer, takes time quadratic in the depth of nested flow
/// collections (100,000 `[` took 79 s), and only counts depth once the whole file is parsed.
/// This check stops at the first node too deep, so it takes time linear in what it reads.
/// A file with no more flow openers (`[`, `{`) than the limit cannot nest flow collections that
/// deep, and block nesting costs libyaml linear time (its own depth limit then refuses it): such
/// files, all block-style state among them, skip the scan.
pub fn too_deep(text: &str) -> Option<Pos> {
    let openers = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if openers <= MAX_DEPTH {
        return None;
    }
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        // The parser's own limit on flow nesting is an error here; so is any other syntax error,
        // which the deserializer then reports with its message, having met no deep nesting.
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) if e.info().contains("recursion limit") => {
                return Some(Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                });
            }
            Err(_) => return None,
        };
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(Pos {
                        line: span.start.line(),
                        column: span.start.col() + 1,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_values_and_keys_by_path() {
        let text =
            "version: 1\nrate_limits:\n  - scope: ip\n    key: 10.0.0.0/8\n  - {scope: user, key: bob}\n";
        let idx = PositionIndex::build(text);
        assert_eq!(idx.value("version"), Pos { line: 1, column: 10 });
        assert_eq!(idx.value("rate_limits[0].scope"), Pos { line: 3, column: 12 });
        assert_eq!(idx.key("rate_limits[0].key"), Pos { line: 4, column: 5 });
        assert_eq!(idx.value("rate_limits[1]"), Pos { line: 5, column: 5 });
        assert_eq!(idx.value("rate_limits[1].key"), Pos { line: 5, column: 24 });
        // Unknown paths fall back to the nearest enclosing node.
        assert_eq!(idx.value("rate_limits[1].missing"), Pos { line: 5, column: 5 });
    }

    #[test]
    fn a_repeated_key_is_found_where_it_is_repeated() {
        let idx = PositionIndex::build("version: 1\nfeature_flags:\n  - name: a\n    name: b\nversion: 1\n");
        assert_eq!(idx.duplicate("version"), Some(Pos { line: 5, column: 1 }));
        assert_eq!(
            idx.duplicate("feature_flags[0].name"),
            Some(Pos { line: 4, column: 5 })
        );
        assert_eq!(idx.duplicate("feature_flags"), None);
    }

    #[test]
    fn deep_nesting_is_found_quickly_and_shallow_files_pass() {
        for deep in ["[".repeat(100_000), "{a: ".repeat(100_000), "[".repeat(40)] {
            let started = std::time::Instant::now();
            assert!(too_deep(&deep).is_some());
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        let many_shallow = format!("a:\n{}", "  - {b: [1]}\n".repeat(1000));
        assert_eq!(too_deep(&many_shallow), None);
        assert_eq!(
            too_deep(&"- ".repeat(40)),
            None,
            "block nesting is left to the deserializer's limit"
        );
    }
}
