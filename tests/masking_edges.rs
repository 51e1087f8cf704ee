//! Masking at the edges real logs and attackers reach: records larger than a line buffer,
//! almost-JSON, crafted lines that would make a detector slow, cards in every spelling, secrets
//! in object keys, bad escapes, binary HMAC keys. Every planted value is checked against the
//! archive, its object keys and the logs.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const PROFILE: &str = r#"
[masking.pii]
detectors = ["credit_card", "email", "us_ssn", "iban", "aws_access_key", "jwt",
             "private_key", "bearer_token", "url_credentials", "ipv4", "ipv6"]
[[masking.pii.rules]]
name = "masked_steps"
each = "lines[*]"
when = { path = "masked", equals = true }
paths = ["input", "output"]
action = "replace"
value = { data = "masked" }
[[masking.pii.rules]]
name = "password"
paths = ["password"]
action = "redact"
"#;

fn config(source_extra: &str, key: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
masking = "pii"
{source_extra}
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
key = "{key}"
{PROFILE}"#
    )
}

/// Everything a run left where a secret could end up: the records, the object keys and the logs.
fn everything(lf: &Lf, out: &std::process::Output) -> String {
    let mut all = String::new();
    for r in lf.final_archive("archive") {
        all.push_str(&r.to_string());
        all.push('\n');
    }
    all.push_str(&lf.files("archive").join("\n"));
    all.push_str(&String::from_utf8_lossy(&out.stdout));
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    all
}

fn assert_none_survives(all: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !all.contains(s),
            "{s:?} survived:\n{}",
            &all[..all.len().min(4000)]
        );
    }
}

/// A job record with a masked step holding `secret` and `size` bytes of ordinary step data.
fn job(id: u32, secret: &str, size: usize) -> String {
    let filler: Vec<String> = (0..size / 60)
        .map(|i| format!(r#"{{"step":{i},"masked":false,"input":{{"row":"value {i} ok"}}}}"#))
        .collect();
    format!(
        r#"{{"job_id":"j-{id}","lines":[{},{{"step":"pay","masked":true,"input":{{"password":"{secret}","cardholder":"Ada Quill","pin":"P1n-8086"}},"output":{{"auth":"{secret}"}}}}],"status":"ok"}}"#,
        filler.join(",")
    )
}

#[test]
fn a_job_record_over_a_mebibyte_is_masked_whole_with_its_rules() {
    let lf = Lf::new(&config("", "{source}/{batch_id}.ndjson.gz"));
    let big = job(1, "tangerine-Quokka-77", 1_200_000);
    assert!(big.len() > 1 << 20);
    std::fs::write(
        lf.path("logs/a.log"),
        format!("{big}\n{}\n", job(2, "small-Secret-3", 100)),
    )
    .unwrap();
    let out = lf.run_once();
    let all = everything(&lf, &out);
    assert_none_survives(
        &all,
        &[
            "tangerine-Quokka-77",
            "small-Secret-3",
            "Ada Quill",
            "P1n-8086",
        ],
    );
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 2);
    let first = recs.iter().find(|r| r["job_id"] == "j-1").unwrap();
    let steps = first["lines"].as_array().unwrap();
    assert_eq!(
        steps.last().unwrap()["input"],
        serde_json::json!({"data": "masked"})
    );
    // The unmasked steps arrive as written.
    assert_eq!(steps[3]["input"]["row"], "value 3 ok");
}

#[test]
fn a_record_over_max_record_bytes_leaves_as_a_stand_in_never_as_text() {
    let lf = Lf::new(&config(
        "max_record_bytes = \"64KiB\"\ntimestamp_field = \"ts\"",
        "{source}/{account_id}/%Y/%m/%d/{batch_id}.ndjson.gz",
    ));
    let big = job(1, "ochre-Marmot-19", 200_000);
    // A card number as the account, and the time first: key fields a stand-in must keep, masked.
    let big = big.replacen(
        "{",
        r#"{"ts":"2019-09-13T17:24:16Z","account_id":4.111111111111111e15,"note":"owner ada@example.org","#,
        1,
    );
    std::fs::write(lf.path("logs/a.log"), format!("{big}\n{{\"ok\":1}}\n")).unwrap();
    let out = lf.run_once();
    let all = everything(&lf, &out);
    assert_none_survives(
        &all,
        &[
            "ochre-Marmot-19",
            "Ada Quill",
            "ada@example.org",
            "4111111111111111",
        ],
    );
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 2);
    let stand_in = recs
        .iter()
        .find(|r| r.get("_logferry_oversize").is_some())
        .unwrap();
    assert_eq!(stand_in["message"], "[REDACTED:oversize]");
    assert_eq!(stand_in["_logferry_oversize"]["bytes"], big.len());
    assert_eq!(
        stand_in["_logferry_oversize"]["sha256"],
        hex::encode(Sha256::digest(big.as_bytes()))
    );
    assert_eq!(stand_in["job_id"], "j-1");
    assert_eq!(stand_in["note"], "owner [REDACTED:email]");
    assert!(stand_in.get("lines").is_none());
    // Filed under the record's own day, with the masked account in its key.
    let files = lf.files("archive");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("jobs/_REDACTED_credit_card_/2019/09/13/")),
        "{files:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("over the size limit").count(), 1, "{stderr}");
}

#[test]
fn oversize_dead_letter_keeps_the_record_whole_out_of_the_archive() {
    let lf = Lf::new(&config(
        "max_record_bytes = \"64KiB\"\noversize = \"dead_letter\"",
        "{source}/{batch_id}.ndjson.gz",
    ));
    let big = job(1, "umber-Newt-41", 150_000);
    std::fs::write(lf.path("logs/a.log"), format!("{{\"ok\":1}}\n{big}\n")).unwrap();
    let out = lf.run_once();
    let all = everything(&lf, &out);
    assert_none_survives(&all, &["umber-Newt-41"]);
    assert_eq!(lf.final_archive("archive").len(), 1);
    let dl = "data/dead-letter/sources/jobs";
    let files = lf.files(dl);
    let rec = files
        .iter()
        .find(|f| f.ends_with("-9.json") && !f.contains("reason"))
        .unwrap_or_else(|| panic!("{files:?}"));
    assert_eq!(
        std::fs::read_to_string(lf.path(&format!("{dl}/{rec}"))).unwrap(),
        big
    );
    assert!(
        files.iter().any(|f| f.ends_with("-9.reason.json")),
        "{files:?}"
    );
}

#[test]
fn almost_json_lines_never_carry_a_ruled_field_out() {
    let lf = Lf::new(&config("", "{source}/{batch_id}.ndjson.gz"));
    let lines = [
        r#"{"password":"pw-Trailing-1","x":1,}"#,
        r#"{"password":"pw-NaN-2","n":NaN}"#,
        r#"{'password':'pw-Quotes-3'}"#,
        r#"{"password":"pw-Two-4"}{"password":"pw-Two-5"}"#,
    ];
    std::fs::write(lf.path("logs/a.log"), lines.join("\n") + "\n").unwrap();
    // A file that starts with a byte-order mark: its first record is still JSON.
    std::fs::write(
        lf.path("logs/b.log"),
        "\u{feff}{\"password\":\"pw-Bom-6\",\"k\":1}\n",
    )
    .unwrap();
    let out = lf.run_once();
    let all = everything(&lf, &out);
    assert_none_survives(
        &all,
        &[
            "pw-Trailing-1",
            "pw-NaN-2",
            "pw-Quotes-3",
            "pw-Two-4",
            "pw-Two-5",
            "pw-Bom-6",
            "\u{feff}",
        ],
    );
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 5);
    let redacted = recs
        .iter()
        .filter(|r| r["message"] == "[REDACTED:unparsable]")
        .count();
    assert_eq!(redacted, 4);
    assert!(recs.iter().all(|r| r["message"] == "[REDACTED:unparsable]"
        || (r["password"] == "[REDACTED:password]" && r["k"] == 1)));
}

#[test]
fn unparsable_detectors_keeps_the_text_for_users_who_choose_it() {
    let lf = Lf::new(&config("", "{source}/{batch_id}.ndjson.gz").replace(
        "[masking.pii]\n",
        "[masking.pii]\nunparsable = \"detectors\"\n",
    ));
    std::fs::write(lf.path("logs/a.log"), "not json, mail ada@example.org\n").unwrap();
    lf.run_once();
    let recs = lf.final_archive("archive");
    assert_eq!(recs[0]["message"], "not json, mail [REDACTED:email]");
}

#[test]
fn crafted_lines_cost_linear_time_and_dates_stay_dates() {
    let lf = Lf::new(&config("", "{source}/{batch_id}.ndjson.gz"));
    let ones = format!(r#"{{"s":"{}"}}"#, "1 ".repeat(4000).trim_end());
    let sevens = format!(r#"{{"s":"{}"}}"#, "7 ".repeat(20_000).trim_end());
    let dates = "2026-01-03 ".repeat(1000);
    let dates = format!(r#"{{"s":"{}"}}"#, dates.trim_end());
    std::fs::write(
        lf.path("logs/a.log"),
        format!("{ones}\n{sevens}\n{dates}\n"),
    )
    .unwrap();
    // Before the fix these took minutes; the bound here is for a debug build on a busy machine.
    let start = Instant::now();
    lf.run_once();
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 3);
    for (r, line) in recs.iter().zip([&ones, &sevens, &dates]) {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r, &want, "changed although nothing in it is a secret");
    }
}

#[test]
fn cards_in_numbers_keys_and_glued_text_are_masked_and_lookalikes_are_not() {
    let lf = Lf::new(&config("", "{source}/{account_id}/{batch_id}.ndjson.gz"));
    let secrets = [
        r#"{"account_id":4.111111111111111e15}"#,
        r#"{"account_id":-5555555555554444}"#,
        r#"{"account_id":4012888888881881.0}"#,
        r#"{"account_id":"a","v":378282246310005e0}"#,
        r#"{"account_id":"b","4000056655665556":"x"}"#,
        r#"{"account_id":"c","users":{"grace@example.net":{"role":"admin"},"linus@example.net":1}}"#,
        r#"{"account_id":"d","t":"card6011111111111117 and 3530111333300000x"}"#,
        r#"{"account_id":"e","t":"5105.1051.0510.5100 or 2223  0031  2200  3222"}"#,
        r#"{"account_id":"f","t":"ssn219-09-9999 then"}"#,
    ];
    let planted = [
        "4111111111111111",
        "5555555555554444",
        "4012888888881881",
        "378282246310005",
        "4000056655665556",
        "grace@example.net",
        "linus@example.net",
        "6011111111111117",
        "3530111333300000",
        "5105.1051.0510.5100",
        "2223  0031  2200  3222",
        "219-09-9999",
    ];
    // Look-alikes: Luhn-valid without a card prefix, dates, versions, amounts, references, and
    // card-shaped digits inside a hex id or a UUID.
    let lookalikes = [
        r#"{"account_id":"g","job":"j-201906658197301","ref":"ORD-1234567812345670"}"#,
        r#"{"account_id":"h","v":"v4.22.1","amount":"1234.56","at":"2026-11-23 10:00:00"}"#,
        r#"{"account_id":"i","n":1700000000123,"big":12345678901234567890,"ratio":0.25}"#,
        r#"{"account_id":"j","uuid":"550e8400-e29b-41d4-a716-446655440000","phone_ext":"x4411"}"#,
        r#"{"account_id":"k","job":"j-2a4212120637001","uuid":"12345678-4111-4111-8111-1003abcdef01"}"#,
    ];
    let text: Vec<&str> = secrets.iter().chain(&lookalikes).copied().collect();
    std::fs::write(lf.path("logs/a.log"), text.join("\n") + "\n").unwrap();
    let out = lf.run_once();
    let all = everything(&lf, &out);
    assert_none_survives(&all, &planted);
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), secrets.len() + lookalikes.len());
    for l in lookalikes {
        let want: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(recs.contains(&want), "{l} was changed");
    }
    let users = recs.iter().find(|r| r["account_id"] == "c").unwrap();
    assert_eq!(
        users["users"],
        serde_json::json!({"[REDACTED:email]": {"role": "admin"}, "[REDACTED:email]#2": 1})
    );
}

#[test]
fn a_lone_surrogate_costs_one_character_not_the_audit_record() {
    let lf = Lf::new(&config("", "{source}/{batch_id}.ndjson.gz"));
    std::fs::write(
        lf.path("logs/a.log"),
        "{\"event\":\"login\",\"name\":\"Zo\\ud800e\",\"mail\":\"zoe@example.com\",\"password\":\"pw-Surr-1\"}\n",
    )
    .unwrap();
    let out = lf.run_once();
    assert_none_survives(&everything(&lf, &out), &["zoe@example.com", "pw-Surr-1"]);
    let recs = lf.final_archive("archive");
    assert_eq!(recs[0]["event"], "login");
    assert_eq!(recs[0]["name"], "Zo\u{fffd}e");
    assert_eq!(recs[0]["mail"], "[REDACTED:email]");
    assert_eq!(recs[0]["password"], "[REDACTED:password]");
}

#[test]
fn hmac_key_files_are_raw_bytes_resolved_next_to_the_config() {
    use hmac::{Hmac, Mac};
    let pseudonym = |key: &[u8]| {
        let lf = Lf::new(&config("", "{source}/{batch_id}.ndjson.gz").replace(
            "[[masking.pii.rules]]\nname = \"password\"",
            "[[masking.pii.rules]]\nname = \"user\"\npaths = [\"user\"]\naction = \"hmac\"\nkey_file = \"hmac.key\"\n[[masking.pii.rules]]\nname = \"password\"",
        ));
        std::fs::write(lf.path("hmac.key"), key).unwrap();
        std::fs::write(lf.path("logs/a.log"), "{\"user\":\"u-1\"}\n").unwrap();
        // Run from another directory: the key is found beside the config, not in the cwd.
        let out = std::process::Command::new(BIN)
            .args(["run", "--once", "--config"])
            .arg(&lf.cfg)
            .current_dir("/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lf.final_archive("archive")[0]["user"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a: Vec<u8> = (0x80..0xA0).collect();
    let b: Vec<u8> = (0x81..0xA1).collect();
    let (pa, pb) = (pseudonym(&a), pseudonym(&b));
    assert_ne!(pa, pb, "two binary keys must not give the same pseudonym");
    let mut mac = Hmac::<Sha256>::new_from_slice(&a).unwrap();
    mac.update(b"u-1");
    assert_eq!(pa, hex::encode(mac.finalize().into_bytes()));
    // One trailing newline is not key material.
    let mut with_nl = a.clone();
    with_nl.push(b'\n');
    assert_eq!(pseudonym(&with_nl), pa);
}

#[test]
fn sigterm_during_a_long_record_ends_within_the_shutdown_timeout() {
    let lf = Lf::new(&format!(
        "shutdown_timeout = \"1s\"\n{}",
        config("", "{source}/{batch_id}.ndjson.gz").replace(
            "key = ",
            "batch = { max_records = 1, max_age = \"1s\" }\nkey = "
        )
    ));
    // A first record to know the source is running, then a large one full of detector bait
    // (slow to mask in a debug build, linear all the same).
    let bait = "mail a@b.io card 4111 1111 1111 1111 ip 10.0.0.1 ".repeat(600_000);
    std::fs::write(
        lf.path("logs/a.log"),
        format!("{{\"first\":1}}\n{{\"s\":\"{bait}\"}}\n"),
    )
    .unwrap();
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "the first record archived", || {
        !lf.archive("archive").is_empty()
    });
    assert_eq!(
        lf.archive("archive").len(),
        1,
        "the large record must still be in work when SIGTERM comes (make it larger)"
    );
    let start = Instant::now();
    let status = run.term(Duration::from_secs(10));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    // Either it finished in time (0) or the deadline cut it short (1); never a hang.
    assert!(matches!(status.code(), Some(0) | Some(1)), "{status}");
}

#[test]
fn a_40_mb_job_record_is_masked_end_to_end_in_bounded_memory() {
    let lf = Lf::new(&config("", "{source}/{batch_id}.ndjson.gz"));
    // Every hundredth step is flagged masked and holds its own planted secret.
    let mut steps = Vec::new();
    let mut size = 0;
    let mut planted = Vec::new();
    let mut i = 0;
    while size < 40_000_000 {
        let s = if i % 100 == 0 {
            let secret = format!("Sx{i}-kiwi");
            let step = format!(
                r#"{{"step":{i},"masked":true,"input":{{"password":"{secret}"}},"output":{{"token":"{secret}"}}}}"#
            );
            planted.push(secret);
            step
        } else {
            format!(
                r#"{{"step":{i},"masked":false,"input":{{"row":"ordinary value {i}"}},"output":{{"ok":true}}}}"#
            )
        };
        size += step_len(&s);
        steps.push(s);
        i += 1;
    }
    let rec = format!(r#"{{"job_id":"j-40mb","lines":[{}]}}"#, steps.join(","));
    std::fs::write(lf.path("logs/a.log"), format!("{rec}\n{{\"after\":1}}\n")).unwrap();
    // Peak RSS through the same rusage call scripts/bench.sh uses.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); \
             print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(r.returncode)",
            BIN,
            "run",
            "--once",
            "--config",
        ])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    eprintln!("40 MB record ({} bytes): peak RSS {rss} MB", rec.len());
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 2);
    let job = recs.iter().find(|r| r["job_id"] == "j-40mb").unwrap();
    let lines = job["lines"].as_array().unwrap();
    assert_eq!(lines.len(), steps.len());
    for (n, l) in lines.iter().enumerate() {
        if n % 100 == 0 {
            assert_eq!(
                l["input"],
                serde_json::json!({"data": "masked"}),
                "step {n}"
            );
            assert_eq!(
                l["output"],
                serde_json::json!({"data": "masked"}),
                "step {n}"
            );
        } else {
            assert_eq!(l["input"]["row"], format!("ordinary value {n}"));
        }
    }
    // Every planted secret ends in the same marker: one search finds any survivor.
    assert!(!planted.is_empty());
    let text = job.to_string();
    assert!(!text.contains("-kiwi"), "a planted step secret survived");
    // One record in memory at a time, a few copies of it at most (read, masked, batched).
    assert!(rss < 384, "peak RSS {rss} MB for a 40 MB record");
}

fn step_len(s: &str) -> usize {
    s.len() + 1
}

#[test]
fn oversize_dead_letter_in_memory_mode_drops_and_writes_nothing() {
    let lf = Lf::new(
        &config(
            "max_record_bytes = \"64KiB\"\noversize = \"dead_letter\"",
            "{source}/{batch_id}.ndjson.gz",
        )
        .replace("key = ", "buffer = \"memory\"\nkey = "),
    );
    let big = job(1, "sienna-Tapir-5", 150_000);
    std::fs::write(lf.path("logs/a.log"), format!("{{\"ok\":1}}\n{big}\n")).unwrap();
    let out = lf.run_once();
    assert_none_survives(&everything(&lf, &out), &["sienna-Tapir-5"]);
    assert_eq!(lf.final_archive("archive").len(), 1);
    let kept = lf.files("data");
    assert!(
        kept.iter().all(|f| f.starts_with("checkpoints/")),
        "zero retention: only checkpoints on disk, found {kept:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("dropped"));
}
