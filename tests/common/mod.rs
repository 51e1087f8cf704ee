//! Harness for the integration tests: runs the real `logferry` binary on a temp directory and
//! reads back what it archived. Waiting is always on a condition with a deadline.
#![allow(dead_code)]

pub mod integrity;
pub mod keyvault;
pub mod monitor;
pub mod otlp;
pub mod receiver;
pub mod tls;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_logferry");

pub struct Lf {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub port: u16,
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Panics with its stderr unless the command succeeded.
pub fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test tools' Python (with `cryptography` and boto3), or the system's.
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Writes a key file (a KEK, a signing key) with mode 0600, as logferry requires of key files
/// by default (`std::fs::write` leaves 0644 under the usual umask 022). Replaces the contents
/// of an existing file and tightens its mode.
pub fn write_key(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Lf {
    /// `body` is the config without `data_dir` and `[api]`; `{dir}` expands to the temp dir.
    pub fn new(body: &str) -> Lf {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display().to_string();
        let body = body.replace("{dir}", &d);
        // Top-level keys of the body stay at the top; an [api] table of its own gets the
        // listen address added.
        let split = body
            .find("\n[")
            .map(|i| i + 1)
            .unwrap_or(if body.starts_with('[') { 0 } else { body.len() });
        let (top, tables) = body.split_at(split);
        let listen = format!("listen = \"127.0.0.1:{port}\"\n");
        let tables = if let Some(rest) = tables.strip_prefix("[api]\n") {
            format!("[api]\n{listen}{rest}")
        } else {
            format!("[api]\n{listen}{tables}")
        };
        let text = format!("data_dir = \"{d}/data\"\n{top}\n{tables}");
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let cfg = dir.path().join("logferry.toml");
        std::fs::write(&cfg, text).unwrap();
        Lf { dir, cfg, port }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn run_once(&self) -> Output {
        self.run_once_env(&[])
    }

    fn once_output(&self, env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .args(["run", "--once", "--config"])
            .arg(&self.cfg)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .output()
            .expect("run logferry")
    }

    pub fn run_once_env(&self, env: &[(&str, &str)]) -> Output {
        let out = self.once_output(env);
        assert!(
            out.status.success(),
            "logferry run --once failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `run --once` that cannot deliver or read everything: it must exit 1 and say so.
    pub fn run_once_incomplete(&self) -> Output {
        self.run_once_incomplete_env(&[])
    }

    pub fn run_once_incomplete_env(&self, env: &[(&str, &str)]) -> Output {
        let out = self.once_output(env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("run --once did not finish"), "{err}");
        out
    }

    /// `logferry validate --check-sinks`: (exit code, stdout).
    pub fn check_sinks(&self, env: &[(&str, &str)]) -> (Option<i32>, String) {
        let out = Command::new(BIN)
            .args(["validate", "--check-sinks", "--config"])
            .arg(&self.cfg)
            .envs(env.iter().copied())
            .output()
            .expect("run logferry validate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn spawn(&self) -> Running {
        self.spawn_env(&[])
    }

    pub fn spawn_env(&self, env: &[(&str, &str)]) -> Running {
        self.spawn_wrapped(&[], env)
    }

    /// As [`Lf::spawn_env`], the binary started through `wrapper` (a program and its
    /// arguments, e.g. `setpriv` to run as another user) when it is not empty.
    pub fn spawn_wrapped(&self, wrapper: &[&str], env: &[(&str, &str)]) -> Running {
        let log = self.path(&format!(
            "logferry-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.cfg)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn logferry");
        let mut r = Running {
            child,
            port: self.port,
            log,
        };
        let start = Instant::now();
        while !r.ready() {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("logferry exited early ({st}):\n{}", r.logs());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "logferry not ready after 20s:\n{}",
                r.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// Every record in every archived object under `rel`, decompressed and parsed.
    pub fn archive(&self, rel: &str) -> Vec<serde_json::Value> {
        archive_records(&self.path(rel))
    }

    /// The archive once logferry has stopped: no object may be half written.
    pub fn final_archive(&self, rel: &str) -> Vec<serde_json::Value> {
        let temp: Vec<PathBuf> = walk(&self.path(rel))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".logferry-tmp")
            })
            .collect();
        assert!(temp.is_empty(), "half-written objects left: {temp:?}");
        self.archive(rel)
    }

    /// The reason notes of the batches dead-lettered for `sink`; panics when there is none.
    pub fn dead_letter_note(&self, sink: &str) -> serde_json::Value {
        let dir = format!("data/dead-letter/{sink}");
        let name = self
            .files(&dir)
            .into_iter()
            .find(|f| f.ends_with(".reason.json"))
            .unwrap_or_else(|| panic!("nothing was dead-lettered for {sink}"));
        serde_json::from_slice(&std::fs::read(self.path(&format!("{dir}/{name}"))).unwrap())
            .unwrap()
    }

    /// Files under `rel`, relative names, sorted.
    pub fn files(&self, rel: &str) -> Vec<String> {
        let root = self.path(rel);
        let mut out: Vec<String> = walk(&root)
            .into_iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        out.sort();
        out
    }
}

pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

pub fn decompress(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    if name.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(&raw[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
    } else {
        out = raw;
    }
    out
}

pub fn archive_records(root: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in walk(root) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".logferry-tmp") || name.ends_with(".meta.json") {
            // Being written right now (it becomes an object by rename), or an object's metadata.
            continue;
        }
        let data = decompress(&p);
        if data.first() == Some(&b'[') {
            let v: Vec<serde_json::Value> = serde_json::from_slice(&data).unwrap();
            out.extend(v);
        } else {
            for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(serde_json::from_slice(line).unwrap_or_else(|e| {
                    panic!(
                        "{}: bad record {e}: {}",
                        p.display(),
                        String::from_utf8_lossy(line)
                    )
                }));
            }
        }
    }
    out
}

/// How often each value of `field` occurs.
/// Every record in the Parquet files under `root`, read by pyarrow (scripts/read_parquet.py)
/// from each row's `record` column.
pub fn parquet_records(root: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_parquet.py"))
        .arg(root)
        .output()
        .expect("run read_parquet.py");
    succeeded(&out);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    got["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["rows"].as_array().unwrap().clone())
        .map(|r| serde_json::from_str(r["record"].as_str().unwrap()).unwrap())
        .collect()
}

pub fn counts(records: &[serde_json::Value], field: &str) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for r in records {
        if let Some(v) = r[field].as_u64() {
            *m.entry(v).or_insert(0) += 1;
        }
    }
    m
}

/// Asserts every id in `0..n` is present; returns how many extra copies there were.
pub fn assert_all_present(records: &[serde_json::Value], n: u64) -> usize {
    let c = counts(records, "id");
    let missing: Vec<u64> = (0..n).filter(|i| !c.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {n} records lost, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    c.values().map(|v| v - 1).sum()
}

/// Writes `n` JSON lines with ids `start..start+n` (about 120 bytes each).
pub fn write_lines(path: &Path, start: u64, n: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for i in start..start + n {
        buf.push_str(&format!(
            "{{\"id\":{i},\"account_id\":\"acct{}\",\"ts\":\"2026-11-23T10:00:00Z\",\"msg\":\"job step finished\"}}\n",
            i % 3
        ));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

/// A writer appending `per_tick` lines every 10 ms to a log until `finish`: the live input of
/// the `kill -9` loops.
pub struct Appender {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Appender {
    pub fn start(log: &Path, per_tick: u64, line: fn(u64) -> String) -> Appender {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, w) = (stop.clone(), written.clone());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let start = w.load(Ordering::Relaxed);
                let text: String = (start..start + per_tick).map(line).collect();
                f.write_all(text.as_bytes()).unwrap();
                w.store(start + per_tick, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Appender {
            stop,
            written,
            thread,
        }
    }

    /// Stops the writer; how many lines it wrote.
    pub fn finish(self) -> u64 {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.written.load(Ordering::Relaxed)
    }
}

pub struct Running {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Running {
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    pub fn ready(&self) -> bool {
        matches!(self.get("/readyz"), Some((200, _)))
    }

    /// Sum of a metric's samples whose label set contains `labels` (e.g. `source="jobs"`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let Some((200, body)) = self.get("/metrics") else {
            return -1.0;
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                (n == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGTERM, then waits for the exit (at most `timeout`).
    pub fn term(mut self, timeout: Duration) -> ExitStatus {
        self.signal("-TERM");
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "logferry did not exit within {timeout:?} of SIGTERM\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn logrotate() -> PathBuf {
    for p in [
        "/usr/sbin/logrotate",
        "/sbin/logrotate",
        "/usr/bin/logrotate",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("logrotate is not installed: run scripts/test.sh once (it installs Debian's logrotate)");
}

/// Where scripts/test.sh installs the Python test servers (moto).
pub fn tool(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools/venv/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is not installed: run scripts/test.sh once (it installs moto[server] from PyPI)",
        p.display()
    );
    p
}

/// A moto S3 server on a free loopback port, stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_env(&[])
    }

    /// With `INITIAL_NO_AUTH_ACTION_COUNT`, moto checks credentials and IAM policies.
    pub fn start_env(env: &[(&str, &str)]) -> Moto {
        Self::start_with(env, None)
    }

    /// Over HTTPS with a certificate from `ca` (the sink needs `tls.ca_file`).
    pub fn start_https(ca: &tls::TestCa) -> Moto {
        Self::start_with(&[], Some(ca))
    }

    fn start_with(env: &[(&str, &str)], ca: Option<&tls::TestCa>) -> Moto {
        let port = free_port();
        let mut cmd = Command::new(tool("moto_server"));
        cmd.envs(env.iter().copied())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(ca) = ca {
            let cert = ca.server("moto", &["127.0.0.1", "localhost"]);
            cmd.arg("--ssl-cert")
                .arg(&cert.cert_pem)
                .arg("--ssl-key")
                .arg(&cert.key_pem);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let scheme = if ca.is_some() { "https" } else { "http" };
        let m = Moto {
            child,
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
        };
        wait_until(Duration::from_secs(30), "moto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        m
    }

    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("moto endpoint has a port")
    }

    /// Environment for logferry: static test credentials through the default chain.
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }

    /// A runtime for the test's own S3 calls and a client on it, with `bucket` created
    /// (with Object Lock enabled when `lock`).
    pub fn bucket(
        &self,
        bucket: &str,
        lock: bool,
    ) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = rt.block_on(self.client());
        let mut req = c.create_bucket().bucket(bucket);
        if lock {
            req = req.object_lock_enabled_for_bucket(true);
        }
        rt.block_on(req.send()).unwrap();
        (rt, c)
    }

    pub async fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP proxy in front of a test server that answers the first `faults` requests matching
/// `method` itself with `status`, a body and headers, and forwards the rest. One request per
/// connection (it answers `Connection: close`). Records when each matching request arrived.
pub struct FaultProxy {
    pub port: u16,
    pub hits: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    /// Every request passed through untouched: its head and the upstream's status line.
    pub answered: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

pub struct Fault {
    /// Forward the request, then close the connection without answering (a lost response);
    /// with `status = "hold"`, keep it open without answering instead (an attempt timeout).
    pub drop_response: bool,
    pub method: &'static str,
    /// Only requests whose request line contains this (empty: all of `method`).
    pub path_contains: &'static str,
    pub count: usize,
    pub status: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl FaultProxy {
    pub fn start(upstream: u16, fault: Fault) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = hits.clone();
        let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let a = answered.clone();
        std::thread::spawn(move || {
            let mut left = fault.count;
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                let Some((head, body)) = read_request(&mut client) else {
                    continue;
                };
                let first = head.lines().next().unwrap_or_default().to_string();
                let is_match =
                    first.starts_with(fault.method) && first.contains(fault.path_contains);
                if is_match {
                    h.lock().unwrap().push((Instant::now(), first.clone()));
                }
                if is_match && left > 0 && fault.drop_response {
                    left -= 1;
                    if let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) {
                        let head = head
                            .lines()
                            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                            .collect::<Vec<_>>()
                            .join("\r\n");
                        let _ =
                            up.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes());
                        let _ = up.write_all(&body);
                        let mut resp = Vec::new();
                        let _ = up.read_to_end(&mut resp);
                    }
                    if fault.status == "hold" {
                        // The upstream did the work; the answer is held until the client
                        // gives up (its attempt timeout).
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_secs(120));
                            drop(client);
                        });
                        continue;
                    }
                    // The upstream did the work; the client never hears of it.
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                if is_match && left > 0 {
                    left -= 1;
                    let mut resp = format!(
                        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        fault.status,
                        fault.body.len()
                    );
                    for (k, v) in &fault.headers {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    resp.push_str(&fault.body);
                    let _ = client.write_all(resp.as_bytes());
                    continue;
                }
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let head = head
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect::<Vec<_>>()
                    .join("\r\n");
                let _ = up.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes());
                let _ = up.write_all(&body);
                let mut resp = Vec::new();
                let _ = up.read_to_end(&mut resp);
                let status = String::from_utf8_lossy(&resp)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                a.lock().unwrap().push((head, status));
                let _ = client.write_all(&resp);
            }
        });
        FaultProxy {
            port,
            hits,
            answered,
        }
    }
}

/// Reads one request: head (without the blank line) and a Content-Length or chunked body.
pub fn read_request(s: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let lower = head.to_ascii_lowercase();
    let len = lower.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
    });
    if let Some(len) = len {
        while body.len() < len {
            let n = s.read(&mut tmp).ok()?;
            if n == 0 {
                // The client went away mid-body (a kill -9): nothing to forward.
                return None;
            }
            body.extend_from_slice(&tmp[..n]);
        }
    } else if lower.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"\r\n\r\n")
            || !body
                .windows(5)
                .any(|w| w == b"0\r\n\r\n" || w == b"\n0\r\n")
        {
            let n = s.read(&mut tmp).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
    }
    Some((head, body))
}

/// Azurite's Blob service on a free loopback port, with its data in a temp dir; stopped when
/// dropped.
pub struct Azurite {
    child: Child,
    _data: tempfile::TempDir,
    pub port: u16,
    /// Set when started with HTTPS (and OAuth): the test's client trusts the test CA.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Azurite's development account key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    pub fn start() -> Azurite {
        Self::start_with(None)
    }

    /// Azurite over HTTPS with a certificate from `ca`, checking bearer tokens (`--oauth
    /// basic`: audience, issuer and lifetime; signatures are not verified).
    pub fn start_https(ca: &tls::TestCa) -> Azurite {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&tls::TestCa>) -> Azurite {
        // A port free a moment ago can be taken by another test before Azurite binds it
        // (Azurite then exits): start again on another one.
        for _ in 0..5 {
            if let Some(a) = Self::try_start(ca) {
                return a;
            }
        }
        panic!("azurite did not start on any of five free ports");
    }

    fn try_start(ca: Option<&tls::TestCa>) -> Option<Azurite> {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-tools/azurite/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "Azurite is not installed: run scripts/test.sh once (it installs azurite from npm)"
        );
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--silent",
            "--skipApiVersionCheck",
            "--location",
        ])
        .arg(data.path());
        if let Some(ca) = ca {
            let cert = ca.server("azurite", &["127.0.0.1", "localhost"]);
            cmd.arg("--cert")
                .arg(&cert.cert_pem)
                .arg("--key")
                .arg(&cert.key_pem)
                .args(["--oauth", "basic"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite");
        let mut a = Azurite {
            child,
            _data: data,
            port,
            tls: ca.map(|ca| ca.client_config()),
        };
        let mut exited = false;
        wait_until(Duration::from_secs(30), "azurite to listen", || {
            exited = matches!(a.child.try_wait(), Ok(Some(_)));
            exited || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // Listening, and it is Azurite that listens (it answers with its own header).
        if exited || !a.answers() {
            return None;
        }
        Some(a)
    }

    /// Whether the server on the port is this Azurite (alive, answering an HTTP request).
    fn answers(&mut self) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if self.tls.is_some() {
            return true;
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = "GET /devstoreaccount1?comp=list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let mut raw = Vec::new();
        if s.write_all(req.as_bytes()).is_err() || s.read_to_end(&mut raw).is_err() {
            return false;
        }
        String::from_utf8_lossy(&raw)
            .to_ascii_lowercase()
            .contains("\r\nx-ms-")
    }

    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.endpoint()
        )
    }

    /// The account's blob endpoint (`http://` or `https://`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/devstoreaccount1", self.port)
    }

    /// An account SAS for the test's own calls (create containers, read blobs).
    pub fn account_sas(&self) -> String {
        self.account_sas_with("rwdlacup")
    }

    /// An account SAS with only the permissions `sp` (e.g. `rl`: read and list).
    pub fn account_sas_with(&self, sp: &str) -> String {
        use base64::Engine;
        use hmac::Mac;
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .unwrap();
        let se = (chrono::Utc::now() + chrono::Duration::hours(1))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let sv = "2022-11-02";
        let to_sign = format!("devstoreaccount1\n{sp}\nb\nsco\n\n{se}\n\nhttps,http\n{sv}\n\n");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let enc = |s: &str| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        format!(
            "sv={sv}&ss=b&srt=sco&sp={sp}&se={}&spr=https,http&sig={}",
            enc(&se),
            enc(&sig)
        )
    }

    /// A plain HTTP request to Azurite: (status, lower-cased headers, body).
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        self.request_with(method, path_and_query, &[], b"")
    }

    /// A request with extra headers and a body.
    pub fn request_with(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut head = format!("{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-ms-version: 2022-11-02\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut head = head.into_bytes();
        head.extend_from_slice(body);
        let mut raw = Vec::new();
        match &self.tls {
            Some(cfg) => {
                let mut s = tls::connect(cfg, self.port);
                s.write_all(&head).unwrap();
                // Azurite closes without close_notify; what arrived is complete.
                let _ = s.read_to_end(&mut raw);
            }
            None => {
                let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
                s.write_all(&head).unwrap();
                s.read_to_end(&mut raw).unwrap();
            }
        }
        parse_response(&raw)
    }

    pub fn create_container(&self, name: &str) {
        let (st, _, body) = self.request(
            "PUT",
            &format!(
                "/devstoreaccount1/{name}?restype=container&{}",
                self.account_sas()
            ),
        );
        assert_eq!(
            st,
            201,
            "create container: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// A blob's bytes as stored.
    pub fn get(&self, container: &str, name: &str) -> Vec<u8> {
        let (st, _, body) = self.request(
            "GET",
            &format!(
                "/devstoreaccount1/{container}/{name}?{}",
                self.account_sas()
            ),
        );
        assert_eq!(st, 200, "GET {name}");
        body
    }

    /// Every record of every blob in a container (each blob gunzipped, members and all).
    /// `run`'s start-up check writes and deletes a probe blob: one gone by now is skipped.
    pub fn records(&self, container: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for name in self.list(container) {
            let (st, _, body) = self.request(
                "GET",
                &format!(
                    "/devstoreaccount1/{container}/{name}?{}",
                    self.account_sas()
                ),
            );
            if st == 404 && name == ".logferry-check" {
                continue;
            }
            assert_eq!(st, 200, "GET {name}");
            let mut raw = Vec::new();
            if body.starts_with(&[0x1f, 0x8b]) {
                flate2::read::MultiGzDecoder::new(&body[..])
                    .read_to_end(&mut raw)
                    .unwrap();
            } else {
                raw = body;
            }
            out.extend(
                raw.split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()),
            );
        }
        out
    }

    /// Blob names in a container.
    pub fn list(&self, container: &str) -> Vec<String> {
        let (st, _, body) = self.request(
            "GET",
            &format!(
                "/devstoreaccount1/{container}?restype=container&comp=list&{}",
                self.account_sas()
            ),
        );
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut out: Vec<String> = text
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split("</Name>").next())
            .map(str::to_string)
            .collect();
        out.sort();
        out
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits a raw HTTP response: (status, lower-cased headers, de-chunked body).
pub fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    (status, headers, body)
}
