use super::*;

fn masker(profile: &str) -> Masker {
    let text = format!(
        "[sources.s]\ninclude = [\"/x/*.log\"]\nsinks = [\"d\"]\nmasking = \"p\"\n[sinks.d]\ntype = \"directory\"\npath = \"/x\"\n[masking.p]\n{profile}"
    );
    let env = |k: &str| (k == "K").then(|| "0123456789abcdef0123456789abcdef".to_string());
    let cfg = crate::config::load_str(std::path::Path::new("/x/c.toml"), &text, &env)
        .unwrap_or_else(|e| panic!("{e}"));
    Masker::new(cfg.masking["p"].clone(), Vec::new())
}

fn run(m: &mut Masker, rec: &str) -> String {
    if m.mask(rec.as_bytes()) {
        String::from_utf8(m.output().to_vec()).unwrap()
    } else {
        rec.to_string()
    }
}

#[test]
fn the_masker_says_whether_a_change_reached_a_watched_field() {
    let mut m = masker(
        r#"detectors = ["email"]
[[masking.p.rules]]
name = "steps"
each = "lines[*]"
paths = ["input"]
action = "redact"
[[masking.p.rules]]
name = "acct"
paths = ["meta.account"]
action = "redact"
"#,
    );
    m.watch_fields(crate::fields::Fields::new(
        &[
            "account_id".into(),
            "user.email".into(),
            "meta.account.id".into(),
        ],
        None,
    ));
    let cases = [
        // A step's input and an email elsewhere: the watched fields are as decoded.
        (
            r#"{"account_id":"a1","lines":[{"input":"x"}],"note":"bob@example.com"}"#,
            false,
        ),
        // The detector masks a watched value.
        (
            r#"{"account_id":"a1","user":{"email":"bob@example.com"}}"#,
            true,
        ),
        // A rule on an object above a watched path.
        (r#"{"account_id":"a1","meta":{"account":{"id":"7"}}}"#, true),
        // Nothing changed at all.
        (r#"{"account_id":"a1"}"#, false),
        // A key that holds a secret is replaced: paths may have changed.
        (r#"{"account_id":"a1","bob@example.com":1}"#, true),
    ];
    for (rec, want) in cases {
        m.mask(rec.as_bytes());
        assert_eq!(m.key_fields_changed(), want, "{rec}");
    }
}

#[test]
fn rules_run_in_order_then_detectors() {
    let mut m = masker(
        r#"detectors = ["email"]
[[masking.p.rules]]
name = "first"
paths = ["a"]
action = "replace"
value = "secret-2 bob@example.com"
[[masking.p.rules]]
name = "second"
paths = ["a"]
pattern = "secret"
action = "redact"
"#,
    );
    assert_eq!(
        run(&mut m, r#"{"a":"x","b":1}"#),
        r#"{"a":"[REDACTED:second]-2 [REDACTED:email]","b":1}"#
    );
    assert_eq!(m.counts(), &[1, 1, 1, 0, 0]);
}

#[test]
fn a_pattern_rule_before_a_field_rule_keeps_its_place() {
    let mut m = masker(
        r#"detectors = []
[[masking.p.rules]]
name = "first"
pattern = "secret"
[[masking.p.rules]]
name = "second"
paths = ["a"]
when = { path = "a", matches = "REDACTED:first" }
action = "replace"
value = "seen after first"
[[masking.p.rules]]
name = "third"
pattern = "seen"
action = "replace"
value = "SEEN"
"#,
    );
    assert_eq!(
        run(&mut m, r#"{"a":"my secret","b":["secret"]}"#),
        r#"{"a":"SEEN after first","b":["[REDACTED:first]"]}"#
    );
    assert_eq!(m.counts(), &[2, 1, 1, 0, 0]);
}

#[test]
fn a_record_that_cannot_be_processed_is_replaced_whole() {
    let mut m = masker("detectors = [\"email\"]\n");
    let out = run(&mut m, r#"{"a":"bob@example.com""#);
    assert!(
        out.starts_with(r#"{"message":"[REDACTED:unprocessable]","_masking_error":"#),
        "{out}"
    );
    assert!(!out.contains("bob"));
    assert_eq!(*m.counts().last().unwrap(), 1);
}

#[test]
fn unchanged_records_are_left_as_they_came() {
    let mut m = masker("detectors = [\"email\", \"credit_card\"]\n");
    assert!(!m.mask(br#"{"id":"ORD-1","n":12345,"t":"2026-11-23T10:00:00Z"}"#));
}

#[test]
fn escapes_cannot_hide_a_secret_or_a_rule_key() {
    let mut m = masker(
        r#"detectors = ["email"]
[[masking.p.rules]]
paths = ["pin"]
action = "remove"
"#,
    );
    let out = run(
        &mut m,
        r#"{"note":"bob\u0040example.com","p\u0069n":"1234","k":1}"#,
    );
    assert_eq!(out, r#"{"note":"[REDACTED:email]","k":1}"#);
}

#[test]
fn keys_that_hold_secrets_are_replaced_and_collisions_numbered() {
    let mut m = masker("detectors = [\"email\", \"credit_card\"]\n");
    assert_eq!(
        run(
            &mut m,
            r#"{"4111111111111111":"x","users":{"alice@example.com":{"n":1},"bob@example.com":2},"ok":1}"#
        ),
        r#"{"[REDACTED:credit_card]":"x","users":{"[REDACTED:email]":{"n":1},"[REDACTED:email]#2":2},"ok":1}"#
    );
}

#[test]
fn hmac_keys_keep_joins() {
    let mut m = masker(
        "detectors = [\"email\"]\n[masking.p.detector.email]\naction = \"hmac\"\nkey_env = \"K\"\n",
    );
    let a = run(&mut m, r#"{"users":{"alice@example.com":1}}"#);
    let b = run(&mut m, r#"{"who":"alice@example.com"}"#);
    let pseudonym = b.split('"').nth(3).unwrap().to_string();
    assert_eq!(pseudonym.len(), 64, "{b}");
    assert!(a.contains(&pseudonym), "{a} / {b}");
    assert!(!a.contains("alice"));
}

#[test]
fn card_numbers_in_every_json_spelling_are_masked() {
    let mut m = masker("detectors = [\"credit_card\"]\n");
    for n in [
        "4111111111111111.0",
        "-4111111111111111",
        "4.111111111111111e15",
        "4111111111111111e0",
    ] {
        let out = run(&mut m, &format!(r#"{{"account_id":{n},"amount":12.5}}"#));
        assert_eq!(
            out, r#"{"account_id":"[REDACTED:credit_card]","amount":12.5}"#,
            "{n}"
        );
    }
}

#[test]
fn a_lone_surrogate_is_replaced_and_the_rest_still_masked() {
    let mut m = masker("detectors = [\"email\"]\n");
    let out = run(
        &mut m,
        r#"{"a":"bad\ud800","b":"bob@example.com","c":"ok"}"#,
    );
    assert_eq!(
        out,
        "{\"a\":\"bad\u{fffd}\",\"b\":\"[REDACTED:email]\",\"c\":\"ok\"}"
    );
    let n = m.counts().len();
    assert_eq!(m.counts()[n - 2], 1, "invalid_escape counted");
    assert_eq!(m.counts()[n - 1], 0, "not unprocessable");
}
