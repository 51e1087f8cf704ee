//! One object per record, named by the record's fields (the platform's own streaming layout):
//! a record read again finds its object and counts as delivered; a different record with the
//! same key is dead-lettered, never written over the first. Directory, S3 and Azure Blob.

mod common;

use common::*;
use std::process::Command;

const KEY: &str = "{user_id}/jobs/{recipe_id}/%Y%m%d/{job_id}/{user_id}-{recipe_id}-{job_id}-%Y%m%d%H%M%S-{status}.json";

/// A job record as the platform writes it; step 1 is flagged masked.
fn job(i: u64, output: &str) -> String {
    format!(
        r#"{{"user_id":"u7","recipe_id":"r{r}","job_id":"j{i}","status":"succeeded","completed_at":"2026-11-23T08:{m:02}:{s:02}Z","steps":[{{"n":0,"mask_data":false,"input":{{"a":{i}}},"output":{{"v":"{output}"}}}},{{"n":1,"mask_data":true,"input":{{"card":"4111111111111111"}},"output":{{"v":"{output}"}}}}]}}"#,
        r = i % 3,
        m = i / 60,
        s = i % 60
    ) + "\n"
}

fn sink_config(sink: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
timestamp_field = "completed_at"
masking = "platform"
[masking.platform]
detectors = []
[[masking.platform.rules]]
each = "steps[*]"
when = {{ path = "mask_data", equals = true }}
paths = ["input", "output"]
action = "replace"
value = {{ data = "masked" }}
[sinks.archive]
{sink}
key = "{KEY}"
compression = "none"
batch = {{ max_records = 1, max_age = "200ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms" }}
"#
    )
}

/// Writes 30 jobs, ships them, ships them again as after a crash that lost the checkpoints
/// (nothing new, nothing dead-lettered), then a different record under a taken key
/// (dead-lettered). `objects` lists (key, content) in the sink.
fn scenario(lf: &Lf, env: &[(&str, &str)], objects: impl Fn() -> Vec<(String, String)>) {
    let log = lf.path("logs/jobs.log");
    let text: String = (0..30).map(|i| job(i, "first")).collect();
    std::fs::write(&log, text).unwrap();
    lf.run_once_env(env);
    let first = objects();
    assert_eq!(first.len(), 30, "{first:?}");
    let (k, v) = &first
        .iter()
        .find(|(k, _)| k.ends_with("u7-r1-j1-20261123080001-succeeded.json"))
        .expect("the platform's layout");
    assert_eq!(
        k,
        "u7/jobs/r1/20261123/j1/u7-r1-j1-20261123080001-succeeded.json"
    );
    let rec: serde_json::Value = serde_json::from_str(v.trim_end()).unwrap();
    assert_eq!(rec["steps"][1]["input"]["data"], "masked");
    assert_eq!(rec["steps"][0]["output"]["v"], "first");

    // Every record read again (the checkpoints gone, as after a crash before they were saved).
    std::fs::remove_dir_all(lf.path("data/checkpoints")).unwrap();
    lf.run_once_env(env);
    assert_eq!(objects(), first, "the replay changed nothing");
    assert!(
        !lf.path("data/dead-letter/archive").exists(),
        "a replay is not a collision"
    );

    // A different record that renders a key already taken.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, job(5, "second").as_bytes()).unwrap();
    lf.run_once_incomplete_env(env);
    assert_eq!(objects(), first, "the first object is kept");
    let note = lf.dead_letter_note("archive");
    let reason = note["reason"].as_str().unwrap();
    assert!(
        reason.contains("already exists") && reason.contains("j5"),
        "{reason}"
    );
}

#[test]
fn one_object_per_record_in_a_directory() {
    let lf = Lf::new(&sink_config(
        "type = \"directory\"\npath = \"{dir}/archive\"",
    ));
    let root = lf.path("archive");
    scenario(&lf, &[], || {
        let mut v: Vec<(String, String)> = walk(&root)
            .into_iter()
            .map(|p| {
                let k = p.strip_prefix(&root).unwrap().display().to_string();
                (k, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        v.sort();
        v
    });
}

#[test]
fn one_object_per_record_in_s3() {
    let moto = Moto::start();
    let (rt, c) = moto.bucket("records", false);
    let lf = Lf::new(&sink_config(&format!(
        "type = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"records\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true",
        moto.endpoint
    )));
    scenario(&lf, &moto.env(), || {
        rt.block_on(async {
            let list = c.list_objects_v2().bucket("records").send().await.unwrap();
            let mut v = Vec::new();
            for o in list.contents() {
                let k = o.key().unwrap().to_string();
                let body = c
                    .get_object()
                    .bucket("records")
                    .key(&k)
                    .send()
                    .await
                    .unwrap();
                let b = body.body.collect().await.unwrap().into_bytes();
                v.push((k, String::from_utf8(b.to_vec()).unwrap()));
            }
            v.sort();
            v
        })
    });
}

#[test]
fn one_object_per_record_in_azure_blob() {
    let az = Azurite::start();
    az.create_container("records");
    let lf = Lf::new(&sink_config(&format!(
        "type = \"azure_blob\"\nallow_plaintext_credentials = true\ncontainer = \"records\"\nconnection_string = \"{}\"",
        az.connection_string()
    )));
    scenario(&lf, &[], || {
        let mut v: Vec<(String, String)> = az
            .list("records")
            .into_iter()
            .map(|k| {
                let b = az.get("records", &k);
                (k, String::from_utf8(b).unwrap())
            })
            .collect();
        v.sort();
        v
    });
}

#[test]
fn the_shipped_platform_example_validates_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let text: String = (0..5).map(|i| job(i, "x")).collect();
    std::fs::write(logs.join("jobs.log"), text).unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/platform-streaming.toml");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&example)
            .env("PLATFORM_LOGS", &logs)
            .env("ARCHIVE_DIR", dir.path().join("archive"))
            .env("LOGFERRY_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap()
    };
    let v = run(&["validate"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let r = run(&["run", "--once"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let files = walk(&dir.path().join("archive"));
    assert_eq!(files.len(), 5, "{files:?}");
    let one = dir
        .path()
        .join("archive/u7/jobs/r2/20261123/j2/u7-r2-j2-20261123080002-succeeded.json");
    let rec: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(one).unwrap().trim_end()).unwrap();
    assert_eq!(rec["steps"][1]["output"]["data"], "masked");
}

#[test]
fn kill_9_while_writing_one_object_per_record_leaves_no_second_object_and_no_dead_letter() {
    let lf = Lf::new(&sink_config(
        "type = \"directory\"\npath = \"{dir}/archive\"",
    ));
    let log = lf.path("logs/jobs.log");
    std::fs::write(&log, "").unwrap();
    let mut next = 0u64;
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..4 {
        let run = lf.spawn();
        let text: String = (next..next + 100).map(|i| job(i, "k")).collect();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        next += 100;
        // The scenario is a crash at a random moment while objects are being written.
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(50..400)));
        run.kill9();
    }
    lf.run_once();
    let files = walk(&lf.path("archive"));
    assert_eq!(
        files.len(),
        next as usize,
        "one object per record, none twice"
    );
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert_eq!(text.lines().count(), 1, "{}", f.display());
    }
    assert!(
        !lf.path("data/dead-letter/archive").exists(),
        "a replay after kill -9 is not a collision"
    );
}
