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
                ]
                .iter()
                .any(|g| l.starts_with(&format!("{g}{{")))
            })
            .filter(|l| l.contains(&format!("source=\"{source}\"")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(series("old").len(), 3, "{:?}", series("old"));
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
    assert_eq!(series("jobs").len(), 3, "{:?}", series("jobs"));
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
}
