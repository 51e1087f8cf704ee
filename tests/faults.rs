//! Faults operators meet: a full disk under data_dir, a stage that is stuck at shutdown, a
//! panic. Each must be retried and reported, end in time, and never look like a clean exit.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of `size` mounted at `at` for the test's life. CI runs as root; where mounting is
/// not possible the test fails saying so, it never skips.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(at.to_path_buf()),
            Ok(o) => panic!(
                "this test needs to mount a small tmpfs (run as root, or with CAP_SYS_ADMIN): mount said {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test needs mount(8) to mount a small tmpfs: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The port of a receiver that accepts connections and never answers.
fn never_answering() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// One source shipping to an http sink at a receiver that never answers (its timeout longer
/// than the test), with a 1 s shutdown_timeout; `extra` goes in the sink's table.
fn never_answered(extra: &str) -> Lf {
    Lf::new(&format!(
        r#"
shutdown_timeout = "1s"
[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["recv"]
[sinks.recv]
type = "http"
url = "http://127.0.0.1:{}/in"
timeout = "5m"
{extra}
"#,
        never_answering()
    ))
}

/// Fills the file system holding `path` with one file; returns it (remove it to free space).
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        use std::io::Write;
        if f.write_all(&block).and_then(|_| f.sync_all()).is_err() {
            break;
        }
    }
    filler
}

fn readyz(port: u16) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn a_full_disk_pauses_reports_and_resumes_by_itself_without_loss_or_duplicates() {
    let lf = Lf::new(
        r#"
checkpoint_interval = "200ms"
[api]
unready_after = "1s"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
batch = { max_records = 500, max_age = "200ms" }
"#,
    );
    let _fs = Tmpfs::mount(&lf.path("data"), "4m");
    let run = lf.spawn();
    // Everything logferry needs exists; now the disk is full before a record is read.
    let filler = fill(&lf.path("data"));
    let n = 6000;
    write_lines(&lf.path("logs/a.log"), 0, n);
    wait_until(
        Duration::from_secs(20),
        "spool writes failing and counted",
        || run.metric("logferry_spool_write_failures_total", "sink=\"archive\"") >= 2.0,
    );
    wait_until(
        Duration::from_secs(20),
        "/readyz 503 with the spool failing",
        || {
            let (status, v) = readyz(lf.port);
            status == 503 && v["sinks"]["archive"]["spool"] == "failing"
        },
    );
    let (_, v) = readyz(lf.port);
    let err = v["sinks"]["archive"]["spool_error"].as_str().unwrap();
    assert!(err.contains("No space left"), "{v}");
    assert!(v["sinks"]["archive"]["spool_since"].is_string(), "{v}");
    let before = archive_records(&lf.path("archive")).len();
    assert!(
        before < n as usize,
        "nothing should move while the disk is full"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(30),
        "every record delivered after space is freed",
        || archive_records(&lf.path("archive")).len() >= n as usize,
    );
    wait_until(Duration::from_secs(10), "/readyz 200 again", || {
        let (status, v) = readyz(lf.port);
        status == 200 && v["sinks"]["archive"]["spool"] == "ok"
    });
    let st = run.term(Duration::from_secs(10));
    assert!(st.success(), "{st}");
    let recs = lf.final_archive("archive");
    assert_eq!(assert_all_present(&recs, n), 0, "no duplicates");
    assert_eq!(recs.len(), n as usize);
}

#[test]
fn failing_checkpoint_writes_are_counted_shown_and_heal_without_duplicates() {
    let lf = Lf::new(
        r#"
checkpoint_interval = "100ms"
[api]
unready_after = "1s"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
batch = { max_records = 500, max_age = "200ms" }
"#,
    );
    // Only the checkpoints are on the full disk: records flow, their offsets cannot be kept.
    let _fs = Tmpfs::mount(&lf.path("data/checkpoints"), "256k");
    let filler = fill(&lf.path("data/checkpoints"));
    let run = lf.spawn();
    let n = 3000;
    write_lines(&lf.path("logs/a.log"), 0, n);
    wait_until(
        Duration::from_secs(20),
        "checkpoint failures counted",
        || {
            run.metric(
                "logferry_checkpoint_write_failures_total",
                "source=\"jobs\"",
            ) >= 2.0
        },
    );
    wait_until(
        Duration::from_secs(20),
        "/readyz 503 naming the failing checkpoint",
        || {
            let (status, v) = readyz(lf.port);
            status == 503 && v["sources"]["jobs"]["checkpoint"] == "failing"
        },
    );
    wait_until(Duration::from_secs(20), "records still delivered", || {
        archive_records(&lf.path("archive")).len() >= n as usize
    });
    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(10), "/readyz 200 again", || {
        let (status, v) = readyz(lf.port);
        status == 200 && v["sources"]["jobs"]["checkpoint"] == "ok"
    });
    assert!(run.term(Duration::from_secs(10)).success());
    // The offsets caught up once the disk had room: a restart sends nothing again.
    lf.run_once();
    let recs = lf.final_archive("archive");
    assert_eq!(
        assert_all_present(&recs, n),
        0,
        "no duplicates after the restart"
    );
}

#[test]
fn sigterm_ends_in_time_when_a_sink_never_answers_and_says_it_was_cut_short() {
    // A receiver that accepts and never answers: the attempt would wait its whole timeout.
    let lf = never_answered("batch = { max_age = \"100ms\" }");
    write_lines(&lf.path("logs/a.log"), 0, 100);
    let run = lf.spawn();
    wait_until(Duration::from_secs(10), "a batch spooled", || {
        run.metric("logferry_batches_sealed_total", "") >= 1.0
    });
    let t = Instant::now();
    let st = run.term(Duration::from_secs(10));
    let took = t.elapsed();
    // The promise is shutdown_timeout (1 s) + 2 s; half a second for the exit to be seen.
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(st.code(), Some(1), "cut short by the deadline: {st}");
    // What was not delivered is still spooled for the next start.
    assert!(!walk(&lf.path("data/spool/recv")).is_empty());
}

#[test]
fn sigterm_during_run_once_is_never_called_complete() {
    // A backfill stopped while its batch waits on a sink that never answers: the summary must
    // not say it finished (before, "complete": true and "finished", then exit 1).
    let lf = never_answered("check = \"none\"");
    write_lines(&lf.path("logs/a.log"), 0, 100);
    let child = Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the batch spooled", || {
        !walk(&lf.path("data/spool/recv")).is_empty()
    });
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("run --once did NOT finish"), "{err}");
    assert!(err.contains(r#""complete":false"#), "{err}");
    assert!(!err.contains(r#""complete":true"#), "{err}");
}

// Needs the fault hooks: `cargo test --features logferry/test-faults` (scripts/test.sh).
#[cfg(feature = "test-faults")]
#[test]
fn sigterm_ends_in_time_when_a_source_is_stuck() {
    let lf = Lf::new(&format!(
        "shutdown_timeout = \"1s\"\n{}",
        PLAIN.replace("logs/*.log", "logs/*")
    ));
    // A FIFO among the logs that nobody writes to: never opened (not a regular file), never
    // a reason to block.
    let fifo = lf.path("logs/pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    write_lines(&lf.path("logs/a.log"), 0, 10);
    // The debug build's fault hook holds the source thread as a blocking read would.
    let run = lf.spawn_env(&[("LOGFERRY_TEST_FAULT", "stall-source")]);
    let t = Instant::now();
    let st = run.term(Duration::from_secs(10));
    let took = t.elapsed();
    // The promise is shutdown_timeout (1 s) + 2 s; half a second for the exit to be seen.
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(st.code(), Some(1), "{st}");
}

/// One source into a directory sink.
const PLAIN: &str = r#"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
"#;

// Needs the fault hooks: `cargo test --features logferry/test-faults` (scripts/test.sh).
#[cfg(feature = "test-faults")]
#[test]
fn a_panic_is_never_a_clean_exit() {
    let lf = Lf::new(PLAIN);
    write_lines(&lf.path("logs/a.log"), 0, 10);
    for once in [true, false] {
        let mut cmd = Command::new(BIN);
        cmd.arg("run");
        if once {
            cmd.arg("--once");
        }
        let out = cmd
            .arg("--config")
            .arg(&lf.cfg)
            .env("LOGFERRY_TEST_FAULT", "panic-source")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(70), "once={once}: {err}");
        assert!(err.contains("source-jobs"), "names the stage: {err}");
        assert!(err.contains("internal error"), "{err}");
    }
}

#[test]
fn validate_refuses_a_duration_that_would_overflow() {
    let lf = Lf::new(&format!("checkpoint_interval = \"300000000000y\"\n{PLAIN}"));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("checkpoint_interval") && err.contains("30 days"),
        "{err}"
    );
}
