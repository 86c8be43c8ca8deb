//! Shutting down on Ctrl-C or SIGTERM: graceful on the first signal, forced on the second.

use std::future::Future;

/// The exit status of a forced exit: 128 + SIGINT, as shells report an interrupted command.
const FORCED_EXIT: i32 = 130;

/// Completes on the first Ctrl-C or SIGTERM; a second one exits the process at once, for an
/// operator who will not wait for what is in flight.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives while a pass is still running is not lost (and does not kill the process
/// mid-transaction).
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let mut signals = Signals::install();
    async move {
        signals.next().await;
        tracing::info!("shutting down: finishing what is in flight (a second signal forces exit)");
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("a second signal: exiting now, without waiting");
            std::process::exit(FORCED_EXIT);
        });
    }
}

/// Ctrl-C and SIGTERM, as one stream of signals.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal (never, if no handler could be installed).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.interrupt) => {},
                () = recv(&mut self.terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Background tasks that stop when this guard is dropped, so whoever starts them cannot forget
/// to stop them.
#[must_use = "the tasks stop as soon as the guard is dropped"]
#[derive(Debug, Default)]
pub struct TaskGuard(Vec<tokio::task::JoinHandle<()>>);

impl TaskGuard {
    /// Guards `tasks`.
    pub fn new(tasks: Vec<tokio::task::JoinHandle<()>>) -> TaskGuard {
        TaskGuard(tasks)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
