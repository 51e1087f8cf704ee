//! logferry: tails audit and job logs and ships them, batched and compressed, with
//! at-least-once delivery.

mod export_cmd;
mod export_out;
mod keys_cmd;
mod mask_cmd;
mod replay_cmd;
mod schema_cmd;
mod verify_cmd;

use logferry::{config, ops, pipeline};
use logferry_sink::redact;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "logferry",
    version,
    about = "Ship audit and job logs with at-least-once delivery"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Tail the configured sources and ship them until stopped (SIGTERM/SIGINT).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Read every matched file to its end, deliver everything, checkpoint and exit.
        #[arg(long)]
        once: bool,
    },
    /// Check a configuration file and print a summary; exit 2 listing every problem.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
        /// Also check that every sink is reachable and writable (exit 1 if one is not).
        #[arg(long)]
        check_sinks: bool,
    },
    /// Print records from a file (or stdin) masked by a profile, to try rules before rollout.
    Mask {
        #[arg(long, short)]
        config: PathBuf,
        /// The masking profile; may be left out when the configuration has only one.
        #[arg(long, short)]
        profile: Option<String>,
        /// Before each changed record, list the paths that changed and the rule or detector.
        #[arg(long)]
        diff: bool,
        /// Treat input lines as text (`{"message": ...}`) instead of JSON.
        #[arg(long)]
        text: bool,
        /// Records to mask, one per line; stdin when absent.
        input: Option<PathBuf>,
    },
    /// Decrypt objects an encrypted sink wrote, to stdout (or files in --out): NDJSON as shipped.
    /// Refuses tampered, truncated or reordered objects and shredded keys, with the reason.
    Decrypt {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        sink: String,
        /// Write each object to DIR/<name> instead of stdout (whole, or not at all).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Object paths (as given, or relative to the sink's directory).
        #[arg(required = true)]
        objects: Vec<String>,
    },
    /// The data keys in an encrypted sink's ledger.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Erase a tenant's hours: delete their data keys, which makes their objects unreadable,
    /// and store a signed receipt.
    Shred {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        sink: String,
        #[arg(long)]
        tenant: String,
        /// First hour, UTC, YYYY-MM-DDTHH.
        #[arg(long)]
        from: String,
        /// Last hour (inclusive), UTC, YYYY-MM-DDTHH.
        #[arg(long)]
        to: String,
        /// Who asked (written in the receipt).
        #[arg(long)]
        by: Option<String>,
        /// Shred without a [signing] key: the receipt is stored unsigned.
        #[arg(long)]
        unsigned: bool,
    },
    /// Check an integrity sink's archive against its signed digests: signatures, the digest
    /// chain, sequence gaps, the hash chain, every object's bytes, objects in no digest, and
    /// crash replays. Exits 0 only when the archive is clean.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        sink: String,
        /// Only digests that end after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only digests that start before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// The public key to check signatures with (PEM or 64 hex digits); the configured
        /// signing key's own when absent.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Judge the archive as of this time (RFC 3339): a stream whose newest digest is more
        /// than an hour older, and that no stop closed, is stale. Now when absent.
        #[arg(long)]
        as_of: Option<String>,
        /// An object that inflates past this size ("4GiB") is reported, its replays not counted.
        #[arg(long)]
        max_inflated: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read a time range of a sink's archive back as NDJSON: objects checked against the
    /// signed digests (integrity), decrypted (encryption), decompressed, records selected by
    /// their own time, tenants and conditions; a signed access receipt stored in the archive.
    Export {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        sink: String,
        #[command(flatten)]
        sel: export_cmd::Selection,
        /// The output format: ndjson, or parquet (with --out NAME.parquet).
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// The output file (compressed when its name ends in .gz or .zst); stdout when absent
        /// or "-".
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the summary as JSON (on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Ship a time range of a sink's archive into another sink (Azure Monitor, HTTP, another
    /// bucket) through the normal batch, spool and delivery path: read as `export` reads it,
    /// resumable, with a signed access receipt. Exits once every record is delivered or
    /// dead-lettered.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// The sink whose archive is read.
        #[arg(long)]
        from_sink: String,
        /// The sink the records are shipped to.
        #[arg(long)]
        to_sink: String,
        #[command(flatten)]
        sel: export_cmd::Selection,
    },
    /// Print the table a query engine reads a parquet sink's archive with: Athena (with
    /// partition projection), DuckDB, Spark or Synapse.
    Schema {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        sink: String,
        /// athena, duckdb, spark or synapse.
        #[arg(long, default_value = "athena")]
        dialect: String,
    },
    /// Write a new Ed25519 signing key pair (FILE and FILE.pub) for receipts.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Probe a running logferry (for exec probes in images without a shell or curl): GET the
    /// URL, print the body, exit 0 on 200 and 1 otherwise.
    Health {
        /// e.g. http://127.0.0.1:8686/readyz
        #[arg(long, default_value = "http://127.0.0.1:8686/healthz")]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List the tenant-hours that have a key, oldest first.
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        sink: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Loads a configuration, the one way every command does; exit 2 with its problems.
fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|problems| {
        eprint!("{}", redact::text(&problems.to_string()));
        ExitCode::from(2)
    })
}

/// Ends a one-shot command: 0, or 1 with its error.
fn finish(cmd: &str, res: anyhow::Result<bool>) -> ExitCode {
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("logferry {cmd}: {}", redact::text(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Health { url, timeout } => {
            match ops::probe(&url, std::time::Duration::from_secs(timeout)) {
                Ok((200, body)) => {
                    println!("{body}");
                    ExitCode::SUCCESS
                }
                Ok((status, body)) => {
                    println!("{status} {body}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("logferry health: {url}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Validate {
            config,
            check_sinks,
        } => match load(&config) {
            Ok(cfg) => {
                print!("{}", redact::text(&logferry::describe::summary(&cfg)));
                // Warnings, not errors: a folder may be mounted or opened up before the run.
                for s in &cfg.sources {
                    for (dir, culprit, e) in logferry::source::unreadable_folders(
                        &s.include,
                        &s.exclude,
                        s.follow_symlinks,
                    ) {
                        println!(
                            "warning: source {}: {} cannot be looked into by this process, {} ({e}; fix {}): its files will not be read",
                            s.name,
                            dir.display(),
                            logferry::private_fs::identity(),
                            culprit.display()
                        );
                    }
                }
                if !check_sinks {
                    return ExitCode::SUCCESS;
                }
                let rt = match runtime() {
                    Ok(rt) => rt,
                    Err(code) => return code,
                };
                let results = rt.block_on(pipeline::check_sinks(&cfg));
                println!("\nsink checks");
                let mut ok = true;
                for (name, kind, res) in results {
                    match res {
                        Ok(()) => println!("  {name:<12} {kind:<10} ok"),
                        Err(e) => {
                            ok = false;
                            println!(
                                "  {name:<12} {kind:<10} FAILED: {}",
                                redact::text(&e.to_string())
                            );
                        }
                    }
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(code) => code,
        },
        Cmd::Decrypt {
            config,
            sink,
            out,
            objects,
        } => match load(&config) {
            Ok(cfg) => finish(
                "decrypt",
                keys_cmd::decrypt(&cfg, &sink, &objects, out.as_deref()),
            ),
            Err(code) => code,
        },
        Cmd::Keys {
            cmd:
                KeysCmd::List {
                    config,
                    sink,
                    tenant,
                },
        } => match load(&config) {
            Ok(cfg) => finish(
                "keys list",
                keys_cmd::list(&cfg, &sink, tenant.as_deref()).map(|()| true),
            ),
            Err(code) => code,
        },
        Cmd::Shred {
            config,
            sink,
            tenant,
            from,
            to,
            by,
            unsigned,
        } => match load(&config) {
            Ok(cfg) => {
                let args = keys_cmd::ShredArgs {
                    sink: &sink,
                    tenant: &tenant,
                    from: &from,
                    to: &to,
                    by: by.as_deref(),
                    unsigned,
                };
                finish("shred", keys_cmd::shred(&cfg, &args).map(|()| true))
            }
            Err(code) => code,
        },
        Cmd::Verify {
            config,
            sink,
            from,
            to,
            public_key,
            as_of,
            max_inflated,
            json,
        } => match load(&config) {
            Ok(cfg) => {
                let args = verify_cmd::VerifyArgs {
                    sink: &sink,
                    from: from.as_deref(),
                    to: to.as_deref(),
                    public_key: public_key.as_deref(),
                    as_of: as_of.as_deref(),
                    max_inflated: max_inflated.as_deref(),
                    json,
                };
                finish("verify", verify_cmd::verify(&cfg, &args))
            }
            Err(code) => code,
        },
        Cmd::Export {
            config,
            sink,
            sel,
            format,
            out,
            json,
        } => match load(&config) {
            Ok(cfg) => {
                let args = export_cmd::ExportArgs {
                    sink,
                    sel,
                    format,
                    out,
                    json,
                };
                finish("export", export_cmd::run(&cfg, &args))
            }
            Err(code) => code,
        },
        Cmd::Replay {
            config,
            from_sink,
            to_sink,
            sel,
        } => match load(&config) {
            Ok(cfg) => {
                let args = replay_cmd::ReplayArgs {
                    from_sink,
                    to_sink,
                    sel,
                };
                finish("replay", replay_cmd::run(cfg, &args))
            }
            Err(code) => code,
        },
        Cmd::Keygen { out } => finish("keygen", keys_cmd::keygen(&out).map(|()| true)),
        Cmd::Schema {
            config,
            sink,
            dialect,
        } => match load(&config) {
            Ok(cfg) => finish(
                "schema",
                schema_cmd::print(&cfg, &sink, &dialect).map(|()| true),
            ),
            Err(code) => code,
        },
        Cmd::Mask {
            config,
            profile,
            diff,
            text,
            input,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match mask_cmd::run(&cfg, profile.as_deref(), diff, text, input.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("logferry mask: {}", redact::text(&format!("{e:#}")));
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Run { config, once } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            ops::init_logging(cfg.log_format, &cfg.log_level);
            ops::fatal::install_panic_hook();
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let res = rt.block_on(pipeline::run(cfg, once));
            // A thread stuck past the shutdown deadline must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_millis(300));
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "logferry failed");
                    eprintln!("logferry: {}", redact::text(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}
