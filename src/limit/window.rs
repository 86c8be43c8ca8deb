//! The sliding-window counter: one rule's count for one subject, smooth across window edges.
//!
//! Time is cut into fixed windows of `w` milliseconds aligned on the epoch. A counter keeps the
//! admitted requests of the current window (`curr`) and of the previous one (`prev`), and
//! estimates the requests of the last `w` milliseconds as `prev × (w − elapsed) / w + curr`:
//! the previous window's count, weighted by how much of it still overlaps the sliding window.
//! A request is admitted while that estimate plus one stays within the limit. All arithmetic is
//! in integers, so the decision at a boundary is exact, never a rounding accident.

/// A rule's limit: at most `max` requests per `window_ms` milliseconds (`max == 0` blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// The window length in milliseconds.
    pub window_ms: u64,
    /// Requests admitted per window.
    pub max: u32,
}

/// What one counter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Requests still admitted now, after this one.
    pub remaining: u32,
    /// Milliseconds until the next request is admitted when none is left (the Retry-After);
    /// otherwise until the current window ends.
    pub reset_ms: u64,
}

/// One counter's state: 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Start of the current window, in milliseconds since the epoch.
    start_ms: u64,
    /// Requests admitted in the previous window (weighted by its overlap when estimating).
    prev: u32,
    /// Requests admitted in the current window.
    curr: u32,
}

impl Window {
    /// Moves the counter to the window that contains `now_ms`.
    fn roll(&mut self, quota: Quota, now_ms: u64) {
        let w = quota.window_ms.max(1);
        let start = now_ms - now_ms % w;
        if start == self.start_ms {
            return;
        }
        self.prev = if start == self.start_ms + w { self.curr } else { 0 };
        self.curr = 0;
        self.start_ms = start;
    }

    /// The estimate scaled by `w` (to stay in integers), with `extra` more requests in `curr`.
    fn scaled(&self, w: u64, elapsed: u64, extra: u64) -> u64 {
        u64::from(self.prev) * (w - elapsed) + (u64::from(self.curr) + extra) * w
    }

    /// Admits and counts one request if the limit allows it; a refused request is not counted,
    /// so a client that keeps retrying does not lock itself out for longer.
    pub fn acquire(&mut self, quota: Quota, now_ms: u64) -> Outcome {
        self.acquire_hits(quota, now_ms, 1)
    }

    /// Admits and counts `hits` requests at once if all of them fit (a gateway's `hits_addend`);
    /// otherwise counts none of them.
    pub fn acquire_hits(&mut self, quota: Quota, now_ms: u64, hits: u32) -> Outcome {
        self.roll(quota, now_ms);
        let allowed = self.admits(quota, now_ms, hits);
        if allowed {
            self.curr = self.curr.saturating_add(hits);
        }
        self.outcome(quota, now_ms, allowed)
    }

    /// What [`acquire`](Self::acquire) would say, without counting.
    pub fn peek(&mut self, quota: Quota, now_ms: u64) -> Outcome {
        self.peek_hits(quota, now_ms, 1)
    }

    /// What [`acquire_hits`](Self::acquire_hits) would say, without counting.
    pub fn peek_hits(&mut self, quota: Quota, now_ms: u64, hits: u32) -> Outcome {
        self.roll(quota, now_ms);
        let allowed = self.admits(quota, now_ms, hits);
        self.outcome(quota, now_ms, allowed)
    }

    /// Takes back `hits` requests counted at `counted_in` (a window start) that another rule
    /// refused.
    pub fn release(&mut self, counted_in: u64, hits: u32) {
        if self.start_ms == counted_in {
            self.curr = self.curr.saturating_sub(hits);
        }
    }

    /// Start of the current window and its count, as snapshots record them.
    pub fn current(&self) -> (u64, u32) {
        (self.start_ms, self.curr)
    }

    /// Whether the counter still carries weight at `now_ms`; an idle one can be forgotten
    /// without changing any decision.
    pub fn is_live(&self, window_ms: u64, now_ms: u64) -> bool {
        now_ms < self.start_ms + 2 * window_ms.max(1)
    }

    /// Whether `hits` more requests fit now.
    fn admits(&self, quota: Quota, now_ms: u64, hits: u32) -> bool {
        let w = quota.window_ms.max(1);
        quota.max > 0 && self.scaled(w, now_ms - self.start_ms, u64::from(hits)) <= u64::from(quota.max) * w
    }

    fn outcome(&self, quota: Quota, now_ms: u64, allowed: bool) -> Outcome {
        let w = quota.window_ms.max(1);
        let elapsed = now_ms - self.start_ms;
        let budget = u64::from(quota.max) * w;
        let used = self.scaled(w, elapsed, 0);
        let remaining = u32::try_from(budget.saturating_sub(used) / w).unwrap_or(u32::MAX);
        let reset_ms = if remaining > 0 {
            w - elapsed
        } else {
            self.wait_ms(quota, elapsed)
        };
        Outcome {
            allowed,
            remaining,
            reset_ms,
        }
    }

    /// Milliseconds from `elapsed` into the current window until one more request fits.
    fn wait_ms(&self, quota: Quota, elapsed: u64) -> u64 {
        let w = quota.window_ms.max(1);
        let (m, p, c) = (u64::from(quota.max), u64::from(self.prev), u64::from(self.curr));
        if m == 0 {
            // A blocking rule never admits; a client is told to come back in a window.
            return w;
        }
        if c < m {
            // Still in this window, once enough of the previous one has slid out:
            // p × (w − e) ≤ (m − c − 1) × w.
            let needed = ((m - c - 1) * w)
                .checked_div(p)
                .map_or(0, |slack| w - slack.min(w));
            return needed.saturating_sub(elapsed).max(1);
        }
        // In the next window, where this window's count becomes the previous one:
        // c × (w − e) ≤ (m − 1) × w.
        let needed = w - ((m - 1) * w / c).min(w);
        (w - elapsed) + needed
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const Q: Quota = Quota {
        window_ms: 60_000,
        max: 10,
    };

    #[test]
    fn hits_are_counted_together_or_not_at_all() {
        let mut w = Window::default();
        let o = w.acquire_hits(Q, 0, 7);
        assert!(o.allowed);
        assert_eq!(o.remaining, 3);
        // Four do not fit in the three left: refused, and nothing counted.
        let refused = w.acquire_hits(Q, 1, 4);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 3);
        assert!(!w.peek_hits(Q, 1, 4).allowed);
        assert!(w.peek_hits(Q, 1, 3).allowed);
        assert_eq!(w.acquire_hits(Q, 2, 3).remaining, 0);
        // Taken back as many as were counted.
        w.release(0, 3);
        assert_eq!(w.current(), (0, 7));
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses_with_a_retry() {
        let mut w = Window::default();
        for i in 0..10 {
            let o = w.acquire(Q, 600_000 + i);
            assert!(o.allowed, "request {i}");
            assert_eq!(o.remaining, 9 - i as u32);
        }
        let refused = w.acquire(Q, 600_010);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // All ten sit at the start of the window: one slides out 1/10 of a window into the next.
        assert_eq!(refused.reset_ms, 60_000 - 10 + 6_000);
    }

    #[test]
    fn the_window_slides_instead_of_resetting() {
        let mut w = Window::default();
        for _ in 0..10 {
            assert!(w.acquire(Q, 0).allowed);
        }
        // Right after the edge the previous window still weighs fully: no burst at the boundary.
        assert!(!w.acquire(Q, 60_000).allowed);
        // Half-way through the next window half of it has slid out.
        assert_eq!(w.peek(Q, 90_000).remaining, 5);
        for _ in 0..5 {
            assert!(w.acquire(Q, 90_000).allowed);
        }
        assert!(!w.acquire(Q, 90_000).allowed);
        // Two windows on, everything has slid out.
        assert_eq!(w.peek(Q, 180_000).remaining, 10);
    }

    #[test]
    fn zero_blocks_everything() {
        let mut w = Window::default();
        let q = Quota {
            window_ms: 1000,
            max: 0,
        };
        let o = w.acquire(q, 5);
        assert!(!o.allowed);
        assert_eq!(o.reset_ms, 1000);
    }

    #[test]
    fn release_takes_back_only_this_windows_count() {
        let mut w = Window::default();
        w.acquire(Q, 0);
        w.release(0, 1);
        assert_eq!(w.current(), (0, 0));
        w.acquire(Q, 0);
        w.acquire(Q, 60_000);
        w.release(0, 1);
        assert_eq!(w.current(), (60_000, 1));
    }

    proptest! {
        /// Retry-After is exact: one millisecond earlier is refused, at it is admitted.
        #[test]
        fn retry_after_is_exact(max in 1u32..50, window in 1u64..5_000, gaps in proptest::collection::vec(0u64..400, 1..200)) {
            let q = Quota { window_ms: window, max };
            let mut w = Window::default();
            let mut now = 1_000_000;
            for gap in gaps {
                now += gap;
                let o = w.acquire(q, now);
                if !o.allowed {
                    let mut early = w;
                    if o.reset_ms > 1 {
                        prop_assert!(!early.peek(q, now + o.reset_ms - 1).allowed);
                    }
                    let mut later = w;
                    prop_assert!(later.peek(q, now + o.reset_ms).allowed);
                }
            }
        }

        /// However requests arrive, no window-long interval admits more than twice the limit,
        /// and no interval of one window that starts on a window edge admits more than the limit
        /// plus the previous window's weight (the algorithm's documented accuracy).
        #[test]
        fn never_admits_more_than_twice_the_limit_in_any_window(max in 1u32..30, gaps in proptest::collection::vec(0u64..300, 1..400)) {
            let q = Quota { window_ms: 1_000, max };
            let mut w = Window::default();
            let mut now = 0;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                if w.acquire(q, now).allowed {
                    admitted.push(now);
                }
            }
            for (i, &t) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|&&u| u < t + 1_000).count();
                prop_assert!(in_window <= 2 * max as usize);
            }
        }

        /// A steady client one request per window under the limit is never refused, whatever
        /// its phase against the window edges.
        #[test]
        fn a_steady_rate_under_the_limit_is_always_admitted(max in 2u32..100, windows in 1u64..20, phase in 0u64..10_000) {
            let q = Quota { window_ms: 10_000, max };
            let mut w = Window::default();
            let step = 10_000_u64.div_ceil(u64::from(max - 1));
            let mut now = phase;
            while now < windows * 10_000 {
                prop_assert!(w.acquire(q, now).allowed, "refused at {now}");
                now += step;
            }
        }
    }
}
