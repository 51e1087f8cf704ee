//! Many files: `run --once` says when it could not finish, the descriptor limit is respected
//! (`ulimit -n`), and follow mode holds no more handles than `max_open_files` while still
//! noticing growth in files it has closed.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn config(extra: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
{extra}
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
batch = {{ max_age = "200ms" }}
"#
    )
}

#[test]
fn run_once_that_cannot_read_a_file_exits_non_zero_naming_what_is_left() {
    let lf = Lf::new(&config(""));
    write_lines(&lf.path("logs/a.log"), 0, 100);
    // No whole line yet: a writer is mid-record, so nothing of it can be read as a record.
    std::fs::write(lf.path("logs/b.log"), "{\"id\": 100, \"half\": \"a rec").unwrap();
    let out = lf.run_once_incomplete();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("source jobs: 1 files with 26 bytes left unread"),
        "{err}"
    );
    assert!(err.contains("LEFT UNREAD: 1 files, 26 bytes"), "{err}");
    assert!(err.contains("run --once did NOT finish"), "{err}");
    // What could be read was delivered and checkpointed.
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 100);
    assert_eq!(assert_all_present(&recs, 100), 0);
}

#[test]
fn run_once_whose_batches_were_dead_lettered_exits_non_zero() {
    let rx = receiver::Receiver::start(None);
    rx.state.lock().unwrap().authorization = Some("Bearer right".into());
    let lf = Lf::new(&format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["endpoint"]
[sinks.endpoint]
type = "http"
url = "{}"
check = "none"
auth = {{ bearer = {{ token = "wrong" }} }}
allow_plaintext_credentials = true
"#,
        rx.url("/in")
    ));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    let out = lf.run_once_incomplete();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "sink endpoint: 1 batches not delivered, kept under data_dir/dead-letter/endpoint"
        ),
        "{err}"
    );
    assert!(err.contains("\"complete\":false"), "{err}");
}

#[test]
fn a_low_descriptor_limit_lowers_max_open_files_and_every_file_is_read() {
    // max_open_files is 1,024 by default: more than `ulimit -n 256` allows.
    let lf = Lf::new(&config(""));
    for i in 0..600u64 {
        write_lines(&lf.path(&format!("logs/f{i:04}.log")), i * 10, 10);
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec '{BIN}' run --once --config '{}'",
            lf.cfg.display()
        ))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("max_open_files is more than the process's descriptor limit"),
        "{err}"
    );
    assert!(!err.contains("Too many open files"), "{err}");
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 6_000);
    assert_eq!(assert_all_present(&recs, 6_000), 0);
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn follow_mode_holds_at_most_max_open_files_and_still_sees_closed_files_grow() {
    let lf = Lf::new(&config("max_open_files = 16"));
    for i in 0..300u64 {
        write_lines(&lf.path(&format!("logs/f{i:04}.log")), i * 10, 10);
    }
    let run = lf.spawn();
    wait_until(Duration::from_secs(60), "every file read", || {
        lf.archive("archive").len() == 3_000
    });
    let pid = run.child.id();
    let fds = open_descriptors(pid);
    // 16 log files, and the process's own: sockets, inotify, spool, stdio, the runtime.
    assert!(fds <= 16 + 48, "{fds} descriptors open");
    // Files long closed for the limit are still followed: growth in the first and the last.
    write_lines(&lf.path("logs/f0000.log"), 3_000, 5);
    write_lines(&lf.path("logs/f0299.log"), 3_005, 5);
    wait_until(
        Duration::from_secs(30),
        "growth of closed files read",
        || lf.archive("archive").len() == 3_010,
    );
    assert!(open_descriptors(pid) <= 16 + 48);
    assert!(run.term(Duration::from_secs(10)).success());
    let recs = lf.final_archive("archive");
    assert_eq!(assert_all_present(&recs, 3_010), 0);
}

#[test]
fn a_hot_file_among_9999_quiet_ones_stays_under_a_second_behind_at_20000_lines_per_second() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    const QUIET: u64 = 9_999;
    const RATE: u64 = 20_000;
    const SECONDS: u64 = 3;
    let lf = Lf::new(&config(""));
    for i in 0..QUIET {
        write_lines(&lf.path(&format!("logs/q{i:05}.log")), i, 1);
    }
    let run = lf.spawn();
    let read = || run.metric("logferry_records_read_total", "source=\"jobs\"") as u64;
    wait_until(Duration::from_secs(120), "the quiet files read", || {
        read() == QUIET
    });
    // Found while the quiet files hold the handles: it waits for one like any other file.
    let hot = lf.path("logs/hot.log");
    write_lines(&hot, QUIET, 1);
    wait_until(Duration::from_secs(30), "the hot file found", || {
        read() == QUIET + 1
    });
    let written = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done, hot) = (written.clone(), done.clone(), hot.clone());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let total = RATE * SECONDS;
            let mut n = 1;
            while n < total {
                // Lines due by now at RATE, written in one append.
                let due = ((start.elapsed().as_secs_f64() * RATE as f64) as u64).min(total);
                if due > n {
                    write_lines(&hot, QUIET + n, due - n);
                    n = due;
                    written.store(n, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // Lag in lines: what the writer had written once the scrape returned, less what logferry
    // had read; a second's worth of lines is a second behind.
    let mut worst = 0;
    while !done.load(Ordering::SeqCst) {
        let got = read() - QUIET;
        let lag = written.load(Ordering::SeqCst).saturating_sub(got);
        worst = worst.max(lag);
        std::thread::sleep(Duration::from_millis(100));
    }
    writer.join().unwrap();
    assert!(
        worst < RATE,
        "the hot file fell {worst} lines ({:.2} s) behind",
        worst as f64 / RATE as f64
    );
    wait_until(Duration::from_secs(30), "every line read", || {
        read() == QUIET + RATE * SECONDS
    });
    assert!(run.term(Duration::from_secs(10)).success());
    let recs = lf.final_archive("archive");
    assert_eq!(assert_all_present(&recs, QUIET + RATE * SECONDS), 0);
}
