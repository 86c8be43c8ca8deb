//! The `valhalla-ops` binary: parse the command line, set up logging, run, map to an exit code.

use std::io::IsTerminal as _;
use std::process::ExitCode;

/// mimalloc keeps loading large state directories fast in long-running processes, where the
/// system allocator fragments between reloads (measured: 0.9 s against 1.8 s per reload of
/// 100,000 rules; see the benchmark in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tracing_subscriber::EnvFilter;
use valhalla_ops::cli::{Cli, exit_code};

fn main() -> ExitCode {
    let cli = Cli::from_args(std::env::args_os().collect());
    let (level, sqlx) = match (cli.quiet, cli.verbose) {
        (true, _) => ("error", "error"),
        // Services say what each pass and each start does; one-shot commands stay quiet.
        (false, 0) if cli.is_service() => ("info", "error"),
        (false, 0) => ("warn", "error"),
        (false, 1) => ("info", "error"),
        // The driver's own notes (slow statements: a lock wait is one) only when asked for.
        (false, _) => ("debug", "warn"),
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("valhalla_ops={level},sqlx={sqlx},warn")));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .init();

    if !cli.is_service() {
        release_freed_memory_at_once();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return exit_code(Err(anyhow::anyhow!("cannot start the async runtime: {e}"))),
    };
    exit_code(runtime.block_on(cli.run()))
}

/// mimalloc's `mi_option_purge_delay` (numbered alike in mimalloc.h of v2 and v3).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc hand freed memory back to the system at once, and the process's memory come in
/// small pages. By default mimalloc keeps freed memory for a second, longer than a one-shot
/// command's load takes, so each file's parse would add to the peak (measured at 100,000 rules:
/// 132 MB peak, 75 MB with this). Services keep the default: under load, reusing freed pages is
/// faster than asking for them again.
fn release_freed_memory_at_once() {
    // SAFETY: mi_option_set stores a number in mimalloc's table of options; it has no
    // precondition and may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
    // Transparent huge pages: mimalloc asks for them, and with the files parsed on every core the
    // memory each thread takes is faulted in 2 MiB at a time. Measured by `validate` at 100,000
    // rules: 76 MiB peak with them, 59 MiB without, for 0.33 s against 0.28 s. The kernel reads
    // this flag at every fault, so it holds for memory mapped before it too.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain numbers and touches only this process's flags.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_commands_release_memory_at_once_in_small_pages() {
        // SAFETY: as for mi_option_set; mi_option_get only reads the table.
        let get = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // mimalloc v3's default purge delay, in milliseconds: the number names that option.
        assert_eq!(get(), 1000);
        release_freed_memory_at_once();
        assert_eq!(get(), 0);
        // And transparent huge pages are off for the process (1: disabled).
        #[cfg(target_os = "linux")]
        // SAFETY: PR_GET_THP_DISABLE only reads this process's flag.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1);
    }
}
