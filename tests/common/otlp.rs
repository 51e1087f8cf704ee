//! The OTLP receiver of the `otlp` sink's tests (`tests/otlp_receiver.py`): it reads every
//! request with the official OpenTelemetry Python classes and writes what it read as JSON
//! lines, answering as scripted.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct OtlpReceiver {
    pub dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

impl OtlpReceiver {
    /// `script`: the answers given first, in order (see the receiver's docstring);
    /// `max_body`: 413 above this many decompressed bytes.
    pub fn start(script: serde_json::Value, max_body: Option<usize>) -> OtlpReceiver {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
        if let Some(m) = max_body {
            std::fs::write(dir.path().join("max_body"), m.to_string()).unwrap();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_receiver.py");
        let mut child = Command::new(super::python())
            .arg(script)
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 for the OTLP receiver (scripts/test.sh installs its packages)");
        let port_file = dir.path().join("port");
        let start = std::time::Instant::now();
        while !port_file.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("the OTLP receiver exited ({st}): run scripts/test.sh once to install opentelemetry-proto");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the OTLP receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        OtlpReceiver { dir, child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every record the receiver accepted, as it read them.
    pub fn records(&self) -> Vec<serde_json::Value> {
        lines(&self.dir.path().join("records.jsonl"))
    }

    /// The bodies of the accepted records (the records logferry read, when `body = "map"`).
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.records()
            .into_iter()
            .map(|mut r| r["body"].take())
            .collect()
    }

    /// Every request: path, content type and encoding, sizes, status answered, decode errors.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        lines(&self.dir.path().join("requests.jsonl"))
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
