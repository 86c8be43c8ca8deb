//! Values and messages made safe to print: one line, control characters escaped, long text cut.
//!
//! Anything a state file, a request or the environment controls can end up in an error. Printed
//! raw, a newline in a value forges a second line (a fake `file:line:col: error`, or a CI
//! runner's `::error` workflow command) and an escape sequence repaints the terminal.

use std::fmt::Write as _;

/// The most characters of one value echoed in a message.
pub const MAX_VALUE_CHARS: usize = 80;
/// The most characters of one whole message.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// A value as messages echo it: escaped, and cut after [`MAX_VALUE_CHARS`] characters.
pub fn shown(value: &str) -> String {
    cut(value, MAX_VALUE_CHARS)
}

/// A connection URL (a database's, Redis's, a sink's) as messages and logs show it: every
/// password replaced by `***`, escaped, on one line. It never depends on the URL parsing: a
/// password in a URL that is not valid (`postgres://u:pw@db1:5432,db2:5432/x`, a port of 99999,
/// a space in the host, a `/` in the password) is hidden all the same. What is hidden: the text
/// after the first `:` of the user information (everything before the last `@` ahead of the
/// query), and the value of every query parameter whose name contains `password` (libpq's
/// `?password=`, `sslpassword`).
pub fn url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => raw.split_at(i + 3),
        None => ("", raw),
    };
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    let (rest, tail) = match rest[..query_at].rfind('@') {
        Some(at) => {
            let (user_info, after) = rest.split_at(at);
            let user_info = match user_info.find(':') {
                Some(colon) => format!("{}:***", &user_info[..colon]),
                None => user_info.to_owned(),
            };
            let query_at = after.find(['?', '#']).unwrap_or(after.len());
            (user_info + &after[..query_at], &after[query_at..])
        }
        None => (rest[..query_at].to_owned(), &rest[query_at..]),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                        format!("{name}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    one_line(&format!("{scheme}{rest}{tail}"))
}

/// A path as messages echo it: escaped, and cut like any value.
pub fn path(path: &std::path::Path) -> String {
    shown(&path.to_string_lossy())
}

/// A whole message made one line: escaped, and cut after [`MAX_MESSAGE_CHARS`] characters.
pub fn one_line(message: &str) -> String {
    cut(message, MAX_MESSAGE_CHARS)
}

/// Escapes `text` and cuts it after `max` characters of the original, marking the cut.
fn cut(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 2));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            let _ = write!(out, "… ({} more characters)", text.chars().count() - max);
            break;
        }
        escape_into(&mut out, c);
    }
    out
}

/// Pushes `c`, or its escape when a terminal or a log reader would act on it: C0 and C1
/// controls, the Unicode line and paragraph separators, and the bidirectional overrides that
/// make text read differently from how it is stored.
fn escape_into(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
        {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(one_line("a\nb\r\tc\u{1b}[31m"), "a\\nb\\r\\tc\\u{1b}[31m");
        assert_eq!(
            one_line("x\u{85}y\u{2028}z\u{202e}"),
            "x\\u{85}y\\u{2028}z\\u{202e}"
        );
        assert_eq!(one_line("café `ok` ü"), "café `ok` ü");
    }

    #[test]
    fn a_url_never_shows_its_password_whether_or_not_it_parses() {
        let cases = [
            ("postgres://u:pw@db:5432/x", "postgres://u:***@db:5432/x"),
            (
                "postgres://u:pw@db1:5432,db2:5432/x",
                "postgres://u:***@db1:5432,db2:5432/x",
            ),
            ("postgres://u:pw@db:99999/x", "postgres://u:***@db:99999/x"),
            ("postgres://u:p w@d b/x", "postgres://u:***@d b/x"),
            ("postgres://u:p@ss@db/x", "postgres://u:***@db/x"),
            ("postgres://u:p/w@db/x", "postgres://u:***@db/x"),
            ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
            ("rediss://ops:pw@cache/1", "rediss://ops:***@cache/1"),
            (
                "postgres://db/x?user=u&password=pw&sslmode=require",
                "postgres://db/x?user=u&password=***&sslmode=require",
            ),
            (
                "postgres://db/x?sslpassword=pw#f",
                "postgres://db/x?sslpassword=***#f",
            ),
            ("u:pw@db", "u:***@db"),
            ("redis://cache", "redis://cache"),
            ("postgres://u@db/x", "postgres://u@db/x"),
            ("sqlite://valhalla-ops.db", "sqlite://valhalla-ops.db"),
            ("redis://:pw@[", "redis://:***@["),
        ];
        for (raw, want) in cases {
            assert_eq!(url(raw), want, "{raw}");
        }
    }

    #[test]
    fn long_values_are_cut_with_a_count() {
        let long = "é".repeat(MAX_VALUE_CHARS + 5);
        let s = shown(&long);
        assert!(s.starts_with(&"é".repeat(MAX_VALUE_CHARS)));
        assert!(s.ends_with("… (5 more characters)"), "{s}");
        assert_eq!(shown("short"), "short");
    }

    proptest::proptest! {
        #[test]
        fn output_is_always_one_printable_line(s in ".*") {
            let line = one_line(&s);
            proptest::prop_assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
            proptest::prop_assert!(line.chars().count() <= MAX_MESSAGE_CHARS + 40);
        }
    }
}
