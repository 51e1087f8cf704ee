//! What a SIGHUP reload leaves behind: a source the new configuration drops is no longer
//! reported (its gauges' last values would keep alerts such as LogferryLogsUnreadable firing).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_source_removed_by_a_reload_is_no_longer_reported() {
    const OLD: &str = "[sources.old]\ninclude = [\"{dir}/old/*.log\"]\nsinks = [\"archive\"]\n";
    let lf = Lf::new(&format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
{OLD}[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
batch = {{ max_age = "200ms" }}
"#
    ));
    std::fs::create_dir_all(lf.path("old")).unwrap();
    write_lines(&lf.path("logs/a.log"), 0, 10);
    write_lines(&lf.path("old/b.log"), 10, 10);
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "both files open", || {
        run.metric("logferry_files_open", "source=\"old\"") == 1.0
            && run.metric("logferry_files_open", "source=\"jobs\"") == 1.0
    });
    let series = |source: &str| -> Vec<String> {
        let (_, body) = run.get("/metrics").expect("metrics");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                [
                    "logferry_files_open",
                    "logferry_paths_unreadable",
                    "logferry_unread_bytes",
                    "logferry_file_unread_bytes",
                ]
                .iter()
                .any(|g| l.starts_with(&format!("{g}{{")))
            })
            .filter(|l| l.contains(&format!("source=\"{source}\"")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(series("old").len(), 4, "{:?}", series("old"));
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    let dir = lf.path("").display().to_string();
    let old = OLD.replace("{dir}", dir.trim_end_matches('/'));
    assert!(text.contains(&old), "{text}");
    std::fs::write(&lf.cfg, text.replace(&old, "")).unwrap();
    run.signal("-HUP");
    wait_until(Duration::from_secs(30), "the reload", || {
        run.logs().contains("configuration reloaded")
    });
    wait_until(Duration::from_secs(30), "jobs reported again", || {
        run.metric("logferry_files_open", "source=\"jobs\"") == 1.0
    });
    assert_eq!(series("old"), Vec::<String>::new());
    assert_eq!(series("jobs").len(), 4, "{:?}", series("jobs"));
    // Read to its end before the reload: no lag after it (before, the whole file until it grew).
    assert_eq!(
        run.metric("logferry_unread_bytes", "source=\"jobs\""),
        0.0,
        "{:?}",
        series("jobs")
    );
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
}

/// An http sink whose first request is read and never answered (the sink's own timeout is
/// longer than the test): a delivery that hangs.
fn hanging(rx: &common::receiver::Receiver) -> Lf {
    rx.script(common::receiver::Fault::Slow(Duration::from_secs(60)));
    let lf = Lf::new(&format!(
        r#"shutdown_timeout = "1s"
[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["endpoint"]
[sinks.endpoint]
type = "http"
url = "{}"
check = "none"
timeout = "120s"
batch = {{ max_age = "200ms" }}
"#,
        rx.url("/in")
    ));
    write_lines(&lf.path("logs/a.log"), 0, 20);
    lf
}

#[test]
fn a_reload_while_a_delivery_hangs_switches_and_the_process_goes_on() {
    let rx = common::receiver::Receiver::start(None);
    let lf = hanging(&rx);
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "the request in flight", || {
        !rx.got().is_empty()
    });
    // The new configuration marks what it sends.
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace(
            "check = \"none\"",
            "check = \"none\"\nheaders = { \"X-Run\" = \"2\" }",
        ),
    )
    .unwrap();
    run.signal("-HUP");
    // Before, the process ended here with exit 1 once shutdown_timeout passed.
    wait_until(Duration::from_secs(30), "the reload", || {
        run.logs().contains("configuration reloaded")
    });
    assert!(
        run.logs()
            .contains("the hand-over did not end within shutdown_timeout"),
        "{}",
        run.logs()
    );
    wait_until(Duration::from_secs(30), "the batch sent again", || {
        rx.records().len() == 20
    });
    let resent = rx.got();
    let last = resent.last().unwrap();
    assert_eq!((last.status / 100, last.header("x-run")), (2, Some("2")));
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn a_stop_during_a_reload_ends_the_process_instead() {
    let rx = common::receiver::Receiver::start(None);
    let lf = hanging(&rx);
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "the request in flight", || {
        !rx.got().is_empty()
    });
    run.signal("-HUP");
    wait_until(Duration::from_secs(30), "the reload begun", || {
        run.logs().contains("SIGHUP: configuration is valid")
    });
    // The attempt in flight is cut at the deadline: the stop says so with exit 1.
    let status = run.term(Duration::from_secs(20));
    let logs = lf_logs(&lf);
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(logs.contains("stopping instead of reloading"), "{logs}");
    assert!(!logs.contains("configuration reloaded"), "{logs}");
}

/// Everything the runs of `lf` logged.
fn lf_logs(lf: &Lf) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(lf.path("")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("logferry-") && name.ends_with(".log") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}
