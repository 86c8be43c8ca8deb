//! Which windows are open, cached: the request path asks at every call, and a rule's occurrences
//! are worked out once per span of time, not once per request.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, TimeDelta, Utc};

use super::{Interval, When};

/// How much time one working-out of the windows covers.
const SPAN: TimeDelta = TimeDelta::hours(6);

/// The merged intervals of a list of windows around the instants asked about, worked out for a
/// span of six hours and again when asked about an instant outside it. Made for one list: the
/// owner keeps the list and the cache together and passes the same list every time.
#[derive(Default)]
pub struct Openings {
    span: ArcSwapOption<Span>,
}

/// The intervals of each window (by its index) that overlap `[from, to)`.
struct Span {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    intervals: Vec<(usize, Interval)>,
}

impl Openings {
    /// The windows open at `now` (by index into `whens`; `None` for an inactive window) and the
    /// merged interval of each that holds `now`.
    pub fn open_at<'a>(
        &self,
        now: DateTime<Utc>,
        whens: impl Iterator<Item = Option<&'a When>>,
    ) -> Vec<(usize, Interval)> {
        let open = |span: &Span| -> Vec<(usize, Interval)> {
            (span.intervals.iter())
                .filter(|(_, i)| i.holds(now))
                .copied()
                .collect()
        };
        // The usual case borrows the span without touching its count (many requests at once).
        if let Some(span) = self.span.load().as_deref()
            && span.from <= now
            && now < span.to
        {
            return open(span);
        }
        let span = Arc::new(Span::new(now, whens));
        self.span.store(Some(Arc::clone(&span)));
        open(&span)
    }
}

impl Span {
    fn new<'a>(from: DateTime<Utc>, whens: impl Iterator<Item = Option<&'a When>>) -> Span {
        let to = from + SPAN;
        let intervals = whens
            .enumerate()
            .filter_map(|(i, w)| w.map(|w| (i, w)))
            .flat_map(|(i, w)| {
                w.intervals(from)
                    .take_while(move |iv| iv.starts_at < to)
                    .map(move |iv| (i, iv))
            })
            .collect();
        Span { from, to, intervals }
    }
}

/// A copy starts with nothing worked out.
impl Clone for Openings {
    fn clone(&self) -> Openings {
        Openings::default()
    }
}

/// A cache is never part of what a value is.
impl PartialEq for Openings {
    fn eq(&self, _: &Openings) -> bool {
        true
    }
}

impl std::fmt::Debug for Openings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Openings")
    }
}
