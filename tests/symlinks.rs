//! A symbolic link in the shared log directory never makes logferry ship what it points to
//! outside the log tree, and never its own credentials, whatever `follow_symlinks` says.

mod common;

use common::receiver::Receiver;
use common::*;
use std::os::unix::fs::symlink;
use std::time::Duration;

const PLANTED: &str = "PLANTED-outside-content-0x5eed";
const TOKEN: &str = "sidecar-own-token-Qm9vdA";

/// One source over `logs/**/*.log` into the archive and an HTTP sink whose bearer token is
/// in a file; `follow` is the source's setting (empty: the default).
fn setup(follow: &str) -> (Lf, Receiver) {
    let rx = Receiver::start(None);
    let lf = Lf::new(&format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/**/*.log"]
sinks = ["archive", "rx"]
{follow}
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
batch = {{ max_age = "200ms" }}
[sinks.rx]
type = "http"
url = "{}"
allow_plaintext_credentials = true
check = "none"
auth = {{ bearer = {{ token_file = "{{dir}}/secrets/token" }} }}
"#,
        rx.url("/in")
    ));
    std::fs::create_dir_all(lf.path("secrets")).unwrap();
    std::fs::write(
        lf.path("secrets/token"),
        format!("{{\"token\":\"{TOKEN}\"}}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(lf.path("outside")).unwrap();
    std::fs::write(
        lf.path("outside/key.json"),
        format!("{{\"secret\":\"{PLANTED}\"}}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(lf.path("logs/sub")).unwrap();
    write_lines(&lf.path("logs/sub/real.log"), 0, 10);
    // Planted by whoever shares the log volume.
    symlink(lf.path("outside/key.json"), lf.path("logs/evil.log")).unwrap();
    symlink(lf.path("secrets/token"), lf.path("logs/token.log")).unwrap();
    symlink(&lf.cfg, lf.path("logs/config.log")).unwrap();
    // A link that stays inside the log tree.
    write_lines(&lf.path("logs/sub/other.txt"), 10, 5);
    symlink(lf.path("logs/sub/other.txt"), lf.path("logs/inside.log")).unwrap();
    (lf, rx)
}

fn shipped(lf: &Lf) -> String {
    lf.final_archive("archive")
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn by_default_links_are_followed_only_within_the_include_roots() {
    let (lf, _rx) = setup("");
    let out = lf.run_once();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}");
    let text = shipped(&lf);
    assert!(!text.contains(PLANTED), "a link outside was read");
    assert!(!text.contains(TOKEN) && !text.contains("[sinks.rx]"));
    // The real file and the link inside the tree are read: 10 + 5 records.
    assert_eq!(assert_all_present(&lf.final_archive("archive"), 15), 0);
    assert!(
        logs.contains("evil.log") && logs.contains("outside the include roots"),
        "{logs}"
    );
    assert!(!logs.contains(PLANTED) && !logs.contains(TOKEN), "{logs}");
}

#[test]
fn always_follows_links_but_never_to_credentials_and_never_follows_none() {
    let (lf, _rx) = setup("follow_symlinks = \"always\"");
    let run = lf.spawn();
    wait_until(Duration::from_secs(20), "the refusals counted", || {
        run.metric("logferry_files_refused_total", "source=\"jobs\"") >= 2.0
    });
    wait_until(Duration::from_secs(20), "the records", || {
        archive_records(&lf.path("archive")).len() >= 16
    });
    assert_eq!(
        run.metric("logferry_files_refused_total", "source=\"jobs\""),
        2.0,
        "the token file and the configuration, once each"
    );
    let logs = run.logs();
    assert!(run.term(Duration::from_secs(10)).success());
    let text = shipped(&lf);
    assert!(text.contains(PLANTED), "\"always\" follows a link anywhere");
    assert!(!text.contains(TOKEN), "the sink's own token file was read");
    assert!(
        !text.contains("allow_plaintext_credentials"),
        "the configuration was read"
    );
    assert!(logs.contains("credential"), "{logs}");

    let (lf, _rx) = setup("follow_symlinks = \"never\"");
    let out = lf.run_once();
    assert!(out.status.success());
    // Only the real file: no link is followed.
    assert_eq!(assert_all_present(&lf.final_archive("archive"), 10), 0);
    assert!(!shipped(&lf).contains("\"id\":10"));
}

#[test]
fn link_loops_under_a_recursive_pattern_do_not_hold_the_source() {
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/**/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
batch = { max_age = "200ms" }
"#,
    );
    std::fs::create_dir_all(lf.path("logs/sub")).unwrap();
    write_lines(&lf.path("logs/sub/real.log"), 0, 10);
    // Each link leads back to its own directory: a walk that follows them without a record
    // of where it has been never ends (two are exponential).
    symlink(".", lf.path("logs/a")).unwrap();
    symlink(".", lf.path("logs/b")).unwrap();
    symlink("..", lf.path("logs/sub/up")).unwrap();
    let stderr = lf.path("stderr.log");
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("run logferry");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "run --once over two link loops did not finish in 60 s:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{status}: {logs}");
    // The file is read once, under its real path.
    assert_eq!(assert_all_present(&lf.final_archive("archive"), 10), 0);
    assert!(logs.contains("a loop") && logs.contains("logs/a"), "{logs}");
}
