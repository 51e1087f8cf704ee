//! The gzip objects logferry writes (libdeflate, one member per 1 MiB block) read back by other
//! implementations: `gzip -d`, Python's `gzip`, and .NET's `GZipStream` in Debian's Mono (the
//! only .NET this machine can install; .NET Core 3.0 and later read every member, Mono and
//! .NET Framework only the first: docs/reading-archives.md says so and what to do).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mono's C# compiler builds a reader: GZipStream over the file, to stdout.
fn gunzip_exe(dir: &Path) -> PathBuf {
    let src = dir.join("gunzip.cs");
    std::fs::write(
        &src,
        r#"using System; using System.IO; using System.IO.Compression;
class P { static int Main(string[] a) {
  using (var f = File.OpenRead(a[0]))
  using (var g = new GZipStream(f, CompressionMode.Decompress))
  using (var o = Console.OpenStandardOutput()) { g.CopyTo(o); }
  return 0; } }"#,
    )
    .unwrap();
    let exe = dir.join("gunzip.exe");
    let out = Command::new("mcs")
        .arg("-r:System.IO.Compression.dll")
        .arg(format!("-out:{}", exe.display()))
        .arg(&src)
        .output()
        .expect("mcs (Debian's mono-mcs; scripts/test.sh installs it)");
    succeeded(&out);
    exe
}

fn read(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    succeeded(&out);
    out.stdout
}

/// The objects of a run over `lines` records, each read by every reader.
fn objects(lines: u64) -> (Lf, Vec<PathBuf>) {
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
compression = "gzip"
"#,
    );
    write_lines(&lf.path("logs/a.log"), 0, lines);
    succeeded(&lf.run_once());
    let objects: Vec<PathBuf> = walk(&lf.path("archive"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".gz"))
        .collect();
    assert!(!objects.is_empty());
    (lf, objects)
}

#[test]
fn gzip_d_python_and_dotnet_read_an_object_of_one_block_alike() {
    let (lf, objects) = objects(2_000);
    let exe = gunzip_exe(lf.dir.path());
    for o in &objects {
        let want = read(Command::new("gzip").arg("-dc").arg(o));
        assert!(want.len() < 1 << 20, "one block: {}", want.len());
        let py = read(Command::new(python()).args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())",
            &o.display().to_string(),
        ]));
        assert_eq!(py, want, "Python's gzip");
        let net = read(Command::new("mono").arg(&exe).arg(o));
        assert_eq!(net, want, ".NET GZipStream (Mono)");
    }
    assert_eq!(assert_all_present(&lf.archive("archive"), 2_000), 0);
}

#[test]
fn a_large_object_is_one_member_per_block_and_mono_reads_only_the_first() {
    // 40,000 records are about 4.4 MB: five blocks, five members in one object.
    let (lf, objects) = objects(40_000);
    let exe = gunzip_exe(lf.dir.path());
    let big = objects
        .iter()
        .max_by_key(|o| std::fs::metadata(o).unwrap().len())
        .unwrap();
    let want = read(Command::new("gzip").arg("-dc").arg(big));
    assert!(want.len() > 3 << 20, "{}", want.len());
    let py = read(Command::new(python()).args([
        "-c",
        "import gzip,sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())",
        &big.display().to_string(),
    ]));
    assert_eq!(py, want, "Python's gzip reads every member");
    // The pitfall docs/reading-archives.md warns of: a reader that stops after one member
    // gets the first block, whole lines, and nothing after it.
    let net = read(Command::new("mono").arg(&exe).arg(big));
    // A block is cut after the record that reaches 1 MiB.
    assert!(
        net.len() < (1 << 20) + 4096 && net.len() > 512 << 10,
        "{}",
        net.len()
    );
    assert!(want.starts_with(&net) && net.ends_with(b"\n"));
}
