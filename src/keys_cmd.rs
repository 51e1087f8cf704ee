//! `logferry decrypt`, `keys list`, `shred` and `keygen`: reading, listing and erasing what an
//! encrypted sink wrote.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use logferry::config::{Config, SinkConfig, SinkKind};
use logferry_sink::Compression;
use logferry_vault::crypt::{decrypt as decrypt_stream, CryptError, Header};
use logferry_vault::keys::{is_hour, KeyRing};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The sink and its key ring, built on `rt`: the clients it makes run on that runtime only.
fn encrypted_sink<'a>(
    rt: &tokio::runtime::Runtime,
    cfg: &'a Config,
    name: &str,
) -> anyhow::Result<(&'a SinkConfig, Arc<KeyRing>)> {
    let sc = cfg
        .sinks
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("no sink named {name:?} in {}", cfg.path.display()))?;
    let keys = rt
        .block_on(logferry::encryption::key_ring(cfg, sc))?
        .ok_or_else(|| anyhow!("sink {name:?} does not encrypt (it has no `encryption`)"))?;
    Ok((sc, keys))
}

/// A tenant as a key and the ledger write it: anything else cannot have a key.
fn check_tenant(t: &str) -> anyhow::Result<()> {
    if !logferry_sink::key::is_clean(t) {
        bail!("{t:?} is not a tenant as the ledger writes it (letters, digits, - _ . @ +, and = from earlier versions)");
    }
    Ok(())
}

/// An object named on the command line: a file (as given, or under a directory sink's root),
/// or an object of the sink's bucket or container, fetched whole.
fn open(
    rt: &tokio::runtime::Runtime,
    sc: &SinkConfig,
    keys: Option<&KeyRing>,
    obj: &str,
) -> anyhow::Result<(String, Box<dyn Read>)> {
    let name = obj.rsplit('/').next().unwrap_or(obj).to_string();
    let file = |p: &Path| -> anyhow::Result<(String, Box<dyn Read>)> {
        let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        Ok((name.clone(), Box::new(std::io::BufReader::new(f))))
    };
    // A local file first (an archive file, a spool or dead-letter file), then the sink.
    let given = PathBuf::from(obj);
    if given.is_file() {
        return file(&given);
    }
    match &sc.kind {
        SinkKind::Directory { path } if path.join(obj).is_file() => file(&path.join(obj)),
        SinkKind::Directory { .. } => bail!("no such object"),
        _ if keys.is_none() => bail!("no such object in the sink"),
        _ => {
            // From the data's bucket or container (the ledger may have one of its own). The
            // object is decrypted in memory: the user asked for it, whatever its size.
            let store = rt.block_on(logferry::encryption::store(sc, true))?;
            match rt
                .block_on(store.get(obj, u64::MAX))
                .map_err(|e| anyhow!(e))?
            {
                Some(bytes) => Ok((name, Box::new(std::io::Cursor::new(bytes)))),
                None => bail!("no such object in the sink"),
            }
        }
    }
}

/// Decrypts and decompresses each object to stdout, or to `out/<name>` (written whole or not
/// at all). Returns whether every object was read.
pub fn decrypt(
    cfg: &Config,
    sink: &str,
    objects: &[String],
    out: Option<&Path>,
) -> anyhow::Result<bool> {
    let rt = runtime()?;
    let sc = cfg
        .sinks
        .iter()
        .find(|s| s.name == sink)
        .ok_or_else(|| anyhow!("no sink named {sink:?} in {}", cfg.path.display()))?;
    // A sink that does not encrypt may still seal its spool (`[spool] kek`): its spool and
    // dead-letter files are read with the spool's keys.
    let keys = rt.block_on(logferry::encryption::key_ring(cfg, sc))?;
    if keys.is_none() && cfg.spool_kek.is_none() {
        bail!(
            "sink {sink:?} does not encrypt (it has no `encryption`, and there is no [spool] kek)"
        );
    }
    let mut all = true;
    for obj in objects {
        if let Err(e) = decrypt_one(&rt, cfg, sc, keys.as_deref(), obj, out) {
            if out.is_none() && broken_pipe(&e) {
                // The reader closed the pipe (`| head`): it has what it wanted; stop quietly
                // (an object that failed before still fails the run).
                return Ok(all);
            }
            eprintln!(
                "logferry decrypt: {}",
                logferry_sink::redact::text(&format!("{obj}: {e:#}"))
            );
            all = false;
        }
    }
    Ok(all)
}

/// A writer that remembers whether its reader went away (EPIPE).
struct Watched<W> {
    inner: W,
    broken: bool,
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.broken |= matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.broken |= matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
        r
    }
}

/// Whether `e` is stdout's reader having gone away.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn decrypt_one(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    sc: &SinkConfig,
    keys: Option<&KeyRing>,
    obj: &str,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let (name, mut file) = open(rt, sc, keys, obj)?;
    // A dead letter or spool file (or a sealed oversize spill): its metadata line, then a
    // payload sealed under a spool key.
    let mut spool_ring = None;
    let mut meta: Option<serde_json::Value> = None;
    let mut magic = [0u8; 9];
    let mut file: Box<dyn Read> = {
        let n = read_up_to(&mut file, &mut magic)?;
        if &magic[..n] == logferry::spool::MAGIC {
            let mut r = std::io::BufReader::new(file);
            let mut line = Vec::new();
            std::io::BufRead::read_until(&mut (&mut r).take(MAX_META), b'\n', &mut line)?;
            if line.pop() != Some(b'\n') {
                bail!("its metadata line is cut short or too long: not a file logferry wrote");
            }
            let m: serde_json::Value = serde_json::from_slice(&line)
                .context("its metadata line is not JSON: not a file logferry wrote")?;
            check_sealed_with(&m, &sc.name)?;
            spool_ring = Some(
                rt.block_on(logferry::encryption::spool_ring(cfg, sc))?
                    .ok_or_else(|| anyhow!("sink {:?} does not seal its spool", sc.name))?,
            );
            meta = Some(m);
            Box::new(r)
        } else {
            Box::new(std::io::Cursor::new(magic[..n].to_vec()).chain(file))
        }
    };
    let (header, raw) = Header::read(&mut file)?;
    if let Some(m) = &meta {
        check_spool_file(m, &header, &name)?;
    }
    let ring = match (spool_ring.as_deref(), keys) {
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => bail!(
            "not a spool or dead-letter file, and sink {:?} does not encrypt",
            sc.name
        ),
    };
    let key = rt.block_on(ring.open(&header.tenant, &header.hour, &header.key_id))?;
    if meta.is_none() {
        // An archive object: shown only from the place its header names.
        logferry::encryption::check_object_place(
            &sc.key,
            &sc.name,
            sc.encryption.as_ref().map(|e| e.tenant_field.as_str()),
            &header,
            obj,
        )
        .map_err(|e| anyhow!(e))?;
    }
    // A spool-format file says how its payload is compressed; an object is the sink's.
    let compression = match meta.as_ref().and_then(|m| m.get("compression")) {
        Some(c) => serde_json::from_value::<Compression>(c.clone())
            .map_err(|_| anyhow!("its metadata names an unknown compression {c}"))?,
        None => sc.compression,
    };
    let mut input = std::io::Cursor::new(raw).chain(file);
    let plain = name
        .trim_end_matches(".sealed")
        .trim_end_matches(logferry_vault::encrypted::SUFFIX)
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .to_string();
    match out {
        None => {
            let stdout = std::io::stdout();
            let mut w = Watched {
                inner: stdout.lock(),
                broken: false,
            };
            let res = run_decrypt(&mut input, &mut w, key, compression)
                .and_then(|()| w.flush().map_err(Into::into));
            if w.broken {
                // The decryptor's errors keep only the text: say what it was.
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into());
            }
            res?;
        }
        Some(dir) => {
            logferry::private_fs::dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let target = dir.join(&plain);
            let tmp = dir.join(format!(".{plain}.partial"));
            let mut w = std::io::BufWriter::new(
                create_private(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            let res = run_decrypt(&mut input, &mut w, key, compression)
                .and_then(|()| w.flush().map_err(Into::into));
            drop(w);
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &target)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
    }
    Ok(())
}

/// A metadata line longer than this is not one logferry wrote.
const MAX_META: u64 = 1 << 20;

/// A spool-format file sealed with another sink's spool keys is refused with that sink's name
/// (`sealed_with_sink`, or the batch's own sink).
fn check_sealed_with(meta: &serde_json::Value, sink: &str) -> anyhow::Result<()> {
    let named = meta
        .get("sealed_with_sink")
        .or_else(|| meta.get("sink"))
        .and_then(serde_json::Value::as_str);
    match named {
        Some(s) if s != sink => bail!(
            "it was sealed with sink {s:?}'s spool keys, not sink {sink:?}'s: run logferry decrypt --sink {s}"
        ),
        _ => Ok(()),
    }
}

/// A spool-format file's object must be the batch its metadata and its name say: the header's
/// batch id (authenticated) is the metadata's `id`, and the file's name holds it
/// (`<seq>-<id>.batch` in the spool, `<id>.batch` in the dead-letter folder).
fn check_spool_file(meta: &serde_json::Value, header: &Header, name: &str) -> anyhow::Result<()> {
    let id = meta.get("id").and_then(serde_json::Value::as_str);
    let stem = name.strip_suffix(".batch");
    let Some(id) = id else {
        if stem.is_some() {
            bail!("its metadata names no batch id: not a batch file logferry wrote");
        }
        return Ok(());
    };
    let placed = match stem {
        Some(stem) => stem == id || stem.ends_with(&format!("-{id}")),
        None => name.contains(id),
    };
    if header.batch_id != id || !placed {
        bail!(
            "refused: its sealed header names batch {}, its metadata batch {id}, and it is named {name}: a batch file moved or copied to another batch's place is not shown",
            header.batch_id
        );
    }
    Ok(())
}

/// Creates `path` for writing, readable by its owner only (0600): never an existing file, never
/// through a link (`O_NOFOLLOW`). A temp file left by an earlier run is removed first (a link
/// is removed, not followed).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    logferry::private_fs::create_new(path)
}

/// Reads until `buf` is full or the input ends.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn run_decrypt(
    r: &mut impl Read,
    w: &mut impl Write,
    key: std::sync::Arc<logferry_vault::crypt::DataKey>,
    c: Compression,
) -> anyhow::Result<()> {
    let io = |e: std::io::Error| CryptError::Io(e.to_string());
    match c {
        Compression::Gzip => {
            let mut d = flate2::write::MultiGzDecoder::new(w);
            decrypt_stream(r, &mut d, |_| Ok(key))?;
            d.try_finish().map_err(io)?;
        }
        Compression::Zstd => {
            let mut d = zstd::stream::write::Decoder::new(w).map_err(io)?;
            decrypt_stream(r, &mut d, |_| Ok(key))?;
            d.flush().map_err(io)?;
        }
        Compression::None => {
            decrypt_stream(r, w, |_| Ok(key))?;
        }
    }
    Ok(())
}

/// Prints the tenant-hours that have a key.
pub fn list(cfg: &Config, sink: &str, tenant: Option<&str>) -> anyhow::Result<()> {
    if let Some(t) = tenant {
        check_tenant(t)?;
    }
    let rt = runtime()?;
    let (_, keys) = encrypted_sink(&rt, cfg, sink)?;
    let listed = rt.block_on(keys.list(tenant))?;
    println!("{:<24} {:<14} key id", "tenant", "hour");
    let mut forged = 0;
    for l in &listed {
        match &l.forged {
            None => println!("{:<24} {:<14} {}", l.tenant, l.hour, l.key_id),
            Some(why) => {
                forged += 1;
                println!("FORGED {} ({why}): never used", l.path);
            }
        }
    }
    let good = listed.len() - forged;
    println!("{} key{}", good, if good == 1 { "" } else { "s" });
    if forged > 0 {
        bail!("{forged} ledger entr{} not written by logferry (see FORGED above): someone wrote into the ledger", if forged == 1 { "y is" } else { "ies are" });
    }
    Ok(())
}

pub struct ShredArgs<'a> {
    pub sink: &'a str,
    pub tenant: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub by: Option<&'a str>,
    pub unsigned: bool,
}

/// Deletes a tenant's keys for an hour range and stores the signed receipt.
pub fn shred(cfg: &Config, a: &ShredArgs<'_>) -> anyhow::Result<()> {
    check_tenant(a.tenant)?;
    for h in [a.from, a.to] {
        if !is_hour(h) {
            bail!("{h:?} is not an hour: write YYYY-MM-DDTHH (UTC), e.g. 2026-12-03T10");
        }
    }
    if a.from > a.to {
        bail!("--from {} is after --to {}", a.from, a.to);
    }
    let signer = logferry::encryption::signer(cfg)?;
    if signer.is_none() && !a.unsigned {
        bail!("no [signing] key_file to sign the receipt with: set one (`logferry keygen`), or pass --unsigned");
    }
    let rt = runtime()?;
    let (_, keys) = encrypted_sink(&rt, cfg, a.sink)?;
    let req = logferry_vault::shred::Request {
        sink: a.sink,
        tenant: a.tenant,
        from: a.from,
        to: a.to,
        by: a.by,
        reason: "manual",
    };
    let done = rt.block_on(logferry_vault::shred::shred(
        &keys,
        &req,
        signer.as_ref(),
        chrono::Utc::now(),
    ));
    let done = done.map_err(|e| anyhow!(e))?;
    if done.erased.is_empty() {
        println!(
            "no keys for tenant {} from {} to {}: nothing shredded",
            a.tenant, a.from, a.to
        );
        return Ok(());
    }
    for l in &done.erased {
        println!("shredded {} {} {}", l.tenant, l.hour, l.key_id);
    }
    if let Some(k) = &done.receipt_key {
        println!("receipt {k}");
    }
    Ok(())
}

/// Writes a new Ed25519 key pair: `out` (private, mode 0600, never replaced) and `out.pub`.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public) =
        logferry_integrity::signing::SigningKey::generate().map_err(|e| anyhow!(e))?;
    let pub_path = PathBuf::from(format!("{}.pub", out.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key is never replaced)",
                out.display()
            )
        })?;
    f.write_all(private.as_bytes())?;
    f.sync_all()?;
    std::fs::write(&pub_path, public)
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    println!(
        "wrote {} (private) and {}",
        out.display(),
        pub_path.display()
    );
    Ok(())
}
