//! Rotation faster than any scan: files are found by events, and files closed for
//! `max_open_files` are found again by inode when they are rotated while closed.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

fn config(include: &str, extra: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/{include}"]
sinks = ["archive"]
rotate_wait = "1s"
{extra}
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
batch = {{ max_age = "300ms" }}
"#
    )
}

fn lines(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| format!("{{\"id\":{i},\"msg\":\"step done\"}}\n"))
        .collect()
}

fn append(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Size-based rotation under load: the live file is renamed away every 0.25 s at 20,000
/// lines/s, and only the live name is in `include`. With scans alone (every 0.5 s) whole
/// generations were created and rotated between two scans and never read.
#[test]
fn rename_and_create_every_quarter_second_at_20k_lines_per_second_loses_nothing() {
    let lf = Lf::new(&config("app.log", ""));
    let log = lf.path("logs/app.log");
    std::fs::File::create(&log).unwrap();
    let run = lf.spawn();
    let mut f = append(&log);
    let (mut id, mut gen) = (0u64, 0u32);
    let start = Instant::now();
    let mut rotated_at = start;
    while start.elapsed() < Duration::from_secs(5) {
        // 200 lines every 10 ms: 20,000 lines a second.
        f.write_all(lines(id, 200).as_bytes()).unwrap();
        id += 200;
        std::thread::sleep(Duration::from_millis(10));
        if rotated_at.elapsed() >= Duration::from_millis(250) {
            gen += 1;
            std::fs::rename(&log, lf.path(&format!("logs/app.log.{gen}"))).unwrap();
            f = append(&log);
            rotated_at = Instant::now();
        }
    }
    drop(f);
    assert!(gen >= 15, "{gen} rotations");
    wait_until(Duration::from_secs(60), "every record archived", || {
        lf.archive("archive").len() >= id as usize
    });
    assert!(run.term(Duration::from_secs(20)).success());
    let dups = assert_all_present(&lf.final_archive("archive"), id);
    eprintln!("{id} lines, {gen} rotations: 0 lost, {dups} duplicates");
    assert_eq!(dups, 0);
}

/// Ten live files and two handles: files closed for the limit are rotated while closed; they
/// are found again by inode next to their old name and read to their end.
#[test]
fn ten_rotating_files_with_two_handles_lose_nothing() {
    let lf = Lf::new(&config("*.log", "max_open_files = 2"));
    let paths: Vec<_> = (0..10)
        .map(|i| lf.path(&format!("logs/f{i}.log")))
        .collect();
    for p in &paths {
        std::fs::File::create(p).unwrap();
    }
    let run = lf.spawn();
    let mut files: Vec<_> = paths.iter().map(|p| append(p)).collect();
    let (mut id, mut gen) = (0u64, 0u32);
    let start = Instant::now();
    let mut rotated_at = start;
    while start.elapsed() < Duration::from_secs(4) {
        for f in files.iter_mut() {
            f.write_all(lines(id, 20).as_bytes()).unwrap();
            id += 20;
        }
        std::thread::sleep(Duration::from_millis(20));
        if rotated_at.elapsed() >= Duration::from_millis(400) {
            gen += 1;
            for (i, p) in paths.iter().enumerate() {
                std::fs::rename(p, lf.path(&format!("logs/f{i}.log.{gen}"))).unwrap();
                files[i] = append(p);
            }
            rotated_at = Instant::now();
        }
    }
    drop(files);
    let t = Instant::now();
    while lf.archive("archive").len() < id as usize && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(run.term(Duration::from_secs(20)).success());
    let dups = assert_all_present(&lf.final_archive("archive"), id);
    eprintln!("{id} lines in 10 files, {gen} rotations, 2 handles: 0 lost, {dups} duplicates");
    assert_eq!(dups, 0);
}
