use super::*;

fn env(k: &str) -> Option<String> {
    (k == "ARCHIVE").then(|| "/tmp/arch".to_string())
}

fn load(text: &str) -> Result<Config, Problems> {
    load_str(Path::new("/etc/lf/c.toml"), text, &env)
}

const GOOD: &str = r#"
data_dir = "./data"
[sources.jobs]
include = ["./logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "${ARCHIVE}"
batch = { max_bytes = "1MiB", max_age = "2s" }
"#;

#[test]
fn good_config_with_defaults_and_expansion() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.data_dir, Path::new("/etc/lf/data"));
    assert_eq!(c.sources[0].include, ["/etc/lf/logs/*.log"]);
    assert_eq!(c.sources[0].max_line_bytes, 1 << 20);
    let s = &c.sinks[0];
    assert!(matches!(&s.kind, SinkKind::Directory { path } if path == Path::new("/tmp/arch")));
    assert_eq!(s.max_bytes, 1 << 20);
    assert_eq!(s.max_age, Duration::from_secs(2));
    assert_eq!(s.max_records, 50_000);
    assert_eq!(s.key.as_str(), DEFAULT_KEY);
}

#[test]
fn every_unknown_key_is_reported_with_line_and_suggestion() {
    let text = r#"
[sources.jobs]
includ = ["a"]
include = ["a"]
sinks = ["archive"]
formatt = "json"
[sinks.archive]
type = "directory"
path = "/x"
bacth = { max_bytes = "1MiB" }
"#;
    let e = load(text).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains(
            "/etc/lf/c.toml:3: sources.jobs.includ: unknown key `includ`; did you mean `include`?"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "/etc/lf/c.toml:6: sources.jobs.formatt: unknown key `formatt`; did you mean `format`?"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "/etc/lf/c.toml:10: sinks.archive.bacth: unknown key `bacth`; did you mean `batch`?"
        ),
        "{shown}"
    );
    assert_eq!(e.list.len(), 3, "{shown}");
}

#[test]
fn dangling_references_and_bad_values_are_all_listed() {
    let text = r#"
[sources.jobs]
include = ["a"]
sinks = ["archiv"]
masking = "pii"
[sinks.archive]
type = "directory"
path = "${UNSET_VAR}"
batch = { max_bytes = "8 parsecs", max_age = "soon" }
"#;
    let e = load(text).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains(":4: sources.jobs.sinks[0]: no sink named \"archiv\"")
            || shown.contains("sinks.archive.path"),
        "{shown}"
    );
    assert!(
        shown.contains(":8: sinks.archive.path: environment variable UNSET_VAR is not set"),
        "{shown}"
    );
    assert!(
        shown.contains("sinks.archive.batch.max_bytes: invalid size"),
        "{shown}"
    );
}

#[test]
fn a_missing_sink_is_named_with_a_suggestion() {
    let text = GOOD.replace("sinks = [\"archive\"]", "sinks = [\"archiv\"]");
    let shown = load(&text).unwrap_err().to_string();
    assert!(
        shown.contains(
            ":5: sources.jobs.sinks[0]: no sink named \"archiv\"; did you mean \"archive\"?"
        ),
        "{shown}"
    );
}

#[test]
fn missing_masking_profile_and_unknown_sink_type() {
    let text = GOOD
        .replace("type = \"directory\"", "type = \"ftp\"")
        .replace(
            "sinks = [\"archive\"]",
            "sinks = [\"archive\"]\nmasking = \"pii\"",
        );
    let shown = load(&text).unwrap_err().to_string();
    assert!(shown.contains("unknown sink type \"ftp\""), "{shown}");
}

#[test]
fn key_template_without_batch_id_is_refused() {
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nkey = \"{source}/x.gz\"",
    );
    let shown = load(&text).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.archive.key: the key must contain `{batch_id}`"),
        "{shown}"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let e = load("[sources.jobs]\ninclude = [\"a\"\nsinks = 1\n").unwrap_err();
    assert_eq!(e.list.len(), 1);
    assert!(e.list[0].line.is_some());
    assert!(e.list[0].message.starts_with("not valid TOML"));
}

#[test]
fn envelope_needs_records_placeholder() {
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nenvelope = \"{\\\"x\\\":1}\"",
    );
    let shown = load(&text).unwrap_err().to_string();
    assert!(
        shown.contains("must contain `{{records}}` exactly once"),
        "{shown}"
    );
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nenvelope = \"{\\\"logEntries\\\":{{records}}}\"",
    );
    let c = load(&text).unwrap();
    assert_eq!(c.sinks[0].envelope.as_ref().unwrap().0, "{\"logEntries\":");
    assert_eq!(c.sinks[0].encoding, Encoding::JsonArray);
}
