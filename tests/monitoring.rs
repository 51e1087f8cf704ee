//! The monitoring kit: the alert rules pass `promtool check rules`, and Debian's Prometheus,
//! scraping a running logferry, finds every metric the dashboard's panels and the rules name.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Debian's tools, wherever the package put them.
fn prom_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: scripts/test.sh installs Debian's prometheus package");
}

/// Every `logferry_*` metric name an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("logferry_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn get(port: u16, target: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Prometheus's instant query result for `q` (the `data.result` array).
fn query(port: u16, q: &str) -> Vec<serde_json::Value> {
    let body = get(
        port,
        &format!("/api/v1/query?query={}", logferry_sink::percent_encode(q)),
    );
    // Chunked or not: the JSON object is between the first `{` and the last `}`.
    let (a, b) = (body.find('{').unwrap_or(0), body.rfind('}').unwrap_or(0));
    let v: serde_json::Value = serde_json::from_str(&body[a..=b]).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let out = Command::new(prom_tool("promtool"))
        .args(["check", "rules"])
        .arg(repo("deploy/prometheus/alerts.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_scraping_logferry_finds_every_metric_of_the_dashboard_and_the_rules() {
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
masking = "pii"
[masking.pii]
detectors = ["email"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
batch = { max_age = "100ms" }
"#,
    );
    write_lines(&lf.path("logs/a.log"), 0, 100);
    let run = lf.spawn();
    wait_until(Duration::from_secs(20), "a delivery", || {
        run.metric("logferry_records_sent_total", "") >= 100.0
    });

    // Every name the kit uses is exported.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/logferry.json")).unwrap(),
    )
    .unwrap();
    let mut panels: Vec<(String, Vec<String>)> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let exprs: Vec<String> = p["targets"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| metric_names(t["expr"].as_str().unwrap()))
            .collect();
        assert!(!exprs.is_empty(), "panel {} names no metric", p["title"]);
        panels.push((p["title"].to_string(), exprs));
    }
    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yaml")).unwrap();
    let rule_names: Vec<String> = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
        .flat_map(metric_names)
        .collect();
    assert!(rule_names.len() >= 8, "{rule_names:?}");
    let exported = get(lf.port, "/metrics");
    for name in panels.iter().flat_map(|(_, n)| n).chain(&rule_names) {
        assert!(
            exported
                .lines()
                .any(|l| l.starts_with(name.as_str()) && l[name.len()..].starts_with(['{', ' '])),
            "{name} is not exported:\n{exported}"
        );
    }

    // Debian's Prometheus scrapes it with the rules loaded.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: logferry\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            repo("deploy/prometheus/alerts.yaml").display(),
            lf.port
        ),
    )
    .unwrap();
    let _prom = Prometheus(
        Command::new(prom_tool("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    wait_until(
        Duration::from_secs(60),
        "Prometheus scraping logferry",
        || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && query(port, "up{job=\"logferry\"}")
                    .first()
                    .is_some_and(|r| r["value"][1] == "1")
        },
    );
    for (title, names) in &panels {
        for n in names {
            wait_until(
                Duration::from_secs(20),
                &format!("{n} of panel {title}"),
                || !query(port, n).is_empty(),
            );
        }
    }
    wait_until(Duration::from_secs(30), "the rules evaluated", || {
        let body = get(port, "/api/v1/rules");
        body.contains("\"name\":\"logferry\"") && body.matches("\"health\":\"ok\"").count() >= 7
    });
    run.term(Duration::from_secs(10));
}
