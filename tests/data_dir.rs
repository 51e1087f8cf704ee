//! Who may use a data_dir: one process at a time, and only one that can write it (a
//! container's user against a volume it does not own is told so at once, with its uid); and
//! log folders such a user cannot read are reported, never skipped in silence.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// One source into a directory sink.
const ONE_SOURCE: &str = r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
"#;

/// `logferry ARGS CONFIG` run through `wrapper` (see [`as_nonroot`]) to its end.
fn run_as(wrapper: &[&str], args: &[&str], cfg: &std::path::Path) -> std::process::Output {
    command(wrapper)
        .args(args)
        .arg(cfg)
        .output()
        .expect("setpriv from util-linux")
}

/// `logferry` started through `wrapper` (see [`as_nonroot`]) when it is not empty.
fn command(wrapper: &[&str]) -> std::process::Command {
    match wrapper.split_first() {
        Some((p, args)) => {
            let mut c = std::process::Command::new(p);
            c.args(args).arg(BIN);
            c
        }
        None => std::process::Command::new(BIN),
    }
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    // Two processes on one data_dir read the same checkpoints and send the same spooled
    // batches: every record twice. The second is refused; after the first ends, it runs.
    let lf = Lf::new(ONE_SOURCE);
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
    let lf = Lf::new(ONE_SOURCE);
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
    let (wrapper, uid) = as_nonroot();
    let run = || {
        let out = run_as(&wrapper, &["run", "--config"], &lf.cfg);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let start = std::time::Instant::now();
    let err = run();
    let want = format!(
        "data_dir {} cannot be written by this process, uid {uid}",
        data.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // At once: the run ends at the check, it does not retry or wait for a deadline.
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert!(!lf.path("archive").exists(), "nothing was shipped");

    // The volume given to the user, but a folder in it left by an earlier run as root: named
    // too (before, "cannot read checkpoints: Permission denied" without a path or a uid).
    let spool = data.join("spool/archive");
    std::fs::create_dir_all(&spool).unwrap();
    if wrapper.is_empty() {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o500)).unwrap();
    } else {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&data, Some(65532), Some(65532)).unwrap();
        std::os::unix::fs::chown(data.join("spool"), Some(65532), Some(65532)).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let err = run();
    let want = format!(
        "data_dir {} cannot be written by this process, uid {uid}",
        spool.display()
    );
    assert!(err.contains(&want), "{err}");

    // A volume's root-owned lost+found is not logferry's: it does not stop the start.
    if wrapper.is_empty() {
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    } else {
        std::os::unix::fs::chown(&spool, Some(65532), Some(65532)).unwrap();
    }
    let lost = data.join("lost+found");
    std::fs::create_dir_all(&lost).unwrap();
    std::fs::set_permissions(&lost, std::fs::Permissions::from_mode(0o500)).unwrap();
    std::fs::create_dir_all(lf.path("archive")).unwrap();
    if !wrapper.is_empty() {
        std::fs::set_permissions(&lost, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(lf.path("archive"), Some(65532), Some(65532)).unwrap();
    }
    let out = run_as(&wrapper, &["run", "--once", "--config"], &lf.cfg);
    succeeded(&out);
    assert_eq!(lf.archive("archive").len(), 1);
}

/// The test's folder and configuration readable by the user `wrapper` runs as, and `data` and
/// `archive` its own.
fn open_to(lf: &Lf, wrapper: &[&str]) {
    for p in [lf.path(""), lf.path("logs"), lf.cfg.clone()] {
        let m = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    for d in ["data", "archive"] {
        std::fs::create_dir_all(lf.path(d)).unwrap();
        if !wrapper.is_empty() {
            std::os::unix::fs::chown(lf.path(d), Some(65532), Some(65532)).unwrap();
        }
    }
}

/// Runs as uid 65532 when root (root reads everything); as the user itself otherwise.
fn as_nonroot() -> (Vec<&'static str>, String) {
    if rustix::process::geteuid().is_root() {
        (
            vec![
                "setpriv",
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
            ],
            "65532".into(),
        )
    } else {
        (vec![], rustix::process::geteuid().as_raw().to_string())
    }
}

#[test]
fn a_log_folder_this_user_cannot_read_is_logged_with_the_uid_and_counted() {
    // A host's /var/log/<app> is often root's, mode 0700 or 0750: mounted into a container
    // running as 65532, its files could not be found, and nothing said so (ready, 0 files).
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log", "{dir}/more/private/*.log", "{dir}/excluded/*.log"]
exclude = ["{dir}/excluded/**"]
rotate_wait = "500ms"
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
batch = { max_age = "200ms" }
"#,
    );
    let (wrapper, uid) = as_nonroot();
    open_to(&lf, &wrapper);
    // The include root itself cannot be listed, and a folder on the second pattern's way
    // cannot be searched.
    // As 65532 they are another user's, mode 0700; a user running the test owns them, so
    // they get no permission at all.
    let closed = if wrapper.is_empty() { 0o000 } else { 0o700 };
    std::fs::write(lf.path("logs/app.log"), "{\"id\":1}\n").unwrap();
    std::fs::set_permissions(lf.path("logs"), std::fs::Permissions::from_mode(closed)).unwrap();
    std::fs::create_dir_all(lf.path("more/private")).unwrap();
    std::fs::write(lf.path("more/private/b.log"), "{\"id\":2}\n").unwrap();
    std::fs::set_permissions(lf.path("more"), std::fs::Permissions::from_mode(closed)).unwrap();
    // A closed folder the operator excluded is neither counted nor warned of.
    std::fs::create_dir_all(lf.path("excluded")).unwrap();
    std::fs::set_permissions(lf.path("excluded"), std::fs::Permissions::from_mode(closed)).unwrap();
    // `validate` says so before a run (a warning: the folder may open up by then).
    let out = run_as(&wrapper, &["validate", "--config"], &lf.cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let warning = format!(
        "warning: source jobs: {} cannot be looked into by this process, uid {uid}",
        lf.path("more/private").display()
    );
    assert!(text.contains(&warning), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("excluded")),
        "{text}"
    );
    assert!(
        text.contains(&format!("fix {})", lf.path("more").display())),
        "{text}"
    );
    // A backfill does not call itself complete with files it could not see.
    let out = run_as(&wrapper, &["run", "--once", "--config"], &lf.cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("source jobs: 2 matched files or folders could not be read"),
        "{err}"
    );
    let run = lf.spawn_wrapped(&wrapper, &[]);
    wait_until(Duration::from_secs(30), "the gauge", || {
        run.metric("logferry_paths_unreadable", "source=\"jobs\"") == 2.0
    });
    let logs = run.logs();
    // One line for both, naming the folders to fix, the user and the count.
    let line = logs
        .lines()
        .find(|l| l.contains("cannot look into folders"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    for dir in [lf.path("logs"), lf.path("more")] {
        assert!(line.contains(&*dir.to_string_lossy()), "{line}");
    }
    assert!(line.contains(&format!("uid {uid}")), "{line}");
    assert!(
        line.contains("Permission denied") && line.contains("count=2"),
        "{line}"
    );
    assert!(!line.contains("excluded"), "{line}");
    // Readable again: found and shipped, the gauge back at 0.
    for d in ["logs", "more"] {
        std::fs::set_permissions(lf.path(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        lf.path("more/private"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for f in ["logs/app.log", "more/private/b.log"] {
        std::fs::set_permissions(lf.path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    wait_until(Duration::from_secs(30), "both records shipped", || {
        lf.archive("archive").len() == 2
    });
    assert_eq!(
        run.metric("logferry_paths_unreadable", "source=\"jobs\""),
        0.0
    );

    // The folder closes for a while (longer than rotate_wait) while its file is tailed, and
    // opens again: the file was not rotated, its records are not read twice (before, it was
    // taken for deleted, let go, and read again from byte 0 when the folder opened).
    std::fs::set_permissions(lf.path("logs"), std::fs::Permissions::from_mode(closed)).unwrap();
    // A new name in the watched folder makes the source look again now (not at its 30 s scan).
    std::fs::write(lf.path("logs/poke.txt"), "").unwrap();
    wait_until(Duration::from_secs(40), "the folder counted", || {
        run.metric("logferry_paths_unreadable", "source=\"jobs\"") == 1.0
    });
    append(&lf.path("logs/app.log"), b"{\"id\":3}\n");
    wait_until(
        Duration::from_secs(30),
        "a record through the open file",
        || lf.archive("archive").len() == 3,
    );
    // Not a condition to wait for but a span: longer than rotate_wait (500 ms) after the look
    // that found the folder closed (the old code took the file for deleted there, let it go
    // after rotate_wait, and read it again from byte 0 when the folder opened).
    std::thread::sleep(Duration::from_secs(2));
    std::fs::set_permissions(lf.path("logs"), std::fs::Permissions::from_mode(0o755)).unwrap();
    append(&lf.path("logs/app.log"), b"{\"id\":4}\n");
    wait_until(Duration::from_secs(30), "the record after", || {
        lf.archive("archive").iter().any(|r| r["id"] == 4)
    });
    let found = run.metric("logferry_files_found_total", "source=\"jobs\"");
    assert_eq!(found, 2.0, "the file was not found a second time");
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    let mut ids: Vec<u64> = lf
        .final_archive("archive")
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4], "each record once");
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_configuration_this_user_cannot_read_names_the_uid() {
    // A configuration mounted root's, mode 0600, into a container running as 65532.
    let lf = Lf::new(ONE_SOURCE);
    let (wrapper, uid) = as_nonroot();
    std::fs::set_permissions(lf.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = if wrapper.is_empty() { 0o000 } else { 0o600 };
    std::fs::set_permissions(&lf.cfg, std::fs::Permissions::from_mode(mode)).unwrap();
    let out = run_as(&wrapper, &["run", "--config"], &lf.cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read the file: Permission denied")
            && err.contains(&format!("this process runs as uid {uid}")),
        "{err}"
    );
    // The same for a key file it names (a KEK mounted root's, mode 0600).
    std::fs::set_permissions(&lf.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    let kek = lf.path("kek.hex");
    common::write_key(&kek, "3c".repeat(32));
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace(
            "type = \"directory\"",
            "type = \"directory\"\nencryption = { kek = \"k\", tenant_field = \"account_id\" }",
        ) + &format!(
            "[keks.k]\nprovider = \"local\"\nkey_file = \"{}\"\n",
            kek.display()
        ),
    )
    .unwrap();
    let out = run_as(&wrapper, &["validate", "--config"], &lf.cfg);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("cannot read {}", kek.display()))
            && text.contains(&format!("this process runs as uid {uid}")),
        "{text}"
    );
}

#[test]
fn files_another_user_left_in_data_dir_stop_the_start_instead_of_being_set_aside() {
    // A run as root in the user's data_dir leaves root's 0600 checkpoints and spooled batches
    // in folders the user owns. Before, the user's next run took them for corrupt: the batch
    // was renamed .corrupt (its records never sent) and the checkpoints set aside (files read
    // over again, or skipped to their end). Now the start stops, naming the file and the uid.
    let (wrapper, uid) = as_nonroot();
    let lf = Lf::new(
        r#"shutdown_timeout = "1s"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["endpoint"]
[sinks.endpoint]
type = "http"
url = "http://127.0.0.1:9/in"
check = "none"
retry = { initial_backoff = "10s" }
batch = { max_age = "100ms" }
"#,
    );
    std::fs::set_permissions(lf.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&lf.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(lf.path("logs/app.log"), "{\"id\":1}\n").unwrap();
    // The "root" run: as the test's own user, which spools the batch (port 9 refuses).
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "a spooled batch", || {
        walk(&lf.path("data/spool/endpoint"))
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".batch"))
    });
    // The stop gives up on the refused endpoint after shutdown_timeout: the batch stays.
    run.term(Duration::from_secs(20));
    let files: Vec<std::path::PathBuf> = walk(&lf.path("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    // Hand the folders to the other user and keep the files the first run's (0600).
    if wrapper.is_empty() {
        for f in &files {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
    } else {
        let mut dirs = vec![lf.path("data")];
        while let Some(d) = dirs.pop() {
            std::os::unix::fs::chown(&d, Some(65532), Some(65532)).unwrap();
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                }
            }
        }
    }
    let out = run_as(&wrapper, &["run", "--config"], &lf.cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot be read by this process, uid ")
            && err.contains(&format!("uid {uid}"))
            && err.contains("chown -R"),
        "{err}"
    );
    let after: Vec<std::path::PathBuf> = walk(&lf.path("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(
        !after
            .iter()
            .any(|p| p.to_string_lossy().contains("corrupt")),
        "nothing set aside: {after:?}"
    );
    assert!(files.iter().all(|f| f.exists()), "every file kept");
}

#[test]
fn a_closed_file_that_cannot_be_opened_again_is_counted_with_the_uid() {
    // Files closed for max_open_files whose mode changed meanwhile: before, a warning without
    // the user, and nothing in paths_unreadable (the alert never fired).
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
max_open_files = 1
glob_interval = "1s"
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
batch = { max_age = "200ms" }
"#,
    );
    let (wrapper, uid) = as_nonroot();
    open_to(&lf, &wrapper);
    let files: Vec<_> = (0..70)
        .map(|i| lf.path(&format!("logs/f{i:02}.log")))
        .collect();
    for (i, f) in files.iter().enumerate() {
        write_lines(f, i as u64 * 10, 10);
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let run = lf.spawn_wrapped(&wrapper, &[]);
    wait_until(Duration::from_secs(30), "every file read", || {
        lf.archive("archive").len() == 700
    });
    // At most one holds the handle; the others must be opened again to read what comes.
    // Sixty-nine are closed to this user (one of them may still hold the handle): counted, and
    // the last is not held up behind them (more than the 64 failures tried in one pass).
    for (i, f) in files.iter().enumerate() {
        if i < 69 {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        write_lines(f, 1000 + i as u64, 1);
    }
    let start = std::time::Instant::now();
    while run.metric("logferry_paths_unreadable", "source=\"jobs\"") < 1.0
        || !lf.archive("archive").iter().any(|r| r["id"] == 1069)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the closed files not counted:\n{}",
            run.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = run.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("cannot reopen file"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    assert!(line.contains(&format!("uid {uid}")), "{line}");
    // Readable again: read, and the gauge back at 0.
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    wait_until(Duration::from_secs(30), "the new records read", || {
        lf.archive("archive").len() == 770
    });
    wait_until(Duration::from_secs(40), "the gauge back at 0", || {
        run.metric("logferry_paths_unreadable", "source=\"jobs\"") == 0.0
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
}
