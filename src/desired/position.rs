//! Where each node of a YAML document starts, by path (`rate_limits[2].key`), for error positions.

use std::collections::HashMap;

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
        let mut index = PositionIndex::default();
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
                    self.keys.insert(join(path, &key), pos);
                    *pending_key = Some(key);
                    None
                }
            },
        }
    }

    /// Where the value at `path` starts, else where the nearest enclosing node starts.
    pub fn value(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.values.get("").copied().unwrap_or(Pos { line: 1, column: 1 }),
            }
        }
    }

    /// Where the mapping key at `path` is written, falling back to its value.
    pub fn key(&self, path: &str) -> Pos {
        self.keys.get(path).copied().unwrap_or_else(|| self.value(path))
    }
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
}
