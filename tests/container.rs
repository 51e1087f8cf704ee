//! The image and the sidecar pod, built and run for real with podman (Debian 12's 4.3): the
//! image from the Dockerfile's runtime stage with the binary these tests built, on a base made
//! from Debian's packages (scripts/image.sh); run as users run it (uid 65532, read-only root,
//! mounted configuration, data and log volumes); and the Kubernetes sidecar manifest played
//! with `podman kube play` in the form podman can play (scripts/container/kube_variant.py).
//! scripts/test.sh installs podman and what it needs; without them these tests fail saying so.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const NONROOT: u32 = 65532;

/// podman with the project's settings and storage (scripts/container/env.sh).
fn podman(args: &[&str]) -> Output {
    Command::new("bash")
        .current_dir(REPO)
        .args([
            "-c",
            ". scripts/container/env.sh && exec podman \"$@\"",
            "podman",
        ])
        .args(args)
        .output()
        .expect("bash")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image, built once per test run from the binary under test.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "the container tests need root (rootful podman, mmdebstrap): run them through scripts/test.sh as root"
        );
        let missing: Vec<&str> = [
            "podman",
            "runc",
            "netavark",
            "aardvark-dns",
            "catatonit",
            "mmdebstrap",
            "busybox-static",
        ]
        .into_iter()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
        })
        .collect();
        assert!(
            missing.is_empty(),
            "missing Debian packages {missing:?}: scripts/test.sh installs them (apt-get install podman runc netavark aardvark-dns catatonit mmdebstrap busybox-static)"
        );
        let out = Command::new("bash")
            .current_dir(REPO)
            // A tag of its own: the test build (debug, with the fault hooks) never takes the
            // name users build (localhost/logferry:latest).
            .args(["scripts/image.sh", "--binary", BIN, "--tag", "localhost/logferry:test"])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "scripts/image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout.lines().last().expect("the image name").to_string()
    })
}

/// A folder for a container's volumes that uid 65532 can reach, with `writable` subfolders
/// owned by it.
fn volumes(writable: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for w in writable {
        let p = dir.path().join(w);
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(NONROOT), Some(NONROOT)).unwrap();
    }
    dir
}

fn readable(p: &Path) {
    let m = if p.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// `logferry health` from the host against a published port.
fn probe(port: u16, path: &str) -> bool {
    Command::new(BIN)
        .args(["health", "--url", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn inspect(name: &str, format: &str) -> String {
    podman_ok(&["inspect", "--format", format, name])
}

/// Removes the container when the test ends, also when it fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

const CONFIG: &str = r#"data_dir = "/var/lib/logferry"
log_format = "json"
shutdown_timeout = "20s"
[api]
listen = "0.0.0.0:8686"
[sources.jobs]
include = ["/var/log/platform/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "/archive"
batch = { max_age = "300ms" }
"#;

fn run_args<'a>(name: &'a str, dir: &'a Path, port: &'a str, data: &'a str) -> Vec<String> {
    let v = |p: &str| dir.join(p).display().to_string();
    vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        name.into(),
        "--user".into(),
        format!("{NONROOT}:{NONROOT}"),
        "--read-only".into(),
        "-p".into(),
        format!("127.0.0.1:{port}:8686"),
        "-v".into(),
        format!("{}:/etc/logferry/logferry.toml:ro", v("logferry.toml")),
        "-v".into(),
        format!("{}:/var/log/platform:ro", v("logs")),
        "-v".into(),
        format!("{data}:/var/lib/logferry"),
        "-v".into(),
        format!("{}:/archive", v("archive")),
    ]
}

fn ids(records: &[serde_json::Value]) -> Vec<u64> {
    let mut v: Vec<u64> = records.iter().filter_map(|r| r["id"].as_u64()).collect();
    v.sort_unstable();
    v
}

fn append(log: &Path, from: u64, n: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    for i in from..from + n {
        writeln!(f, "{{\"id\":{i},\"msg\":\"job {i} done\"}}").unwrap();
    }
    readable(log);
}

#[test]
fn the_image_runs_as_users_run_it_and_stops_and_resumes_without_loss_or_duplicates() {
    let image = image();
    let dir = volumes(&["archive"]);
    std::fs::write(dir.path().join("logferry.toml"), CONFIG).unwrap();
    readable(&dir.path().join("logferry.toml"));
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    readable(&dir.path().join("logs"));
    let log = dir.path().join("logs/jobs.log");
    append(&log, 0, 300);
    // A named volume for the data, as `docker run -v logferry-data:...` makes it: its
    // ownership comes from the image's folder.
    let name = format!("logferry-test-{}", std::process::id());
    let _ = podman(&["volume", "rm", "-f", &name]);
    podman_ok(&["volume", "create", &name]);
    let port = free_port().to_string();
    let args = run_args(&name, dir.path(), &port, &name);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push(image);
    let started = Instant::now();
    podman_ok(&args);
    let _c = Container(name.clone());
    let port: u16 = port.parse().unwrap();
    wait_until(Duration::from_secs(60), "/readyz from the host", || {
        probe(port, "/readyz")
    });
    eprintln!("start to ready: {:?}", started.elapsed());

    // As users run it: uid 65532 (the process itself, seen from the host), read-only root.
    let pid = inspect(&name, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65532"),
        "{uid}"
    );
    assert_eq!(inspect(&name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    // The image's HEALTHCHECK, run as the engine runs it.
    podman_ok(&["healthcheck", "run", &name]);
    base_is_current_and_scannable(&name, dir.path());

    let archive = dir.path().join("archive");
    wait_until(Duration::from_secs(60), "300 records shipped", || {
        archive_records(&archive).len() == 300
    });
    // SIGTERM: within shutdown_timeout, exit 0, nothing lost.
    podman_ok(&["stop", "-t", "30", &name]);
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "0");
    let objects = walk(&archive).len();

    // Restart: it resumes from its checkpoints; the old lines are not shipped again.
    append(&log, 300, 200);
    podman_ok(&["start", &name]);
    wait_until(Duration::from_secs(60), "the restart's records", || {
        archive_records(&archive).len() >= 500
    });
    podman_ok(&["stop", "-t", "30", &name]);
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "0");
    let all = archive_records(&archive);
    assert_eq!(ids(&all), (0..500).collect::<Vec<_>>(), "each record once");
    assert!(walk(&archive).len() > objects);
    let _ = podman(&["rm", "-f", &name]);
    let _ = podman(&["volume", "rm", "-f", &name]);
}

#[test]
fn a_data_volume_the_user_cannot_write_is_a_clear_error_at_once() {
    let image = image();
    // The data folder stays root's, mode 0755: a volume the container's user cannot write.
    let dir = volumes(&["archive"]);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    readable(&dir.path().join("data"));
    std::fs::write(dir.path().join("logferry.toml"), CONFIG).unwrap();
    readable(&dir.path().join("logferry.toml"));
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    readable(&dir.path().join("logs"));
    let name = format!("logferry-unwritable-{}", std::process::id());
    let data = dir.path().join("data").display().to_string();
    let port = free_port().to_string();
    let args = run_args(&name, dir.path(), &port, &data);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push(image);
    podman_ok(&args);
    let _c = Container(name.clone());
    // It ends by itself, with the reason, instead of running on or restarting.
    let waited = podman_ok(&["wait", &name]);
    assert_eq!(waited, "1");
    let logs = podman(&["logs", &name]);
    let text =
        String::from_utf8_lossy(&logs.stderr).to_string() + &String::from_utf8_lossy(&logs.stdout);
    assert!(
        text.contains(
            "data_dir /var/lib/logferry cannot be written by this process, uid 65532 (gid 65532)"
        ),
        "{text}"
    );

    // A volume mounted read-only: the advice is the mount, not the owner.
    let ro = format!("{name}-ro");
    let port = free_port().to_string();
    let data = dir.path().join("archive").display().to_string();
    let mut args = run_args(&ro, dir.path(), &port, &data);
    for a in args.iter_mut() {
        if *a == format!("{data}:/var/lib/logferry") {
            a.push_str(":ro");
        }
    }
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push(image);
    podman_ok(&args);
    let _c = Container(ro.clone());
    assert_eq!(podman_ok(&["wait", &ro]), "1");
    let logs = podman(&["logs", &ro]);
    let text = String::from_utf8_lossy(&logs.stderr).to_string();
    assert!(
        text.contains("data_dir /var/lib/logferry is on a read-only mount"),
        "{text}"
    );
}

/// The generator of the pod variant, in the test tools' Python (PyYAML).
fn kube_variant(args: &[&str]) -> Output {
    Command::new(python())
        .current_dir(REPO)
        .arg("scripts/container/kube_variant.py")
        .args(args)
        .output()
        .expect("python")
}

#[test]
fn the_sidecar_pod_plays_ships_masked_records_answers_its_probes_and_stops_cleanly() {
    let image = image();
    // The committed variant is what the native manifest generates.
    let check = kube_variant(&["--check"]);
    assert!(
        check.status.success(),
        "deploy/kubernetes/podman/ is out of date: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let busybox = Command::new("bash")
        .current_dir(REPO)
        .arg("scripts/container/busybox.sh")
        .output()
        .expect("bash");
    assert!(
        busybox.status.success(),
        "{}",
        String::from_utf8_lossy(&busybox.stderr)
    );
    let platform = String::from_utf8_lossy(&busybox.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let dir = volumes(&["archive"]);
    let archive = dir.path().join("archive");
    let port = free_port();
    let manifest = dir.path().join("pod.yaml");
    let out = kube_variant(&[
        "--logferry-image",
        image,
        "--platform-image",
        &platform,
        "--archive",
        &archive.display().to_string(),
        "--host-port",
        &port.to_string(),
        "--lines",
        "20",
        "-o",
        &manifest.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = manifest.display().to_string();
    let _ = podman(&["kube", "down", &manifest]);
    let _ = podman(&["volume", "rm", "-f", "logferry-data", "logferry-config"]);
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = podman(&["kube", "down", &self.0]);
            let _ = podman(&["volume", "rm", "-f", "logferry-data", "logferry-config"]);
        }
    }
    podman_ok(&["kube", "play", &manifest]);
    let _down = Down(manifest.clone());
    let lf = "platform-pod-0-logferry";

    // The native manifest's probes, run as the kubelet would: podman 4.3 would run them
    // through a shell the image does not have.
    let probes: serde_json::Value =
        serde_json::from_slice(&kube_variant(&["--probes"]).stdout).unwrap();
    let ports = probes["ports"].as_array().unwrap();
    let named = |p: &serde_json::Value| {
        let by_name = p.as_str().and_then(|n| {
            ports
                .iter()
                .find(|x| x["name"] == n)
                .and_then(|x| x["containerPort"].as_u64())
        });
        by_name.or(p.as_u64()).unwrap()
    };
    for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let p = &probes[kind];
        if let Some(cmd) = p["exec"]["command"].as_array() {
            let cmd: Vec<&str> = cmd.iter().map(|c| c.as_str().unwrap()).collect();
            wait_until(Duration::from_secs(60), kind, || {
                podman(&[&["exec", lf][..], &cmd].concat()).status.success()
            });
        } else if let Some(get) = p.get("httpGet") {
            assert_eq!(named(&get["port"]), 8686, "{kind} on the api port");
            let path = get["path"].as_str().unwrap();
            wait_until(Duration::from_secs(60), kind, || probe(port, path));
        } else {
            panic!("{kind}: no exec or httpGet in the native manifest");
        }
    }

    // The securityContext as the manifest sets it.
    assert_eq!(inspect(lf, "{{.Config.User}}"), "65532:65532");
    assert_eq!(inspect(lf, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect(lf, "{{.EffectiveCaps}}"), "[]");
    assert!(inspect(lf, "{{.HostConfig.SecurityOpt}}").contains("no-new-privileges"));

    wait_until(
        Duration::from_secs(60),
        "40 records from the platform",
        || archive_records(&archive).len() == 40,
    );
    let records = archive_records(&archive);
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("@example.com"), "e-mails are masked: {text}");
    podman_ok(&["pod", "stop", "-t", "30", "platform-pod-0"]);
    assert_eq!(inspect(lf, "{{.State.ExitCode}}"), "0");
    podman_ok(&["kube", "down", &manifest]);
    assert!(!podman(&["pod", "exists", "platform-pod-0"])
        .status
        .success());
    let files: Vec<PathBuf> = walk(&archive);
    assert!(files.iter().all(|f| !f
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".logferry-tmp")));
}

/// The base came with Debian's security updates (a CA bundle without the roots Mozilla
/// distrusted, e.g. TrustCor's), and says what it holds the way scanners read it.
fn base_is_current_and_scannable(container: &str, dir: &Path) {
    let bundle = dir.join("bundle.pem");
    podman_ok(&[
        "cp",
        &format!("{container}:/etc/ssl/certs/ca-certificates.crt"),
        &bundle.display().to_string(),
    ]);
    let status = dir.join("libc6");
    podman_ok(&[
        "cp",
        &format!("{container}:/var/lib/dpkg/status.d/libc6"),
        &status.display().to_string(),
    ]);
    let text = std::fs::read_to_string(&status).unwrap();
    assert!(
        text.contains("Package: libc6") && text.contains("Version: "),
        "{text}"
    );
    let out = Command::new(python())
        .args([
            "-c",
            "import sys; from cryptography import x509\n\
             certs = x509.load_pem_x509_certificates(open(sys.argv[1], 'rb').read())\n\
             names = [c.subject.rfc4514_string() for c in certs]\n\
             print(len(names)); print('\\n'.join(n for n in names if 'TrustCor' in n or 'E-Tugra' in n))",
            &bundle.display().to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let n: usize = lines.next().unwrap().parse().unwrap();
    assert!(n > 100, "{n} roots");
    let distrusted: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    assert!(
        distrusted.is_empty(),
        "distrusted roots in the bundle: {distrusted:?}"
    );
}
