//! Every sink's page under docs/sinks/ holds a complete example, and each validates.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const TYPES: &[&str] = &[
    "directory",
    "s3",
    "azure_blob",
    "azure_monitor",
    "http",
    "otlp",
];

/// The ```toml blocks of a Markdown page.
fn toml_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => cur = Some(String::new()),
            (Some(b), "```") => {
                out.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_sink_page_has_an_example_that_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    for f in ["siem-token", "siem-hmac", "azure-identity-token"] {
        std::fs::write(
            secrets.path().join(f),
            "a-secret-of-sixteen-bytes-or-more\n",
        )
        .unwrap();
    }
    for t in TYPES {
        let page = format!("docs/sinks/{t}.md");
        assert!(readme.contains(&page), "README does not link {page}");
        let md = std::fs::read_to_string(root.join(&page)).unwrap();
        let blocks = toml_blocks(&md);
        assert!(!blocks.is_empty(), "{page} has no example");
        for b in blocks {
            assert!(
                b.contains(&format!("type = \"{t}\"")),
                "{page}: the example is of another sink"
            );
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("example.toml");
            std::fs::write(&cfg, &b).unwrap();
            let out = Command::new(BIN)
                .args(["validate", "--config"])
                .arg(&cfg)
                .env("SECRETS_DIR", secrets.path())
                .env("LOG_DIR", dir.path())
                .env("ARCHIVE_DIR", dir.path().join("archive"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{page}:\n{b}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
