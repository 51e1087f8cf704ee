//! logferry: tails audit and job logs and ships them, batched and compressed, with
//! at-least-once delivery.

mod mask_cmd;

use logferry::{config, ops, pipeline};
use logferry_sinks::redact;

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
        } => match config::load(&config) {
            Ok(cfg) => {
                print!("{}", redact::text(&logferry::describe::summary(&cfg)));
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
                            println!("  {name:<12} {kind:<10} FAILED: {}", redact::text(&e));
                        }
                    }
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(problems) => {
                eprint!("{}", redact::text(&problems.to_string()));
                ExitCode::from(2)
            }
        },
        Cmd::Mask {
            config,
            profile,
            diff,
            text,
            input,
        } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(problems) => {
                    eprint!("{}", redact::text(&problems.to_string()));
                    return ExitCode::from(2);
                }
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
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(problems) => {
                    eprint!("{}", redact::text(&problems.to_string()));
                    return ExitCode::from(2);
                }
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
