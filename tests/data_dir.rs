//! Who may use a data_dir: one process at a time, and only one that can write it (a
//! container's user against a volume it does not own is told so at once, with its uid).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    // Two processes on one data_dir read the same checkpoints and send the same spooled
    // batches: every record twice. The second is refused; after the first ends, it runs.
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
"#,
    );
    std::fs::write(lf.path("logs/app.log"), "{\"id\":1}\n").unwrap();
    let first = lf.spawn();
    let out = std::process::Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another logferry process"), "{err}");
    first.kill9();
    succeeded(&lf.run_once());
}

#[test]
fn a_data_dir_this_user_cannot_write_is_named_with_the_uid_at_once() {
    // A container running as 65532 with a root-owned volume: before, the process failed
    // later, on a spool folder, without saying which user could not write.
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
"#,
    );
    std::fs::write(lf.path("logs/app.log"), "{\"id\":1}\n").unwrap();
    let data = lf.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Everything else readable by the other user; root ignores modes, so as root the run
    // is made as uid 65532 (setpriv from util-linux).
    for p in [
        lf.path(""),
        lf.path("logs"),
        lf.path("logs/app.log"),
        lf.cfg.clone(),
    ] {
        let m = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let root = rustix::process::geteuid().is_root();
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65532", "--regid=65532", "--clear-groups", BIN]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    let start = std::time::Instant::now();
    let out = cmd
        .args(["run", "--config"])
        .arg(&lf.cfg)
        .output()
        .expect("setpriv from util-linux");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let uid = if root {
        "65532".to_string()
    } else {
        rustix::process::geteuid().as_raw().to_string()
    };
    let want = format!(
        "data_dir {} cannot be written by this process, uid {uid}",
        data.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // At once: the run ends at the check, it does not retry or wait for a deadline.
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert!(!lf.path("archive").exists(), "nothing was shipped");
}
