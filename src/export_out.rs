//! Where `export` writes: stdout, or a file made whole or not at all (compressed by its
//! name, or Parquet), with its SHA-256 for the receipt.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use logferry::config::{Config, SinkConfig};
use logferry::export::{export, Request, Summary};
use sha2::Digest;

/// Writes what it is given and keeps its SHA-256 and size.
struct Hashing<W: Write> {
    inner: W,
    sha: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn write_to(
    cfg: &Config,
    sc: &SinkConfig,
    req: &Request,
    rt: &tokio::runtime::Runtime,
    w: impl Write,
) -> anyhow::Result<Summary> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, w);
    let mut s = export(cfg, sc, req, rt.handle(), &mut w)?;
    if let Err(e) = w.flush() {
        s.output_error.get_or_insert(e.to_string());
        s.complete = false;
    }
    Ok(s)
}

/// Writes `path` (compressed when it ends in `.gz` or `.zst`) through a temporary name, and
/// puts its SHA-256 in the summary.
pub fn to_file(
    cfg: &Config,
    sc: &SinkConfig,
    req: &Request,
    rt: &tokio::runtime::Runtime,
    path: &Path,
    parquet: bool,
) -> anyhow::Result<Summary> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--out {}: not a file name", path.display()))?
        .to_string_lossy()
        .to_string();
    // Only a file is replaced: a device, a folder or a FIFO at the name is refused (as root,
    // `--out /dev/null` must not become a file).
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() || m.file_type().is_symlink() => {}
        Ok(_) => bail!(
            "--out {}: not a regular file (a folder, device or FIFO); give a file name, or write to stdout",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!(e).context(format!("--out {}", path.display()))),
    }
    // A name of its own, created new: nobody can have made it first.
    let mut rand = [0u8; 8];
    logferry_vault::crypt::random(&mut rand).map_err(|e| anyhow!("no random bytes: {e}"))?;
    let tmp = path.with_file_name(format!(".{name}.{}.partial", hex::encode(rand)));
    let file = logferry::private_fs::create_new(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut hashing = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        sha: sha2::Sha256::new(),
        bytes: 0,
    };
    let res = (|| -> anyhow::Result<Summary> {
        let finish = |mut s: Summary, r: std::io::Result<()>| {
            if let Err(e) = r {
                s.output_error.get_or_insert(e.to_string());
            }
            s
        };
        let s = if parquet {
            let mut p = parquet_writer(cfg, sc, req, &mut hashing);
            let s = export(cfg, sc, req, rt.handle(), &mut p)?;
            let mistyped = p.mistyped;
            let s = finish(s, p.finish().map(|_| ()));
            if mistyped > 0 {
                eprintln!("logferry export: {mistyped} values did not fit their column's type: null there, whole in `record`");
            }
            s
        } else if name.ends_with(".gz") {
            let mut gz = flate2::write::GzEncoder::new(&mut hashing, flate2::Compression::new(6));
            let s = export(cfg, sc, req, rt.handle(), &mut gz)?;
            finish(s, gz.try_finish())
        } else if name.ends_with(".zst") {
            let mut z = zstd::stream::write::Encoder::new(&mut hashing, 3)?;
            let s = export(cfg, sc, req, rt.handle(), &mut z)?;
            finish(s, z.finish().map(|_| ()))
        } else {
            export(cfg, sc, req, rt.handle(), &mut hashing)?
        };
        let r = hashing
            .flush()
            .and_then(|()| hashing.inner.get_ref().sync_all());
        Ok(finish(s, r))
    })();
    let mut s = match res {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if s.output_error.is_none() {
        if let Err(e) = std::fs::rename(&tmp, path) {
            s.output_error = Some(format!("cannot write {}: {e}", path.display()));
        }
    }
    if s.output_error.is_some() {
        // Never a partial file that looks whole.
        let _ = std::fs::remove_file(&tmp);
        s.complete = false;
        return Ok(s);
    }
    s.output_sha256 = Some(hex::encode(hashing.sha.finalize()));
    s.output_bytes = Some(hashing.bytes);
    Ok(s)
}

/// The Parquet file of `--format parquet`: the sink's columns when it writes Parquet, else the
/// generic schema (`_time`, `_source`, `record` and the key's fields), zstd.
fn parquet_writer<W: Write + Send>(
    cfg: &Config,
    sc: &SinkConfig,
    req: &Request,
    out: W,
) -> logferry::export::parquet_out::ParquetOut<W> {
    use logferry::parquet::schema::{Codec, SchemaName};
    let spec = match &sc.parquet {
        Some(s) => (**s).clone(),
        None => logferry::parquet::Spec::new(
            Codec::Zstd,
            None,
            SchemaName::Generic,
            sc.key.fields(),
            Vec::new(),
        ),
    };
    let sources: Vec<_> = cfg
        .sources
        .iter()
        .filter(|s| s.sinks.contains(&sc.name))
        .collect();
    let time = sources.iter().find_map(|s| {
        s.timestamp_field
            .as_deref()
            .map(|f| (f, s.timestamp_format.as_deref()))
    });
    let source = match sources[..] {
        [one] => one.name.clone(),
        _ => String::new(),
    };
    logferry::export::parquet_out::ParquetOut::new(
        spec,
        out,
        source,
        time.map(|t| t.0),
        time.and_then(|t| t.1),
        req.from,
    )
}
