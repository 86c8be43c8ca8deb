//! Renders a plan for people (text, markdown) and machines (json, also the saved-plan format).

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

use super::{Action, Change, FieldChange, MassRemoval, Plan, PlanOptions, Summary, Upcoming};
use crate::mode::ChangeFreeze;
use crate::model::Kind;

/// The output formats of `reconcile` and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// The JSON form of a plan: `--format json` prints it and `--out` saves it. Stable: fields are
/// only ever added. It carries no secret, only fingerprints of the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDocument {
    /// Always `valhalla-ops/plan/v1`.
    pub format: String,
    pub summary: Summary,
    pub has_changes: bool,
    /// Digest of the store snapshot the plan was computed against.
    pub store_fingerprint: String,
    /// Digest of the desired state the plan was computed from.
    pub state_fingerprint: String,
    pub options: PlanOptions,
    pub mass_removals: Vec<MassRemoval>,
    pub changes: Vec<Change>,
    /// The freeze of changes that refuses this plan's apply now (unless `--during-freeze`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_by: Option<ChangeFreeze>,
    /// The next occurrences of the recurring windows the plan creates or changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upcoming: Vec<Upcoming>,
}

/// The `format` tag of [`PlanDocument`].
pub const PLAN_FORMAT: &str = "valhalla-ops/plan/v1";

impl PlanDocument {
    /// The document of `plan`, computed from a desired state with `state_fingerprint`.
    pub fn new(plan: &Plan, state_fingerprint: String) -> PlanDocument {
        let summary = plan.summary();
        PlanDocument {
            format: PLAN_FORMAT.into(),
            summary,
            has_changes: summary.changes() > 0,
            store_fingerprint: plan.store_fingerprint.clone(),
            state_fingerprint,
            options: plan.options,
            mass_removals: plan.mass_removals.clone(),
            changes: plan.changes(),
            frozen_by: plan.frozen_by.clone(),
            upcoming: plan.upcoming.clone(),
        }
    }
}

const ADD: Style = AnsiColor::Green.on_default();
const DEL: Style = AnsiColor::Red.on_default();
const CHANGE: Style = AnsiColor::Yellow.on_default();
const HOLD: Style = AnsiColor::Magenta.on_default();
const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();

fn sigil(action: Action) -> (&'static str, Style) {
    match action {
        Action::Create => ("+", ADD),
        Action::Update => ("~", CHANGE),
        Action::Delete => ("-", DEL),
        Action::Deactivate => ("-", DEL),
        Action::Held => ("!", HOLD),
        Action::Unmanaged => ("?", DIM),
    }
}

/// Quotes a value when it would otherwise be hard to read (empty, spaces, quotes).
fn quote(v: &str) -> String {
    if v.is_empty() || v.contains(char::is_whitespace) || v.contains(['"', '\'', '=']) {
        format!("{v:?}")
    } else {
        v.to_owned()
    }
}

/// `old → new`; on a terminal, long text is shown as a word diff with `similar`.
fn field_line(f: &FieldChange, color: bool) -> String {
    if f.secret {
        return format!(
            "{}: {}",
            f.field,
            if f.old.is_none() && f.new.is_some() {
                "(set)"
            } else {
                "(changed)"
            }
        );
    }
    let (old, new) = (f.old.as_deref(), f.new.as_deref());
    match (old, new) {
        (Some(o), Some(n)) if color && o.len() + n.len() > 40 => {
            let mut out = format!("{}: ", f.field);
            for change in TextDiff::from_words(o, n).iter_all_changes() {
                let style = match change.tag() {
                    ChangeTag::Delete => DEL.strikethrough(),
                    ChangeTag::Insert => ADD.underline(),
                    ChangeTag::Equal => Style::new(),
                };
                let _ = write!(out, "{style}{}{style:#}", change.value());
            }
            out
        }
        (Some(o), Some(n)) => format!("{}: {} → {}", f.field, quote(o), quote(n)),
        (None, Some(n)) => format!("{}: {}", f.field, quote(n)),
        (Some(o), None) => format!("{}: {} → (none)", f.field, quote(o)),
        (None, None) => f.field.clone(),
    }
}

fn hold_text(change: &Change) -> String {
    match &change.hold {
        Some(h) => {
            let until = h.until.map_or("until cleared".to_owned(), |t| {
                format!("until {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            });
            format!(
                "held by override #{} ({}, {:?}, {until})",
                h.override_id, h.actor, h.reason
            )
        }
        None => String::new(),
    }
}

/// The lines of one change without styling: the head and its indented details.
fn change_lines(c: &Change, color: bool) -> (String, Vec<String>) {
    let verb = c.action.as_str();
    let head = match c.action {
        Action::Create => {
            let fields: Vec<String> = c
                .fields
                .iter()
                .map(|f| {
                    if f.secret {
                        format!("{}=(set)", f.field)
                    } else {
                        format!("{}={}", f.field, quote(f.new.as_deref().unwrap_or("")))
                    }
                })
                .collect();
            return (format!("{verb:<10} {}  {}", c.key, fields.join(" ")), Vec::new());
        }
        Action::Held => format!("{verb:<10} {}  {}", c.key, hold_text(c)),
        Action::Unmanaged => format!(
            "{verb:<10} {}  (owned by the API, not in git; --prune removes it)",
            c.key
        ),
        Action::Delete if c.owner == Some(crate::domain::Owner::Api) => {
            format!("{verb:<10} {}  (api-owned, pruned)", c.key)
        }
        _ => format!("{verb:<10} {}", c.key),
    };
    let prefix = if c.action == Action::Held {
        "once released: "
    } else {
        ""
    };
    let details = c
        .fields
        .iter()
        .map(|f| format!("{prefix}{}", field_line(f, color)))
        .collect();
    (head, details)
}

/// `next: 2026-12-06 01:00Z → 03:00Z, …` under a recurring window the plan creates or changes.
fn upcoming_line(doc: &PlanDocument, c: &Change) -> Option<String> {
    let up = (c.kind == Kind::MaintenanceWindow)
        .then(|| doc.upcoming.iter().find(|u| u.window == c.key))
        .flatten()?;
    let shown: Vec<String> = up.next.iter().map(ToString::to_string).collect();
    Some(match shown.is_empty() {
        true => "next: none".into(),
        false => format!("next: {}", shown.join(", ")),
    })
}

/// Why the apply would be refused now, and the way through.
pub fn freeze_line(f: &ChangeFreeze) -> String {
    format!(
        "changes are frozen by window {} until {}; to apply anyway, run again with --during-freeze \"reason\"",
        f.window,
        f.until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

fn summary_line(s: &Summary) -> String {
    let mut line = format!(
        "{} to create, {} to update, {} to delete, {} to deactivate",
        s.create, s.update, s.delete, s.deactivate
    );
    if s.held > 0 || s.unmanaged > 0 {
        let _ = write!(line, "; {} held by override, {} unmanaged", s.held, s.unmanaged);
    }
    line
}

fn mass_removal_line(m: &MassRemoval) -> String {
    format!(
        "{}: removes {} of {} git-owned resources; refused without --allow-mass-removal",
        m.kind.title(),
        m.removing,
        m.total
    )
}

/// The plan for a terminal or a log: one line per change, fields old → new, and a summary.
/// Styles are ANSI codes; print through `anstream` so pipes and `NO_COLOR` get plain text.
pub fn text(doc: &PlanDocument, color: bool) -> String {
    let mut out = String::new();
    let mut kind: Option<Kind> = None;
    for c in &doc.changes {
        if kind != Some(c.kind) {
            kind = Some(c.kind);
            let _ = writeln!(out, "{BOLD}{}{BOLD:#}", c.kind.title());
        }
        let (sig, style) = sigil(c.action);
        let (head, details) = change_lines(c, color);
        let _ = writeln!(out, "  {style}{sig} {head}{style:#}");
        for d in details.into_iter().chain(upcoming_line(doc, c)) {
            let _ = writeln!(out, "      {d}");
        }
    }
    for m in &doc.mass_removals {
        let _ = writeln!(out, "{DEL}refused: {}{DEL:#}", mass_removal_line(m));
    }
    if let Some(f) = &doc.frozen_by {
        let _ = writeln!(out, "{DEL}refused now: {}{DEL:#}", freeze_line(f));
    }
    if !doc.changes.is_empty() {
        out.push('\n');
    }
    if doc.has_changes {
        let _ = writeln!(out, "{BOLD}Plan:{BOLD:#} {}.", summary_line(&doc.summary));
    } else {
        let _ = writeln!(
            out,
            "{BOLD}No changes.{BOLD:#} The store matches the desired state ({}).",
            summary_line(&doc.summary)
        );
    }
    out
}

/// The largest markdown plan: GitHub refuses comments over 65,536 characters; the rest is
/// headroom for what a workflow wraps around the plan.
pub const MARKDOWN_LIMIT: usize = 60_000;

/// The plan as a pull-request comment: a table of counts, held overrides called out, then a
/// diff block per kind, collapsed when long, and cut at [`MARKDOWN_LIMIT`] with a note saying
/// how much is left out (the full plan is `--format text` or `json`).
pub fn markdown(doc: &PlanDocument) -> String {
    const COLLAPSE_OVER: usize = 15;
    let s = &doc.summary;
    let mut out = String::from("### valhalla-ops plan\n\n");
    out.push_str(
        "| create | update | delete | deactivate | held | unmanaged |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} |\n",
        s.create, s.update, s.delete, s.deactivate, s.held, s.unmanaged
    );
    if !doc.has_changes {
        out.push_str("**No changes.** The store matches the desired state.\n\n");
    }
    for m in &doc.mass_removals {
        let _ = writeln!(out, "> [!CAUTION]\n> {}\n", mass_removal_line(m));
    }
    if let Some(f) = &doc.frozen_by {
        let _ = writeln!(
            out,
            "> [!CAUTION]\n> The apply would be refused now: {}\n",
            freeze_line(f)
        );
    }
    let held: Vec<&Change> = doc.changes.iter().filter(|c| c.action == Action::Held).collect();
    if !held.is_empty() {
        out.push_str("> [!WARNING]\n> Held by emergency overrides; the reconciler leaves these alone until they expire or are cleared:\n");
        for c in held.iter().take(50) {
            let _ = writeln!(
                out,
                "> - `{}` {}: {}",
                c.kind,
                code_span(&c.key),
                code_span(&hold_text(c))
            );
        }
        if held.len() > 50 {
            let _ = writeln!(out, "> - … and {} more", held.len() - 50);
        }
        out.push('\n');
    }
    let footer = format!("<sub>{}.</sub>\n", summary_line(s));
    // Room for the diff blocks, the footer and the note that says what was left out.
    let budget = MARKDOWN_LIMIT.saturating_sub(out.len() + footer.len() + 400);
    let mut shown = 0;
    let mut blocks = String::new();
    'kinds: for kind in Kind::ALL {
        let changes: Vec<&Change> = doc.changes.iter().filter(|c| c.kind == kind).collect();
        if changes.is_empty() {
            continue;
        }
        let mut block = String::from("```diff\n");
        let mut full = true;
        for c in &changes {
            let mut lines = markdown_lines(c);
            if let Some(next) = upcoming_line(doc, c) {
                let _ = writeln!(lines, "      {next}");
            }
            // The block's own wrapping (summary, fences) is under 200 characters.
            if blocks.len() + block.len() + lines.len() + 200 > budget {
                full = false;
                break;
            }
            block.push_str(&lines);
            shown += 1;
        }
        block.push_str("```\n");
        if block.len() > "```diff\n```\n".len() {
            if changes.len() > COLLAPSE_OVER {
                let _ = write!(
                    blocks,
                    "<details><summary>{} ({} changes)</summary>\n\n{block}\n</details>\n\n",
                    kind.title(),
                    changes.len()
                );
            } else {
                let _ = write!(blocks, "#### {}\n\n{block}\n", kind.title());
            }
        }
        if !full {
            break 'kinds;
        }
    }
    out.push_str(&blocks);
    if shown < doc.changes.len() {
        let _ = writeln!(
            out,
            "> [!NOTE]\n> {} of {} changes are not shown: the comment would be too long. The full plan is `--format text` or `--format json` (the example workflows attach it).\n",
            doc.changes.len() - shown,
            doc.changes.len()
        );
    }
    out.push_str(&footer);
    out
}

/// `text` as a markdown code span, where nothing is markup: no HTML, no link, no mention, no
/// emphasis (an override's reason, its actor and a key are anyone's words). The fence is one
/// backtick longer than the longest run in the text, so the text cannot close it; `text` is one
/// line already ([`hold_text`] escapes what it quotes).
fn code_span(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    // A span that begins or ends with a backtick needs a space between it and the fence; one
    // space each side is taken off again by markdown.
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// One change in a `diff` block: the head with its sigil, then its fields. An update's field is
/// a `-` line with the old value and a `+` line with the new one, so that diff highlighting
/// colours both.
fn markdown_lines(c: &Change) -> String {
    let (head, details) = change_lines(c, false);
    let mut out = format!("{} {head}\n", sigil(c.action).0);
    let pairs = matches!(c.action, Action::Update | Action::Deactivate);
    for (f, d) in c.fields.iter().zip(details) {
        match (&f.old, &f.new) {
            (Some(old), Some(new)) if pairs && !f.secret => {
                let _ = writeln!(out, "-     {}: {}", f.field, quote(old));
                let _ = writeln!(out, "+     {}: {}", f.field, quote(new));
            }
            _ => {
                let _ = writeln!(out, "      {d}");
            }
        }
    }
    out
}

/// The plan as pretty JSON ([`PlanDocument`]).
pub fn json(doc: &PlanDocument) -> String {
    // A plan document is plain data with string keys: serializing it cannot fail.
    serde_json::to_string_pretty(doc).expect("a plan document serializes to JSON") + "\n"
}

/// Renders in `format`.
pub fn render(doc: &PlanDocument, format: Format, color: bool) -> String {
    match format {
        Format::Text => text(doc, color),
        Format::Json => json(doc),
        Format::Markdown => markdown(doc),
    }
}
