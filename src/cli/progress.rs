//! A spinner for work that takes more than a moment, on a terminal only.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before the spinner shows: quick commands stay quiet.
const SHOW_AFTER: Duration = Duration::from_millis(500);

/// A spinner on stderr that appears after [`SHOW_AFTER`], and never when stderr is not a
/// terminal (indicatif's stderr target hides itself then) or with `--quiet`.
pub struct Progress {
    bar: ProgressBar,
    reveal: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts hidden, with `message`.
    pub fn start(message: &'static str, quiet: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message);
        let reveal = (!quiet).then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SHOW_AFTER).await;
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(100));
            })
        });
        Progress { bar, reveal }
    }

    /// Says what is happening now.
    pub fn phase(&self, message: &'static str) {
        self.bar.set_message(message);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(reveal) = self.reveal.take() {
            reveal.abort();
        }
        self.bar.finish_and_clear();
    }
}
