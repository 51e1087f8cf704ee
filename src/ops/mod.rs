//! Operations: metrics, the HTTP endpoints, logging and signals.

pub mod api;
pub mod fatal;
pub mod health;
pub mod metrics;
pub mod progress;

use crate::config::LogFormat;

/// Sets up `tracing` on stderr. `RUST_LOG`, when set, overrides the configured level.
///
/// The configured level applies to logferry's own crates; dependencies log at WARN and
/// above (the Azure SDK prints request URLs at INFO, the TLS verifier certificate details).
/// Every line, whoever wrote it, passes through [`logferry_sink::redact`].
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives(level)));
    // Colours only for a person at a terminal: a container's log, a file or a pipe gets plain
    // text (escape codes in `docker logs` or a log store are noise). NO_COLOR is honoured.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(Redacted);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A level for logferry's crates and WARN for the rest; a full directive (with `=` or `,`)
/// is taken as written.
fn directives(level: &str) -> String {
    if level.contains(['=', ',']) {
        level.to_string()
    } else {
        format!("warn,logferry={level},logferry_sink={level},logferry_destinations={level},logferry_vault={level},logferry_integrity={level}")
    }
}

/// Stderr, a line at a time, redacted.
struct Redacted;

/// One formatted event, written out redacted when the formatter lets go of it.
struct Line(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Redacted {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

impl std::io::Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        use std::io::Write;
        let text = String::from_utf8_lossy(&self.0);
        let out = logferry_sink::redact::text(&text);
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// Why `logferry health` got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("only http:// URLs (the local API)")]
    NotHttp,
    #[error("cannot resolve {host}: {error}")]
    Resolve { host: String, error: std::io::Error },
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("not an HTTP answer")]
    NotAnAnswer,
}

/// A plain HTTP GET for `logferry health`: (status, body). Only `http://host:port/path`: the
/// probe talks to the local API.
pub fn probe(url: &str, timeout: std::time::Duration) -> Result<(u16, String), ProbeError> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url.strip_prefix("http://").ok_or(ProbeError::NotHttp)?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|error| ProbeError::Resolve {
            host: hostport.to_string(),
            error,
        })?
        .next()
        .ok_or_else(|| ProbeError::NoAddress(hostport.to_string()))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(ProbeError::Io)?;
    s.set_read_timeout(Some(timeout)).map_err(ProbeError::Io)?;
    s.set_write_timeout(Some(timeout)).map_err(ProbeError::Io)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(ProbeError::Io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(ProbeError::Io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(ProbeError::NotAnAnswer)?;
    Ok((status, body.to_string()))
}

/// Rate limit for a warning that would repeat every poll (a file that cannot be opened): the
/// first occurrence per key is logged, then at most one per `every`, with how many were held
/// back.
pub struct Repeats {
    every: std::time::Duration,
    seen: std::collections::HashMap<String, (std::time::Instant, u64)>,
    /// When old keys were last dropped: at most once per `every`, so that a call stays cheap
    /// with thousands of keys (a pass over the map on every call made a scan quadratic).
    pruned: std::time::Instant,
}

impl Repeats {
    pub fn new(every: std::time::Duration) -> Repeats {
        Repeats {
            every,
            seen: Default::default(),
            pruned: std::time::Instant::now(),
        }
    }

    /// `Some(suppressed since the last line)` when this occurrence should be logged.
    pub fn allow(&mut self, key: &str) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.seen.len() > 4096 && now.duration_since(self.pruned) >= self.every {
            let every = self.every;
            self.seen.retain(|_, (t, _)| now.duration_since(*t) < every);
            self.pruned = now;
        }
        match self.seen.get_mut(key) {
            Some((t, n)) if now.duration_since(*t) < self.every => {
                *n += 1;
                None
            }
            Some((t, n)) => {
                let held = *n;
                *t = now;
                *n = 0;
                Some(held)
            }
            None => {
                self.seen.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The signals logferry acts on, registered once so none is missed between waits.
pub struct Signals {
    pub term: tokio::signal::unix::Signal,
    pub int: tokio::signal::unix::Signal,
    pub hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// The next stop signal (SIGTERM or SIGINT), by its name.
pub async fn stop_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_logged_once_per_interval_with_the_count_held_back() {
        let mut r = Repeats::new(std::time::Duration::from_millis(50));
        assert_eq!(r.allow("open a"), Some(0));
        assert_eq!(r.allow("open a"), None);
        assert_eq!(r.allow("open a"), None);
        assert_eq!(r.allow("open b"), Some(0), "keys are apart");
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(r.allow("open a"), Some(2));
        assert_eq!(r.allow("open a"), None);
    }

    #[test]
    fn dependencies_log_at_warn_unless_told_otherwise() {
        assert_eq!(
            super::directives("info"),
            "warn,logferry=info,logferry_sink=info,logferry_destinations=info,logferry_vault=info,logferry_integrity=info"
        );
        assert_eq!(super::directives("debug,hyper=trace"), "debug,hyper=trace");
    }
}
