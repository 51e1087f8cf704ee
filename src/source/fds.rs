//! File descriptors: the process limit (`RLIMIT_NOFILE`) bounds how many log files can be held
//! open. A `max_open_files` above what the limit leaves is lowered at start, so that reading
//! never runs into EMFILE and sink connections, spool files and the API keep their handles.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors kept for everything that is not a log file: sockets to sinks and the API,
/// spool and checkpoint files, inotify, the runtime.
const RESERVED: u64 = 64;

/// The soft limit, raised to the hard one when more is wanted (as Go's runtime does): the
/// soft limit is a default, the hard one is the operator's decision.
pub fn limit(wanted: u64) -> Option<u64> {
    let mut l = getrlimit(Resource::Nofile);
    let cur = l.current?;
    if cur < wanted {
        let target = l.maximum.map_or(wanted, |max| max.min(wanted));
        if target > cur {
            l.current = Some(target);
            if setrlimit(Resource::Nofile, l).is_ok() {
                return Some(target);
            }
        }
    }
    Some(cur)
}

/// How many log files each of `sources` may hold open: what the limit leaves after
/// `extra` descriptors (sink connections) and [`RESERVED`], shared out; at least 1.
/// `None` when there is no limit.
pub fn per_source(wanted_total: u64, sources: u64, extra: u64) -> Option<u64> {
    let lim = limit(wanted_total + extra + RESERVED)?;
    Some(share(lim, sources, extra))
}

fn share(limit: u64, sources: u64, extra: u64) -> u64 {
    (limit.saturating_sub(extra + RESERVED) / sources.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_shared_after_what_sinks_and_the_process_need() {
        assert_eq!(share(256, 1, 8), 256 - 8 - RESERVED);
        assert_eq!(share(256, 2, 0), (256 - RESERVED) / 2);
        // Below what the process itself needs: one file at a time still reads everything.
        assert_eq!(share(32, 3, 16), 1);
    }
}
