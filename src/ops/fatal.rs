//! The two ways logferry ends without asking its stages: a panic anywhere, and a shutdown
//! deadline that a stage did not meet. Both are never a clean exit.
//!
//! Exit codes of `logferry run`: 0 everything read was handed on; 1 an error, or the shutdown
//! deadline cut the flush short; 2 an invalid configuration; 70 an internal error (a panic).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `EX_SOFTWARE` from sysexits.h: an internal error.
pub const PANIC_EXIT: i32 = 70;

/// A panic in any thread (a source, a compression thread, a runtime worker) logs its stage and
/// ends the process at once. Letting the thread die alone would leave a stage silently gone (a
/// source that reads nothing, a sink with no worker) behind a healthy-looking process; exiting
/// non-zero lets the orchestrator restart it, and the checkpoints make the restart lose nothing
/// (only what is durable was ever checkpointed).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let stage = std::thread::current()
            .name()
            .unwrap_or("unnamed thread")
            .to_string();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%stage, panic = %what, location = %at, "internal error: a stage panicked; exiting so that the process is restarted (what was not durable is read again)");
        eprintln!(
            "logferry: internal error in {stage}: {} at {at}",
            logferry_sink::redact::text(&what)
        );
        std::process::exit(PANIC_EXIT);
    }));
}

static ARMED: AtomicBool = AtomicBool::new(false);

/// Starts (once) a thread that ends the process with exit 1 if it is still running `limit`
/// after shutdown began, whatever any stage is doing: the last guard behind the pipeline's own
/// deadlines. What was not finished is not checkpointed and is read again at the next start.
pub fn shutdown_watchdog(limit: Duration) {
    if ARMED.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(after = ?limit, "shutdown did not finish in time; exiting now (what was not handed on is read again at the next start)");
            eprintln!("logferry: shutdown did not finish within {limit:?}; exiting");
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown watchdog");
    }
}
