//! Records are filed under the day of their own timestamp in every spelling the platform and
//! common tools write; a timestamp logferry cannot read is counted and logged by its shape.

mod common;

use common::*;
use std::time::Duration;

const CONFIG: &str = r#"[sources.audit]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
timestamp_field = "timestamp"
[sinks.archive]
type = "directory"
path = "{dir}/archive"
key = "{source}/%Y/%m/%d/{batch_id}.ndjson"
compression = "none"
"#;

#[test]
fn records_are_filed_under_the_day_of_their_own_timestamp() {
    let lf = Lf::new(CONFIG);
    let cases = [
        // The platform's audit events.
        ("2019-09-13 17:24:16 UTC", "2019/09/13"),
        ("2019-09-13 17:24:16.123 UTC", "2019/09/13"),
        // Job times with an offset that crosses midnight UTC.
        ("2020-02-28T20:30:00-07:00", "2020/02/29"),
        ("2020-03-01 01:00:00 +0200", "2020/02/29"),
        ("2018-07-04T10:00:00Z", "2018/07/04"),
        ("2018-07-05 10:00:00+00:00", "2018/07/05"),
        ("Fri, 06 Jul 2018 10:00:00 +0000", "2018/07/06"),
        ("1531130400", "2018/07/09"),
        ("1531216800000", "2018/07/10"),
        ("1531303200000000", "2018/07/11"),
        ("1531389600000000000", "2018/07/12"),
    ];
    let mut text = String::new();
    for (i, (ts, _)) in cases.iter().enumerate() {
        text.push_str(&format!("{{\"n\":{i},\"timestamp\":\"{ts}\"}}\n"));
    }
    // Epoch numbers as JSON numbers too.
    text.push_str("{\"n\":100,\"timestamp\":1531476000}\n");
    std::fs::write(lf.path("logs/a.log"), text).unwrap();
    lf.run_once();
    let files = lf.files("archive");
    for (i, (_, day)) in cases.iter().enumerate() {
        let f = files
            .iter()
            .find(|f| f.starts_with(&format!("audit/{day}/")))
            .unwrap_or_else(|| panic!("nothing under {day}: {files:?}"));
        let body = std::fs::read_to_string(lf.path(&format!("archive/{f}"))).unwrap();
        assert!(
            body.contains(&format!("\"n\":{i},")),
            "record {i} not under {day}"
        );
    }
    assert!(
        files.iter().any(|f| f.starts_with("audit/2018/07/13/")),
        "{files:?}"
    );
}

#[test]
fn an_unreadable_timestamp_is_counted_and_logged_by_its_shape_only() {
    let lf = Lf::new(&CONFIG.replace(
        "compression = \"none\"",
        "compression = \"none\"\nbatch = { max_age = \"1s\" }",
    ));
    std::fs::write(
        lf.path("logs/a.log"),
        "{\"timestamp\":\"13/09/2019 at 5pm secretcode\"}\n{\"timestamp\":\"2019-09-13 17:24:16 UTC\"}\n",
    )
    .unwrap();
    let run = lf.spawn();
    wait_until(
        Duration::from_secs(20),
        "one record counted unparsed",
        || run.metric("logferry_timestamp_unparsed_total", "source=\"audit\"") == 1.0,
    );
    wait_until(Duration::from_secs(20), "both records archived", || {
        lf.archive("archive").len() == 2
    });
    let logs = run.logs();
    assert!(logs.contains("dd/dd/dddd aa daa aaaaaaaaaa"), "{logs}");
    assert!(!logs.contains("secretcode"), "{logs}");
    let files = lf.files("archive");
    assert!(
        files.iter().any(|f| f.starts_with("audit/2019/09/13/")),
        "{files:?}"
    );
}

#[test]
fn a_source_s_timestamp_format_reads_what_no_built_in_spelling_does() {
    let lf = Lf::new(&CONFIG.replace(
        "timestamp_field = \"timestamp\"",
        "timestamp_field = \"timestamp\"\ntimestamp_format = \"%d/%m/%Y %H:%M:%S %z\"",
    ));
    std::fs::write(
        lf.path("logs/a.log"),
        // 17:24 at -07:00 is the next day in UTC; the built-in spellings still apply.
        "{\"n\":1,\"timestamp\":\"13/09/2019 17:24:16 -0700\"}\n{\"n\":2,\"timestamp\":\"2019-09-10 08:00:00 UTC\"}\n",
    )
    .unwrap();
    let out = lf.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    let files = lf.files("archive");
    assert!(
        files.iter().any(|f| f.starts_with("audit/2019/09/14/")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.starts_with("audit/2019/09/10/")),
        "{files:?}"
    );
    assert!(!err.contains("no format logferry understands"), "{err}");

    // A pattern that reads no date is refused at load.
    let bad = Lf::new(&CONFIG.replace(
        "timestamp_field = \"timestamp\"",
        "timestamp_field = \"timestamp\"\ntimestamp_format = \"%H:%M\"",
    ));
    let v = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&bad.cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(2));
    assert!(
        err.contains("sources.audit.timestamp_format") && err.contains("no year"),
        "{err}"
    );
}
