//! Seeing the state directory change: a notify watch on the directory itself, the noise it
//! ignores, the debounce of a burst, and a new watch when the directory is replaced.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// The longest a burst of file events can postpone a pass.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// A new watch on a directory that was replaced; while that fails, `lost` stays set and the
/// loop keeps looking every second.
pub(super) fn rewatch(
    dir: &Path,
    changed: &Arc<Notify>,
    lost: &Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    lost.store(false, Ordering::Release);
    match watch_dir(dir, Arc::clone(changed), Arc::clone(lost)) {
        Ok(watcher) => {
            tracing::info!(dir = %dir.display(), "the state directory was replaced; watching the new one");
            Some(watcher)
        }
        Err(e) => {
            lost.store(true, Ordering::Release);
            tracing::warn!(error = %e, "cannot watch the replaced state directory");
            None
        }
    }
}

/// Waits until no file event has arrived for `quiet`, or [`MAX_DEBOUNCE`] has passed.
pub(super) async fn debounce(changed: &Notify, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
    loop {
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(quiet) => return,
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Watches the directory itself (not its files), recursively, so that an editor's atomic save
/// (write, then rename over), a deleted and recreated file, a `git checkout` and a Kubernetes
/// ConfigMap update (a `..data` symlink swapped) are all seen.
pub(super) fn watch_dir(
    dir: &Path,
    changed: Arc<Notify>,
    lost: Arc<AtomicBool>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let root = dir.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Reads (ours included: every pass reads the files) are not changes.
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        // The directory itself went away (deleted, or moved aside by a deploy): so did its watch.
        Ok(event)
            if event.paths.contains(&root)
                && matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                ) =>
        {
            lost.store(true, Ordering::Release);
            changed.notify_one();
        }
        Ok(event) if !event.paths.is_empty() && event.paths.iter().all(|p| is_noise(&root, p)) => {}
        // One stored permit: an event during a pass wakes the loop right after it.
        Ok(_) => changed.notify_one(),
        Err(e) => {
            tracing::warn!(error = %e, "watching the state directory failed; the interval still applies");
            changed.notify_one();
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Git's own bookkeeping and editors' swap, backup and lock files: churn that is never state.
/// Other hidden entries are changes: a ConfigMap update shows only as a `..data` swap.
fn is_noise(root: &Path, path: &Path) -> bool {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let in_git = relative.components().any(|c| c.as_os_str() == ".git");
    let name = relative
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let scratch = [".swp", ".swx", ".swo", "~"]
        .iter()
        .any(|end| name.ends_with(end))
        || name.starts_with(".#")
        || name == "4913";
    in_git || scratch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_git_internals_and_editor_scratch_files_are_noise() {
        let root = Path::new("/state");
        let noise = |p: &str| is_noise(root, Path::new(p));
        assert!(noise("/state/.git/index"));
        assert!(noise("/state/.rules.yaml.swp"));
        assert!(noise("/state/rules.yaml~"));
        assert!(noise("/state/.#rules.yaml"));
        assert!(!noise("/state/rules.yaml"));
        assert!(!noise("/state/..data"), "a ConfigMap swap is a change");
        assert!(!noise("/state/team/limits.yml"));
    }
}
