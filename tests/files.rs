//! Rotation, truncation, deletion and back-pressure, with real logrotate where it applies.

mod common;

use common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn config(include: &str, sink_extra: &str) -> String {
    let sink_extra = if sink_extra.contains("batch =") {
        sink_extra.to_string()
    } else {
        format!("batch = {{ max_age = \"300ms\" }}\n{sink_extra}")
    };
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/{include}"]
sinks = ["archive"]
rotate_wait = "1s"
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{sink_extra}
"#
    )
    .replace("{batch}", "")
}

fn line(i: u64) -> String {
    format!(
        "{{\"id\":{i},\"account_id\":\"acct{}\",\"msg\":\"step done\"}}\n",
        i % 3
    )
}

fn read_all(run: &Running, n: u64) {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} records read"),
        || run.metric("logferry_records_read_total", "source=\"jobs\"") >= n as f64,
    );
}

fn archived_all(lf: &Lf, n: usize) {
    wait_until(
        Duration::from_secs(60),
        &format!("{n} records archived"),
        || lf.archive("archive").len() >= n,
    );
}

#[test]
fn logrotate_rename_and_create_loses_nothing() {
    let lf = Lf::new(&config("app.log", ""));
    let log = lf.path("logs/app.log");
    std::fs::write(&log, line(0)).unwrap();
    let conf = lf.path("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 100\n  create\n  missingok\n  nocompress\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let run = lf.spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(1));
    let writer = {
        let (stop, written, log) = (stop.clone(), written.clone(), log.clone());
        std::thread::spawn(move || {
            // Opens by name for every write, like a logger that follows the live name.
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log) else {
                    continue;
                };
                let start = written.load(Ordering::Relaxed);
                let text: String = (start..start + 50).map(line).collect();
                f.write_all(text.as_bytes()).unwrap();
                written.store(start + 50, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    for round in 0..5 {
        let before = written.load(Ordering::Relaxed);
        wait_until(
            Duration::from_secs(10),
            "the writer to make progress",
            || written.load(Ordering::Relaxed) > before + 500,
        );
        let st = std::process::Command::new(logrotate())
            .arg("-f")
            .arg("-s")
            .arg(lf.path("logrotate.state"))
            .arg(&conf)
            .status()
            .unwrap();
        assert!(st.success(), "logrotate round {round} failed");
        // Like logrotate from cron: the next rotation comes after this one was noticed
        // (a file created and rotated away between two scans could not be seen at all).
        wait_until(
            Duration::from_secs(10),
            "the rotation to be noticed",
            || run.metric("logferry_files_rotated_total", "source=\"jobs\"") >= (round + 1) as f64,
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let n = written.load(Ordering::Relaxed);
    assert!(
        lf.path("logs/app.log.5").exists(),
        "logrotate rotated five times"
    );
    archived_all(&lf, n as usize);
    let rotated = run.metric("logferry_files_rotated_total", "source=\"jobs\"");
    assert!(run.term(Duration::from_secs(20)).success());
    let recs = lf.final_archive("archive");
    assert_eq!(
        assert_all_present(&recs, n),
        0,
        "no duplicates without a crash"
    );
    assert!(rotated >= 5.0, "rotations seen: {rotated}");
}

#[test]
fn writer_rotating_every_second_at_thousands_of_lines_per_second() {
    let lf = Lf::new(&config("app.log", ""));
    let log = lf.path("logs/app.log");
    std::fs::File::create(&log).unwrap();
    let run = lf.spawn();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut id = 0u64;
    let start = std::time::Instant::now();
    let mut rotations = 0;
    let mut last_rotation = start;
    // About 5,000 lines a second for 6 seconds, renaming the file away every second.
    while start.elapsed() < Duration::from_secs(6) {
        let text: String = (id..id + 50).map(line).collect();
        f.write_all(text.as_bytes()).unwrap();
        id += 50;
        std::thread::sleep(Duration::from_millis(10));
        if last_rotation.elapsed() >= Duration::from_secs(1) {
            rotations += 1;
            std::fs::rename(&log, lf.path(&format!("logs/app.log.{rotations}"))).unwrap();
            // Lines written to the old handle after the rename, as a real logger would.
            f.write_all(line(id).as_bytes()).unwrap();
            id += 1;
            f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            last_rotation = std::time::Instant::now();
        }
    }
    drop(f);
    assert!(rotations >= 5);
    archived_all(&lf, id as usize);
    assert!(run.term(Duration::from_secs(20)).success());
    assert_eq!(assert_all_present(&lf.final_archive("archive"), id), 0);
}

#[test]
fn logrotate_copytruncate_reads_the_new_content_from_the_start() {
    let lf = Lf::new(&config("app.log", ""));
    let log = lf.path("logs/app.log");
    let append = |from: u64, n: u64| {
        let text: String = (from..from + n).map(line).collect();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    };
    append(0, 3000);
    let conf = lf.path("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 5\n  copytruncate\n  nocompress\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let run = lf.spawn();
    let mut total = 3000;
    for _ in 0..3 {
        // copytruncate loses what is written between its copy and its truncate (logrotate's
        // own caveat), and what was not read before: so rotate once everything is read.
        read_all(&run, total);
        let st = std::process::Command::new(logrotate())
            .arg("-f")
            .arg("-s")
            .arg(lf.path("state"))
            .arg(&conf)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        append(total, 1000);
        total += 1000;
    }
    archived_all(&lf, total as usize);
    let truncations = run.metric("logferry_files_truncated_total", "source=\"jobs\"");
    assert!(run.term(Duration::from_secs(20)).success());
    assert_eq!(assert_all_present(&lf.final_archive("archive"), total), 0);
    assert_eq!(truncations, 3.0);
}

#[test]
fn rewrite_in_place_past_the_old_offset_is_noticed() {
    let lf = Lf::new(&config("app.log", ""));
    let log = lf.path("logs/app.log");
    std::fs::write(&log, (0..100).map(line).collect::<String>()).unwrap();
    let run = lf.spawn();
    read_all(&run, 100);
    // Truncate and immediately write more than before: the size never looks smaller.
    std::fs::write(&log, (100..400).map(line).collect::<String>()).unwrap();
    archived_all(&lf, 400);
    assert!(run.term(Duration::from_secs(20)).success());
    assert_eq!(assert_all_present(&lf.final_archive("archive"), 400), 0);
}

/// Puts a regular file where the archive directory should be: every write fails and retries.
fn block_archive(lf: &Lf) {
    std::fs::write(lf.path("archive"), b"not a directory").unwrap();
}

fn unblock_archive(lf: &Lf) {
    std::fs::remove_file(lf.path("archive")).unwrap();
}

#[test]
fn spool_full_pauses_reading_then_drains_everything() {
    let lf = Lf::new(&config(
        "*.log",
        "spool_max_bytes = \"64KiB\"\nbatch = { max_records = 200, max_age = \"300ms\" }",
    ));
    block_archive(&lf);
    let n = 20_000;
    std::fs::write(lf.path("logs/a.log"), (0..n).map(line).collect::<String>()).unwrap();
    let run = lf.spawn();
    wait_until(
        Duration::from_secs(20),
        "retries while the archive is blocked",
        || run.metric("logferry_retries_total", "sink=\"archive\"") >= 3.0,
    );
    // Reading stops short of the end while the spool is full.
    let spooled = run.metric("logferry_spool_bytes", "sink=\"archive\"");
    let read = run.metric("logferry_records_read_total", "source=\"jobs\"");
    assert!(
        spooled > 0.0 && spooled <= 2.0 * 64.0 * 1024.0,
        "spool bytes {spooled}"
    );
    assert!(read < n as f64, "reading paused at {read} of {n}");
    unblock_archive(&lf);
    archived_all(&lf, n as usize);
    wait_until(Duration::from_secs(10), "spool empty", || {
        run.metric("logferry_spool_batches", "sink=\"archive\"") == 0.0
    });
    assert!(run.term(Duration::from_secs(20)).success());
    assert_eq!(assert_all_present(&lf.final_archive("archive"), n), 0);
}

#[test]
fn a_file_deleted_while_unread_is_drained_through_its_handle() {
    let lf = Lf::new(&config(
        "*.log",
        "spool_max_bytes = \"32KiB\"\nbatch = { max_records = 100, max_age = \"300ms\" }",
    ));
    block_archive(&lf);
    let n = 10_000;
    let log = lf.path("logs/a.log");
    std::fs::write(&log, (0..n).map(line).collect::<String>()).unwrap();
    let run = lf.spawn();
    wait_until(Duration::from_secs(20), "the spool to fill", || {
        run.metric("logferry_retries_total", "sink=\"archive\"") >= 2.0
    });
    assert!(run.metric("logferry_records_read_total", "source=\"jobs\"") < n as f64);
    std::fs::remove_file(&log).unwrap();
    unblock_archive(&lf);
    archived_all(&lf, n as usize);
    wait_until(
        Duration::from_secs(10),
        "the deleted file to be closed",
        || run.metric("logferry_files_drained_total", "source=\"jobs\"") >= 1.0,
    );
    assert!(run.term(Duration::from_secs(20)).success());
    assert_eq!(assert_all_present(&lf.final_archive("archive"), n), 0);
}

#[test]
fn more_files_than_max_open_files_are_all_read() {
    let lf = Lf::new(&config("*.log", "").replace(
        "rotate_wait = \"1s\"",
        "rotate_wait = \"1s\"\nmax_open_files = 3",
    ));
    for f in 0..12u64 {
        std::fs::write(
            lf.path(&format!("logs/f{f}.log")),
            (f * 100..f * 100 + 100).map(line).collect::<String>(),
        )
        .unwrap();
    }
    let run = lf.spawn();
    let mut max_open = 0.0f64;
    wait_until(Duration::from_secs(30), "1200 records archived", || {
        max_open = max_open.max(run.metric("logferry_files_open", "source=\"jobs\""));
        lf.archive("archive").len() >= 1200
    });
    // Files keep growing after they were closed for room: reopened and read.
    for f in 0..12u64 {
        let text: String = (2000 + f * 10..2000 + f * 10 + 10).map(line).collect();
        std::fs::OpenOptions::new()
            .append(true)
            .open(lf.path(&format!("logs/f{f}.log")))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    wait_until(Duration::from_secs(30), "1320 records archived", || {
        max_open = max_open.max(run.metric("logferry_files_open", "source=\"jobs\""));
        lf.archive("archive").len() >= 1320
    });
    assert!(run.term(Duration::from_secs(20)).success());
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 1320);
    assert!(max_open <= 3.0, "files open peaked at {max_open}");
}

#[test]
fn run_once_reads_every_file_to_its_end_whatever_max_open_files_is() {
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
max_open_files = 8
[sinks.archive]
type = "directory"
path = "{dir}/archive"
"#,
    );
    for i in 0..1000u64 {
        write_lines(&lf.path(&format!("logs/f{i:04}.log")), i * 20, 20);
    }
    let out = lf.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    let recs = lf.final_archive("archive");
    assert_eq!(assert_all_present(&recs, 20_000), 0, "no duplicates");
    assert_eq!(recs.len(), 20_000);
    assert!(
        err.contains("source jobs         1000 files, 20000 records"),
        "{err}"
    );
}
