//! Generates the reference workload of DESIGN.md: job records (~650 bytes, nested `lines[]` of
//! step input/output) and audit events (~350 bytes), 70/30, about a tenth carrying PII.
//!
//! `cargo run --release --example workload -- OUT_FILE MB [SEED]`

use std::io::{BufWriter, Write};

const FLOWS: &[&str] = &[
    "order-sync",
    "invoice-export",
    "crm-update",
    "stock-levels",
    "payroll-feed",
];
const STEPS: &[&str] = &["fetch", "map", "validate", "transform", "deliver", "notify"];
const EVENTS: &[&str] = &[
    "login",
    "logout",
    "config.change",
    "flow.deploy",
    "secret.read",
    "user.invite",
];

fn pii(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..5) {
        0 => format!("user{}@example.com", rng.u32(1000..99999)),
        1 => "4111 1111 1111 1111".to_string(),
        2 => format!(
            "10.{}.{}.{}",
            rng.u8(0..255),
            rng.u8(0..255),
            rng.u8(1..255)
        ),
        3 => format!(
            "AKIA{}",
            (0..16)
                .map(|_| rng.alphanumeric().to_ascii_uppercase())
                .collect::<String>()
        ),
        _ => format!("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{}.sig", rng.u32(..)),
    }
}

fn job(rng: &mut fastrand::Rng, n: u64, out: &mut String) {
    use std::fmt::Write as _;
    let with_pii = rng.u8(0..10) == 0;
    let _ = write!(
        out,
        r#"{{"ts":"2026-11-23T{:02}:{:02}:{:02}.{:03}Z","type":"job","job_id":"job-{n}","account_id":"acct-{}","flow":"{}","status":"{}","duration_ms":{},"lines":["#,
        rng.u8(0..24),
        rng.u8(0..60),
        rng.u8(0..60),
        rng.u16(0..1000),
        rng.u16(1..400),
        FLOWS[rng.usize(..FLOWS.len())],
        if rng.u8(0..20) == 0 {
            "failed"
        } else {
            "succeeded"
        },
        rng.u32(5..90_000)
    );
    for s in 0..3 {
        if s > 0 {
            out.push(',');
        }
        let note = if with_pii && s == 1 {
            pii(rng)
        } else {
            format!("batch {}", rng.u32(..))
        };
        let _ = write!(
            out,
            r#"{{"step":{s},"name":"{}","masked":{},"input":{{"orderId":"ORD-{}","items":{},"note":"{note}"}},"output":{{"status":"ok","rows":{}}}}}"#,
            STEPS[rng.usize(..STEPS.len())],
            rng.u8(0..8) == 0,
            rng.u32(100_000..999_999),
            rng.u8(1..50),
            rng.u16(..)
        );
    }
    let _ = write!(
        out,
        r#"],"context":{{"user_id":"u{}","region":"eu-west-1","trace":"{:016x}"}}}}"#,
        rng.u16(..),
        rng.u64(..)
    );
    out.push('\n');
}

fn audit(rng: &mut fastrand::Rng, n: u64, out: &mut String) {
    use std::fmt::Write as _;
    let actor = if rng.u8(0..10) == 0 {
        pii(rng)
    } else {
        format!("u{}", rng.u16(..))
    };
    let _ = writeln!(
        out,
        r#"{{"ts":"2026-11-23T{:02}:{:02}:{:02}Z","type":"audit","event_id":"ev-{n}","event":"{}","actor":"{actor}","account_id":"acct-{}","source_ip":"192.168.{}.{}","outcome":"{}","detail":{{"resource":"flow/{}","change":"v{}"}}}}"#,
        rng.u8(0..24),
        rng.u8(0..60),
        rng.u8(0..60),
        EVENTS[rng.usize(..EVENTS.len())],
        rng.u16(1..400),
        rng.u8(..),
        rng.u8(..),
        if rng.bool() { "success" } else { "denied" },
        rng.u32(..),
        rng.u16(..)
    );
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(mb)) = (args.get(1), args.get(2).and_then(|m| m.parse::<u64>().ok()))
    else {
        eprintln!("usage: workload OUT_FILE MB [SEED]");
        std::process::exit(2);
    };
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let target = mb << 20;
    let (mut written, mut n, mut line) = (0u64, 0u64, String::with_capacity(1024));
    while written < target {
        line.clear();
        if rng.u8(0..10) < 7 {
            job(&mut rng, n, &mut line)
        } else {
            audit(&mut rng, n, &mut line)
        }
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
        n += 1;
    }
    w.flush()?;
    eprintln!(
        "{n} records, {written} bytes, {} bytes/record",
        written / n.max(1)
    );
    Ok(())
}
