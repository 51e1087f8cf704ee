//! `logferry mask`: prints records masked by a profile, optionally with what changed.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use logferry::config::{Config, Format};
use logferry::decode::Decoder;
use logferry::mask::Masker;

pub fn run(
    cfg: &Config,
    profile: Option<&str>,
    diff: bool,
    text: bool,
    input: Option<&Path>,
) -> anyhow::Result<()> {
    let p = match profile {
        Some(name) => cfg.masking.get(name).ok_or_else(|| {
            anyhow!(
                "no masking profile named {name:?} in {}",
                cfg.path.display()
            )
        })?,
        None => match cfg.masking.len() {
            1 => cfg
                .masking
                .values()
                .next()
                .ok_or_else(|| anyhow!("no masking profile"))?,
            0 => bail!("{} defines no [masking.<name>] profile", cfg.path.display()),
            _ => bail!(
                "{} defines several profiles ({}); choose one with --profile",
                cfg.path.display(),
                cfg.masking.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        },
    };
    let mut masker = Masker::new(p.clone(), Vec::new());
    if diff {
        masker.trace = Some(Vec::new());
    }
    let format = if text { Format::Text } else { Format::Json };
    let mut decoder = Decoder::new(format, None, &[], None);
    decoder.redact_unparsable = p.redact_unparsable;
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line.context("cannot read input")?;
        if line.is_empty() {
            continue;
        }
        let d = decoder.decode(&line, None, (0, 0));
        if let Some(t) = &mut masker.trace {
            t.clear();
        }
        let changed = masker.mask(d.record);
        if diff {
            if let Some(t) = &masker.trace {
                if !t.is_empty() {
                    writeln!(out, "@@ record {}", n + 1)?;
                    for c in t {
                        writeln!(
                            out,
                            "   {}  <- {}",
                            if c.path.is_empty() {
                                "(record)"
                            } else {
                                &c.path
                            },
                            c.by
                        )?;
                    }
                }
            }
        }
        out.write_all(if changed { masker.output() } else { d.record })?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
