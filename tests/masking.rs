//! Masking end to end: planted secrets never reach the archive, look-alikes pass untouched,
//! pseudonyms are stable, bad profiles are refused, and `logferry mask` shows what it did.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const KEY: &str = "0123456789abcdef0123456789abcdef";

const PROFILE: &str = r#"
[masking.pii]
detectors = ["credit_card", "email", "us_ssn", "iban", "aws_access_key", "jwt",
             "private_key", "bearer_token", "url_credentials", "ipv4", "ipv6", "phone"]
[[masking.pii.rules]]
name = "masked_steps"
each = "lines[*]"
when = { path = "masked", equals = true }
paths = ["input", "output"]
action = "replace"
value = { data = "masked" }
[[masking.pii.rules]]
name = "user_email"
paths = ["user_email", "context.user_email"]
action = "hmac"
key_env = "LOGFERRY_TEST_HMAC_KEY"
"#;

fn config(extra_source: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
masking = "pii"
{extra_source}
[sources.text]
include = ["{{dir}}/logs/*.txt"]
format = "text"
sinks = ["archive"]
masking = "pii"
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
key = "{{source}}/{{batch_id}}.ndjson.gz"
{PROFILE}"#
    )
}

fn run_once_with_key(lf: &Lf, key: &str) -> std::process::Output {
    lf.run_once_env(&[("LOGFERRY_TEST_HMAC_KEY", key)])
}

/// A Luhn-valid 16-digit number made from `n`.
fn card(n: u64) -> String {
    let body = format!("4{:014}", n * 7919 % 100_000_000_000_000);
    let digits: Vec<u32> = body.chars().map(|c| c.to_digit(10).unwrap()).collect();
    let mut sum = 0;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = *d;
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// A mod-97-valid GB IBAN made from `n`.
fn iban(n: u64) -> String {
    let bban = format!("WEST{:014}", n * 104_729 % 100_000_000_000_000);
    let rearranged: String = format!("{bban}GB00")
        .chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                (c as u32 - 'A' as u32 + 10).to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    let rem = rearranged
        .bytes()
        .fold(0u64, |r, b| (r * 10 + (b - b'0') as u64) % 97);
    format!("GB{:02}{bban}", 98 - rem)
}

struct Planted {
    secrets: BTreeSet<String>,
    lines: Vec<String>,
    text_lines: Vec<String>,
}

/// Records with one planted secret of each kind per record, in every kind of place.
fn corpus(n: u64) -> Planted {
    let mut secrets = BTreeSet::new();
    let mut lines = Vec::new();
    let mut text_lines = Vec::new();
    for i in 0..n {
        let c = card(i);
        let spaced = format!("{} {} {} {}", &c[0..4], &c[4..8], &c[8..12], &c[12..16]);
        let email = format!("person{i}@corp{}.example.com", i % 7);
        let ssn = format!("{:03}-{:02}-{:04}", 100 + i % 500, 1 + i % 98, 1000 + i);
        let ib = iban(i);
        let aws = format!("AKIA{:016}", i * 31 + 7).replace('0', "Q");
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOi{i:04}In0.c2lnbmF0dXJl{i}");
        let pem_body = format!("MIIEpAIBAAKCAQEA{i:06}secretbody");
        let pem =
            format!("-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----");
        let bearer = format!("tok{i}ZXhhbXBsZQ");
        let pw = format!("pw{i}Secr3t");
        let ip4 = format!("172.{}.{}.{}", 16 + i % 16, i % 250, 10 + i % 240);
        let ip6 = format!("2001:db8:{:x}::{:x}", i + 1, i * 3 + 1);
        let phone = format!("+4479{:08}", 10_000_000 + i);
        let user = format!("user{i}@people.example.org");
        for s in [
            &c, &email, &ssn, &ib, &aws, &jwt, &pem_body, &bearer, &pw, &ip4, &ip6, &phone, &user,
        ] {
            secrets.insert(s.clone());
        }
        let inner_json =
            serde_json::json!({"card": spaced, "note": format!("mail {email}")}).to_string();
        let rec = serde_json::json!({
            "id": i,
            "user_email": user,
            "payment": {"number": c.parse::<u64>().unwrap(), "iban": ib, "holder": {"ssn": ssn}},
            "lines": [
                {"masked": true, "input": {"secret": format!("unlisted {i}")}, "output": "whatever"},
                {"masked": false, "input": {"headers": [format!("Authorization: Bearer {bearer}"), format!("db=postgres://app:{pw}@db.internal:5432/x")]}, "output": inner_json}
            ],
            "net": [ip4, ip6],
            "free_text": format!("call {phone} or use key {aws} and token {jwt}"),
            "key_material": pem,
        });
        lines.push(rec.to_string());
        text_lines.push(format!(
            "{i} plain log: card {c} ssn {ssn} from {ip4} mail {email}"
        ));
    }
    Planted {
        secrets,
        lines,
        text_lines,
    }
}

fn all_output(lf: &Lf) -> String {
    walk(&lf.path("archive"))
        .iter()
        .map(|p| String::from_utf8(decompress(p)).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn planted_secrets_never_reach_the_archive() {
    let lf = Lf::new(&config(""));
    let c = corpus(300);
    std::fs::write(lf.path("logs/jobs.log"), c.lines.join("\n") + "\n").unwrap();
    std::fs::write(lf.path("logs/plain.txt"), c.text_lines.join("\n") + "\n").unwrap();
    run_once_with_key(&lf, KEY);
    let out = all_output(&lf);
    let recs = archive_records(&lf.path("archive"));
    assert_eq!(recs.len(), 600);
    let mut leaks: Vec<&String> = c
        .secrets
        .iter()
        .filter(|s| out.contains(s.as_str()))
        .collect();
    // Cards must not survive in any of their written forms.
    for i in 0..300 {
        let cd = card(i);
        if out.contains(&cd)
            || out.contains(&format!(
                "{} {} {} {}",
                &cd[0..4],
                &cd[4..8],
                &cd[8..12],
                &cd[12..16]
            ))
        {
            leaks.push(c.secrets.get(&cd).unwrap());
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks, e.g. {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(5)]
    );
    // The flagged step is replaced whole, the user's e-mail is a stable pseudonym.
    let r = recs.iter().find(|r| r["id"] == 5).unwrap();
    assert_eq!(
        r["lines"][0]["input"],
        serde_json::json!({"data": "masked"})
    );
    assert_eq!(
        r["lines"][0]["output"],
        serde_json::json!({"data": "masked"})
    );
    assert_eq!(r["user_email"].as_str().unwrap().len(), 64);
    assert!(r["free_text"]
        .as_str()
        .unwrap()
        .contains("[REDACTED:aws_access_key]"));
    assert!(r["key_material"]
        .as_str()
        .unwrap()
        .starts_with("[REDACTED:private_key]"));
}

#[test]
fn look_alikes_pass_through_byte_for_byte() {
    let lf = Lf::new(&config("").replace(", \"ipv4\", \"ipv6\", \"phone\"", ""));
    let mut lines = Vec::new();
    for i in 0..200u64 {
        let not_luhn = {
            let c = card(i);
            let last = c.as_bytes()[15] - b'0';
            format!("{}{}", &c[..15], (last + 1) % 10)
        };
        lines.push(
            serde_json::json!({
                "ts": format!("2026-11-23T10:{:02}:{:02}.{:03}Z", i % 60, i % 60, i),
                "uuid": format!("550e8400-e29b-41d4-a716-{:012x}", i * 7919),
                "order": format!("ORD-{}", 100_000_000 + i),
                "job_id": format!("job-{}", 5_000_000_000u64 + i),
                "long_number": not_luhn.parse::<u64>().unwrap(),
                "not_card_text": format!("ref {not_luhn}"),
                "nine": 100_000_000 + i,
                "version": format!("v{}.{}.{}", i % 5, i % 13, i),
                "amount": format!("{}.{:02} EUR", i * 13, i % 100),
                "sha": format!("{:064x}", i as u128 * 0x9e3779b97f4a7c15u128),
                "build": format!("1.2.{}.{}-rc1", i % 256, (i * 7) % 256),
                "duration_ms": i * 1000 + 17,
            })
            .to_string(),
        );
    }
    let text = lines.join("\n") + "\n";
    std::fs::write(lf.path("logs/clean.log"), &text).unwrap();
    run_once_with_key(&lf, KEY);
    let out = all_output(&lf);
    let got: BTreeSet<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let want: BTreeSet<&str> = text.lines().collect();
    let changed: Vec<_> = want.difference(&got).take(3).collect();
    assert!(changed.is_empty(), "altered: {changed:?}");
}

#[test]
fn pseudonyms_are_stable_across_runs_and_change_with_the_key() {
    let lf = Lf::new(&config("record_id = \"_id\""));
    std::fs::write(
        lf.path("logs/a.log"),
        "{\"user_email\":\"alice@example.com\",\"n\":1}\n",
    )
    .unwrap();
    run_once_with_key(&lf, KEY);
    std::fs::write(
        lf.path("logs/b.log"),
        "{\"context\":{\"user_email\":\"alice@example.com\"},\"n\":2}\n",
    )
    .unwrap();
    run_once_with_key(&lf, KEY);
    let recs = archive_records(&lf.path("archive"));
    let a = recs.iter().find(|r| r["n"] == 1).unwrap()["user_email"].clone();
    let b = recs.iter().find(|r| r["n"] == 2).unwrap()["context"]["user_email"].clone();
    assert_eq!(a, b, "the same input joins across files and runs");
    std::fs::write(
        lf.path("logs/c.log"),
        "{\"user_email\":\"alice@example.com\",\"n\":3}\n",
    )
    .unwrap();
    run_once_with_key(&lf, "another-key-of-enough-length!!");
    let recs = archive_records(&lf.path("archive"));
    let c = recs.iter().find(|r| r["n"] == 3).unwrap()["user_email"].clone();
    assert_ne!(a, c, "another key, another pseudonym");
}

#[test]
fn keys_are_built_from_masked_values() {
    let lf = Lf::new(&config("").replace(
        "key = \"{source}/{batch_id}.ndjson.gz\"",
        "key = \"{source}/{user_email}/{batch_id}.ndjson.gz\"",
    ));
    std::fs::write(
        lf.path("logs/a.log"),
        "{\"user_email\":\"alice@example.com\"}\n",
    )
    .unwrap();
    run_once_with_key(&lf, KEY);
    let files = lf.files("archive");
    assert_eq!(files.len(), 1);
    assert!(!files[0].contains("alice"), "{files:?}");
}

#[test]
fn profiles_that_cannot_work_are_refused() {
    let cases = [
        ("detectors = [\"credit_card\", \"emali\"]", "unknown detector `emali`; did you mean `email`?"),
        ("detectors = []\n[[masking.bad.rules]]\npattern = \"(unclosed\"", "invalid regex"),
        ("detectors = []\n[[masking.bad.rules]]\npaths = [\"a\"]\naction = \"hmac\"\nkey_env = \"NOPE_UNSET_KEY\"", "key_env NOPE_UNSET_KEY is not set"),
        ("detectors = []\n[[masking.bad.rules]]\npaths = [\"a\"]\naction = \"hmac\"\nkey_env = \"SHORT_KEY\"", "shorter than 16 bytes"),
        ("detectors = []\n[[masking.bad.rules]]\npaths = [\"a\"]\naction = \"scramble\"", "unknown action `scramble`"),
        ("detectors = []\n[[masking.bad.rules]]\npaths = [\"a[x]\"]", "use [*] or an index"),
        ("detectors = []\n[[masking.bad.rules]]\npaths = [\"a\"]\naction = \"replace\"", "`replace` needs a `value`"),
        ("detectors = [\"email\"]\n[masking.bad.detector.iban]\naction = \"partial\"", "not in this profile's `detectors` list"),
    ];
    for (body, expect) in cases {
        let lf = Lf::new(&format!(
            "[sources.s]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"d\"]\nmasking = \"bad\"\n[sinks.d]\ntype = \"directory\"\npath = \"{{dir}}/a\"\n[masking.bad]\n{body}\n"
        ));
        for cmd in ["validate", "run"] {
            let out = Command::new(BIN)
                .args([cmd, "--config"])
                .arg(&lf.cfg)
                .env("SHORT_KEY", "tiny-key")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{cmd} with {body}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expect), "{cmd} with {body}: {err}");
            assert!(
                !err.contains("short\""),
                "the key's value is never printed: {err}"
            );
        }
    }
}

#[test]
fn mask_command_prints_masked_records_and_the_diff() {
    let lf = Lf::new(&config(""));
    let input = lf.path("in.ndjson");
    std::fs::write(
        &input,
        "{\"lines\":[{\"masked\":true,\"input\":\"x\"}],\"note\":\"mail bob@example.com\",\"n\":4111111111111111}\n{\"ok\":true}\nplain 10.1.2.3\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["mask", "--diff", "--config"])
        .arg(&lf.cfg)
        .arg(&input)
        .env("LOGFERRY_TEST_HMAC_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let expect = "@@ record 1
   lines[*].input  <- masked_steps
   note  <- email
   n  <- credit_card
{\"lines\":[{\"masked\":true,\"input\":{\"data\":\"masked\"}}],\"note\":\"mail [REDACTED:email]\",\"n\":\"[REDACTED:credit_card]\"}
{\"ok\":true}
{\"message\":\"[REDACTED:unparsable]\",\"_parse_error\":\"not a JSON object\"}
";
    assert_eq!(text, expect);
}

#[test]
fn counters_count_what_was_masked_by_kind() {
    let lf = Lf::new(&config(""));
    let c = corpus(20);
    std::fs::write(lf.path("logs/jobs.log"), c.lines.join("\n") + "\n").unwrap();
    let run = lf.spawn_env(&[("LOGFERRY_TEST_HMAC_KEY", KEY)]);
    wait_until(Duration::from_secs(20), "20 records masked", || {
        run.metric("logferry_masked_total", "kind=\"masked_steps\"") >= 40.0
    });
    assert_eq!(
        run.metric(
            "logferry_masked_total",
            "profile=\"pii\",kind=\"aws_access_key\""
        ),
        20.0
    );
    assert_eq!(
        run.metric(
            "logferry_masked_total",
            "profile=\"pii\",kind=\"user_email\""
        ),
        20.0
    );
    assert_eq!(
        run.metric("logferry_masked_total", "profile=\"pii\",kind=\"iban\""),
        20.0
    );
    assert_eq!(
        run.metric(
            "logferry_masked_total",
            "profile=\"pii\",kind=\"unprocessable\""
        ),
        0.0
    );
    assert!(run.term(Duration::from_secs(10)).success());
}
