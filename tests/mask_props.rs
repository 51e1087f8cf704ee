//! Property test of the masker: a random secret of every kind, planted at a random place of a
//! random record (a string, a number, an object key, nested in arrays, behind a JSON escape, in a
//! step flagged masked), never survives; the output is always JSON; the masker never panics.

use proptest::prelude::*;
use std::sync::Arc;

const PROFILE: &str = r#"
[sources.s]
include = ["/nonexistent/*.log"]
sinks = ["d"]
masking = "pii"
[sinks.d]
type = "directory"
path = "/nonexistent/archive"
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
"#;

fn profile() -> Arc<logferry::mask::Profile> {
    let cfg = logferry::config::load_str(
        std::path::Path::new("/nonexistent/c.toml"),
        PROFILE,
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    cfg.masking["pii"].clone()
}

fn luhn_complete(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = (d - b'0') as u32;
            if i % 2 == 0 {
                let v = v * 2;
                if v > 9 {
                    v - 9
                } else {
                    v
                }
            } else {
                v
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// (prefix, length) of card brands.
const BRANDS: &[(&str, usize)] = &[
    ("4", 16),
    ("4", 13),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("65", 16),
    ("3528", 16),
    ("36", 14),
    ("62", 19),
];

fn card() -> impl Strategy<Value = String> {
    (0..BRANDS.len(), any::<u64>(), any::<u64>()).prop_map(|(b, r1, r2)| {
        let (prefix, len) = BRANDS[b];
        let digits = format!("{r1:020}{r2:020}");
        luhn_complete(&format!("{prefix}{}", &digits[..len - 1 - prefix.len()]))
    })
}

/// A card as text: plain or in groups of four with a separator run.
fn card_text() -> impl Strategy<Value = (String, String)> {
    (card(), 0..4usize, 1..3usize).prop_map(|(c, sep, n)| {
        let s = [" ", "-", ".", ""][sep].repeat(if sep == 3 { 1 } else { n });
        let grouped = if sep == 3 || c.len() != 16 {
            c.clone()
        } else {
            [&c[0..4], &c[4..8], &c[8..12], &c[12..16]].join(&s)
        };
        (grouped, c)
    })
}

#[derive(Debug, Clone)]
enum Secret {
    /// Text planted in a string; `check` is what must not survive.
    Text { text: String, check: String },
    /// A card planted as a JSON number, spelled `text`.
    Number { text: String, check: String },
    /// A value of a step flagged masked (any text at all).
    StepValue(String),
}

fn secret() -> impl Strategy<Value = Secret> {
    let email = (
        "[a-z]{1,10}(\\.[a-z]{1,5})?",
        "[a-z]{2,10}",
        "(com|org|io|example)",
    )
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"));
    let ssn =
        (1u32..665, 1u32..99, 1u32..9999).prop_map(|(a, g, s)| format!("{a:03}-{g:02}-{s:04}"));
    let aws = "[A-Z2-7]{16}".prop_map(|s| format!("AKIA{s}"));
    let jwt = (
        "[A-Za-z0-9_-]{8,20}",
        "[A-Za-z0-9_-]{8,20}",
        "[A-Za-z0-9_-]{8,30}",
    )
        .prop_map(|(a, b, c)| format!("eyJ{a}.{b}.{c}"));
    let text = |s: BoxedStrategy<String>| {
        s.prop_map(|t| Secret::Text {
            check: t.clone(),
            text: t,
        })
    };
    prop_oneof![
        card_text().prop_map(|(text, check)| Secret::Text { text, check }),
        text(email.boxed()),
        text(ssn.boxed()),
        text(aws.boxed()),
        text(jwt.boxed()),
        (card(), 0..4usize).prop_map(|(c, spelling)| {
            let text = match spelling {
                0 => c.clone(),
                1 => format!("-{c}"),
                2 => format!("{c}.0"),
                _ => format!("{}.{}e{}", &c[..1], &c[1..], c.len() - 1),
            };
            Secret::Number { text, check: c }
        }),
        "[ -~]{4,30}".prop_map(Secret::StepValue),
    ]
}

/// Where in the record the secret goes.
#[derive(Debug, Clone, Copy)]
enum Place {
    Value,
    Key,
    NestedArray,
    Escaped,
    Step,
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::Value),
        Just(Place::Key),
        Just(Place::NestedArray),
        Just(Place::Escaped),
        Just(Place::Step),
    ]
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The first ASCII letter or digit of `s` written as a `\u00XX` escape.
fn escape_one(s: &str) -> String {
    let body = json_str(s);
    let inner = &body[1..body.len() - 1];
    match inner
        .char_indices()
        .find(|(_, c)| c.is_ascii_alphanumeric())
    {
        Some((i, c)) => format!(
            "\"{}\\u{:04x}{}\"",
            &inner[..i],
            c as u32,
            &inner[i + c.len_utf8()..]
        ),
        None => body,
    }
}

/// A record with the secret at `place`, between random filler fields.
fn record(
    secret: &Secret,
    place: Place,
    filler: &[(String, String)],
    around: (&str, &str),
) -> String {
    let mut fields: Vec<String> = filler
        .iter()
        .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
        .collect();
    let (pre, post) = around;
    let planted = match (secret, place) {
        (Secret::Number { text, .. }, _) => format!("\"n\":{text}"),
        (Secret::StepValue(v), _) | (Secret::Text { text: v, .. }, Place::Step) => format!(
            "\"lines\":[{{\"masked\":false,\"input\":\"ok\"}},{{\"masked\":true,\"input\":{{\"p\":{}}},\"output\":{}}}]",
            json_str(v),
            json_str(v)
        ),
        (Secret::Text { text, .. }, Place::Value) => {
            format!("\"v\":{}", json_str(&format!("{pre}{text}{post}")))
        }
        (Secret::Text { text, .. }, Place::Key) => {
            format!("\"users\":{{{}:{{\"role\":\"x\"}}}}", json_str(text))
        }
        (Secret::Text { text, .. }, Place::NestedArray) => {
            format!("\"a\":[[1,[{}]],{{\"b\":[true]}}]", json_str(&format!("{pre}{text}{post}")))
        }
        (Secret::Text { text, .. }, Place::Escaped) => format!("\"e\":{}", escape_one(text)),
    };
    let at = filler.len() / 2;
    fields.insert(at, planted);
    format!("{{{}}}", fields.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_planted_secret_never_survives(
        secret in secret(),
        place in place(),
        filler in prop::collection::vec(("[a-z_]{1,12}", "[a-zA-Z ]{0,24}"), 0..6),
        around in (0..4usize, 0..4usize),
    ) {
        let pres = ["", " ", "id: ", "x"];
        let posts = ["", " ", ", ok", "y"];
        let line = record(&secret, place, &filler, (pres[around.0], posts[around.1]));
        let mut m = logferry::mask::Masker::new(profile(), Vec::new());
        let out = if m.mask(line.as_bytes()) { m.output().to_vec() } else { line.clone().into_bytes() };
        let v: serde_json::Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)));
        // The canonical text has no escapes left that could hide the secret.
        let text = v.to_string();
        let check = match &secret {
            Secret::Text { check, .. } | Secret::Number { check, .. } => check.clone(),
            Secret::StepValue(s) => s.clone(),
        };
        prop_assert!(!text.contains(&check), "{check:?} survived in {text} (from {line})");
        if let Secret::StepValue(_) = secret {
            prop_assert_eq!(&v["lines"][1]["input"], &serde_json::json!({"data": "masked"}));
        }
        // Fields without secrets come through as written.
        for (k, _) in &filler {
            if !["v", "e", "a", "n", "lines", "users"].contains(&k.as_str()) {
                prop_assert!(v.get(k).is_some(), "{k} lost from {text}");
            }
        }
    }
}
