//! Parquet archives read back by independent readers (pyarrow and DuckDB through
//! scripts/read_parquet.py): the schema, every row in the partition its path names, the same
//! records as the NDJSON sink, typed columns that turn a misfit into a counted null, and
//! masking before encoding.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

/// Runs the reader over `root` with `sql` queries against the view `archive`.
fn read(root: &std::path::Path, sql: &[&str]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_parquet.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(root);
    for q in sql {
        cmd.args(["--sql", q]);
    }
    let out = cmd.output().expect("run read_parquet.py");
    assert!(
        out.status.success(),
        "read_parquet.py (needs pyarrow and duckdb: scripts/test.sh installs them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A job record at `ts` for `account`, with a planted e-mail in `context.user_email`.
fn job(n: u64, ts: &str, account: &str, status: &str, dur: &str) -> String {
    format!(
        r#"{{"ts":"{ts}","id":"job-{n}","account_id":"{account}","status":"{status}","duration_ms":{dur},"is_test":{},"lines":[{{"step":0,"input":{{"orderId":"ORD-{n}"}}}}],"context":{{"user_email":"user{n}@example.com","region":"eu-west-1","attempt":{n}}}}}"#,
        n.is_multiple_of(2)
    )
}

const CONFIG: &str = r#"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["columns", "lines"]
masking = "pii"
timestamp_field = "ts"

[sinks.columns]
type = "directory"
path = "{dir}/parquet"
encoding = "parquet"
key = "tenant={account_id}/year=%Y/month=%m/day=%d/hour=%H/{batch_id}.parquet"
batch = { max_age = "1s" }
parquet = { columns = [
  { name = "dur", field = "duration_ms", type = "int64" },
  { name = "is_test", field = "is_test", type = "bool" },
  { name = "user_email", field = "context.user_email", type = "string" },
  { name = "started", field = "ts", type = "timestamp" },
] }

[sinks.lines]
type = "directory"
path = "{dir}/ndjson"
key = "{source}/{batch_id}.ndjson.gz"
batch = { max_age = "1s" }

[masking.pii]
detectors = ["email"]
"#;

#[test]
fn a_parquet_archive_reads_back_in_pyarrow_and_duckdb_partitioned_typed_and_masked() {
    let lf = Lf::new(CONFIG);
    // Across an hour and a day (and a month) boundary, two tenants, one misfit value.
    let times = [
        "2026-03-31T22:59:59.250Z",
        "2026-03-31T23:00:00Z",
        "2026-03-31T23:59:59.999999Z",
        "2026-04-01T00:00:00Z",
        "2026-04-01T00:00:00.000001Z",
    ];
    let mut lines = String::new();
    let mut n = 0u64;
    for t in times {
        // `acct=2`: a value with `=` must not read as another partition in its path.
        for account in ["acct-1", "acct=2"] {
            for status in ["succeeded", "failed"] {
                let dur = if n == 7 {
                    "\"oops\"".to_string()
                } else {
                    (n * 10).to_string()
                };
                lines.push_str(&job(n, t, account, status, &dur));
                lines.push('\n');
                n += 1;
            }
        }
    }
    std::fs::write(lf.path("logs/jobs.log"), &lines).unwrap();
    let run = lf.spawn();
    wait_until(
        Duration::from_secs(60),
        "every record in both archives",
        || {
            run.metric("logferry_records_sent_total", "sink=\"columns\"") >= n as f64
                && run.metric("logferry_records_sent_total", "sink=\"lines\"") >= n as f64
        },
    );
    assert_eq!(
        run.metric("logferry_parquet_values_mistyped_total", "sink=\"columns\""),
        1.0,
        "the one string in an int64 column"
    );
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));

    let got = read(
        &lf.path("parquet"),
        &[
            "SELECT tenant, json_extract_string(record, '$.status') AS status, count(*) AS n FROM archive GROUP BY ALL ORDER BY ALL",
            "SELECT year::INT AS year, month::INT AS month, day::INT AS day, hour::INT AS hour, count(*) AS n FROM archive GROUP BY ALL ORDER BY ALL",
        ],
    );
    let files = got["files"].as_array().unwrap();
    assert!(!files.is_empty());
    // The schema, as pyarrow reads it.
    let schema: Vec<(String, String, bool)> = files[0]["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
                f["nullable"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        ("_time", "timestamp[us, tz=UTC]", false),
        ("_source", "string", false),
        ("record", "string", false),
        ("account_id", "string", true),
        ("dur", "int64", true),
        ("is_test", "bool", true),
        ("user_email", "string", true),
        ("started", "timestamp[us, tz=UTC]", true),
    ];
    for (name, ty, nullable) in want {
        assert!(
            schema.contains(&(name.to_string(), ty.to_string(), nullable)),
            "{name} {ty} {nullable} in {schema:?}"
        );
    }
    for f in files {
        assert_eq!(f["codecs"], serde_json::json!(["ZSTD"]), "{}", f["path"]);
    }
    // Every row sits in the partition its path names.
    let mut records = BTreeSet::new();
    let mut nulls = 0;
    for f in files {
        let p = &f["partitions"];
        for r in f["rows"].as_array().unwrap() {
            let t = r["_time"].as_str().unwrap();
            let (date, clock) = t.split_once('T').unwrap();
            let ymd: Vec<&str> = date.split('-').collect();
            assert_eq!(p["year"], ymd[0], "{t} in {}", f["path"]);
            assert_eq!(p["month"], ymd[1], "{t} in {}", f["path"]);
            assert_eq!(p["day"], ymd[2], "{t} in {}", f["path"]);
            assert_eq!(p["hour"], &clock[..2], "{t} in {}", f["path"]);
            // The path holds the value as keys clean it; the column, as the record has it.
            let account = r["account_id"].as_str().unwrap();
            assert_eq!(p["tenant"], account.replace('=', "_"), "{}", f["path"]);
            assert_eq!(r["_source"], "jobs");
            // Masked before encoding, in the typed column and in the record.
            let email = r["user_email"].as_str().unwrap();
            assert!(!email.contains("@example.com"), "{email}");
            let rec = r["record"].as_str().unwrap();
            assert!(!rec.contains("@example.com"), "{rec}");
            let v: serde_json::Value = serde_json::from_str(rec).unwrap();
            assert_eq!(r["started"], r["_time"], "the record's time, in micros");
            if r["dur"].is_null() {
                nulls += 1;
                assert_eq!(
                    v["duration_ms"], "oops",
                    "the record keeps the misfit whole"
                );
            } else {
                assert_eq!(r["dur"], v["duration_ms"]);
            }
            assert_eq!(r["is_test"], v["is_test"]);
            records.insert(v.to_string());
        }
    }
    assert_eq!(nulls, 1);
    // The same records as the NDJSON sink, as JSON.
    let ndjson: BTreeSet<String> = archive_records(&lf.path("ndjson"))
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(records.len() as u64, n);
    assert_eq!(records, ndjson);
    // `logferry export` reads the Parquet archive back: the same records, by their own time
    // (a range that starts one microsecond into an hour leaves out the record at its start).
    let o = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["export", "--sink", "columns", "--by", "t", "--no-receipt"])
        .args([
            "--from",
            "2026-03-31T22:59:59.250001Z",
            "--to",
            "2026-04-02",
        ])
        .arg("--config")
        .arg(&lf.cfg)
        .output()
        .unwrap();
    succeeded(&o);
    let exported: BTreeSet<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap()
                .to_string()
        })
        .collect();
    let later: BTreeSet<String> = ndjson
        .iter()
        .filter(|r| !r.contains("2026-03-31T22:59:59.250Z"))
        .cloned()
        .collect();
    assert_eq!(later.len() as u64, n - 4);
    assert_eq!(exported, later);
    // DuckDB with Hive partitions: counts per tenant and status, and per hour.
    assert_eq!(got["duckdb_rows"], n);
    let per_status: BTreeMap<(String, String), u64> = got["sql"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["tenant"].as_str().unwrap().to_string(),
                    r["status"].as_str().unwrap().to_string(),
                ),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_status.len(), 4, "{per_status:?}");
    let tenants: BTreeSet<&str> = per_status.keys().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tenants, BTreeSet::from(["acct-1", "acct_2"]));
    assert!(per_status.values().all(|c| *c == n / 4), "{per_status:?}");
    let per_hour: Vec<(i64, i64, i64, i64, u64)> = got["sql"][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["year"].as_i64().unwrap(),
                r["month"].as_i64().unwrap(),
                r["day"].as_i64().unwrap(),
                r["hour"].as_i64().unwrap(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per_hour,
        [
            (2026, 3, 31, 22, 4),
            (2026, 3, 31, 23, 8),
            (2026, 4, 1, 0, 8)
        ]
    );

    // `logferry schema` prints a DuckDB view that reads the same rows, hour partitions typed.
    let ddl = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args([
            "schema",
            "--sink",
            "columns",
            "--dialect",
            "duckdb",
            "--config",
        ])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    succeeded(&ddl);
    let sql = lf.path("view.sql");
    std::fs::write(&sql, &ddl.stdout).unwrap();
    let q = Command::new(python())
        .args([
            "-c",
            "import duckdb,sys; c=duckdb.connect(); c.execute(open(sys.argv[1]).read()); \
             print(c.execute('SELECT count(*), typeof(any_value(hour)), count(DISTINCT tenant) FROM \"columns\"').fetchone())",
        ])
        .arg(&sql)
        .output()
        .unwrap();
    succeeded(&q);
    assert_eq!(
        String::from_utf8_lossy(&q.stdout).trim(),
        format!("({n}, 'INTEGER', 2)")
    );
}

/// The built-in job schema: its typed columns, `context` flattened into `context_*` string
/// columns, and a job record of several MB with nested `lines` queryable with DuckDB's JSON
/// functions.
#[test]
fn platform_job_columns_and_a_record_of_several_mb_query_in_duckdb() {
    let lf = Lf::new(
        r#"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["jobs"]
timestamp_field = "started_at"
max_record_bytes = "16MiB"
max_line_bytes = "16MiB"

[sinks.jobs]
type = "directory"
path = "{dir}/parquet"
encoding = "parquet"
parquet = { schema = "platform_job" }
"#,
    );
    let mut text = String::new();
    for i in 0..20u64 {
        text.push_str(&format!(
            r#"{{"id":"j{i}","master_job_id":"m1","recipe_id":"4711","account_id":"a1","status":"{}","is_test":{},"started_at":"2026-03-0{}T10:00:00Z","completed_at":"2026-03-0{}T10:00:05.5Z","error_type":null,"environment_type":"prod","context":{{"region":"eu","attempt":{i},"nested":{{"x":1}}}}}}"#,
            if i % 4 == 0 { "failed" } else { "succeeded" },
            i == 3,
            1 + i % 3,
            1 + i % 3
        ));
        text.push('\n');
    }
    // One job of several MB: 20,000 steps.
    let steps: Vec<String> = (0..20_000)
        .map(|s| {
            format!(
                r#"{{"step":{s},"name":"call-{s}","input":{{"payload":"{}"}}}}"#,
                "x".repeat(150)
            )
        })
        .collect();
    text.push_str(&format!(
        r#"{{"id":"big","recipe_id":"4711","status":"failed","is_test":false,"started_at":"2026-03-09T10:00:00Z","lines":[{}],"context":{{"region":"us"}}}}"#,
        steps.join(",")
    ));
    text.push('\n');
    assert!(text.len() > 3 << 20);
    std::fs::write(lf.path("logs/jobs.log"), &text).unwrap();
    succeeded(&lf.run_once());
    let got = read(
        &lf.path("parquet"),
        &[
            "SELECT count(*) AS n FROM archive WHERE recipe_id = '4711' AND status = 'failed' AND month::INT = 3",
            "SELECT json_array_length(json_extract(record, '$.lines')) AS steps, json_extract_string(record, '$.lines[19999].name') AS last FROM archive WHERE id = 'big'",
            "SELECT count(*) AS n FROM archive WHERE context_region = 'eu' AND context_attempt IS NOT NULL",
        ],
    );
    assert_eq!(
        got["sql"][0][0]["n"], 6,
        "five failed of twenty, and the big one"
    );
    assert_eq!(got["sql"][1][0]["steps"], 20_000);
    assert_eq!(got["sql"][1][0]["last"], "call-19999");
    assert_eq!(got["sql"][2][0]["n"], 20);
    let file = &got["files"][0];
    let ty = |name: &str| {
        file["schema"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["type"].as_str().unwrap().to_string())
    };
    assert_eq!(ty("is_test").as_deref(), Some("bool"));
    assert_eq!(ty("started_at").as_deref(), Some("timestamp[us, tz=UTC]"));
    assert_eq!(ty("completed_at").as_deref(), Some("timestamp[us, tz=UTC]"));
    assert_eq!(ty("status").as_deref(), Some("string"));
    // Scalars only: `context.nested` is an object, left in `record`.
    assert_eq!(ty("context_nested"), None);
    for f in got["files"].as_array().unwrap() {
        for r in f["rows"].as_array().unwrap() {
            if r["id"] == "j3" {
                assert_eq!(r["is_test"], true);
                assert_eq!(r["completed_at"], "2026-03-01T10:00:05.500000+00:00");
                assert_eq!(r["context_attempt"], "3");
            }
        }
    }
}
