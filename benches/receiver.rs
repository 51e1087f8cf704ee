//! A minimal HTTP receiver for `scripts/bench.sh --http`: accepts every request with 204 and
//! throws the body away, keeping connections alive. Writes the number of body bytes received
//! so far to the file given as its second argument.
//!   cargo run --release --example receiver -- PORT TOTAL_FILE

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn serve(s: TcpStream, total: Arc<AtomicU64>, out: String) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let mut body = vec![0u8; 1 << 16];
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut left = len;
        while left > 0 {
            let n = r.read(&mut body[..left.min(1 << 16)])?;
            if n == 0 {
                return Ok(());
            }
            left -= n;
        }
        let t = total.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
        std::fs::write(&out, t.to_string())?;
        w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")?;
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = args.get(1).map_or("18686", String::as_str);
    let out = args.get(2).cloned().unwrap_or_else(|| "/dev/null".into());
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap_or(18686)))?;
    let total = Arc::new(AtomicU64::new(0));
    for conn in listener.incoming() {
        let conn = conn?;
        let (total, out) = (total.clone(), out.clone());
        std::thread::spawn(move || serve(conn, total, out));
    }
    Ok(())
}
