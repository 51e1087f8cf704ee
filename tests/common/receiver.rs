//! A customer's HTTP endpoint for the `http` sink's tests: plain HTTP or HTTPS (optionally
//! requiring client certificates), recording every request and the records it accepted, with
//! scripted faults in front: statuses, slow answers, connections reset mid-body.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Fault {
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, wait this long, then close without an answer (the client's timeout
    /// should have fired); nothing is stored.
    Slow(Duration),
    /// Read the head and a little of the body, then close the connection.
    ResetMidBody,
}

#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub method: String,
    pub target: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body as sent (compressed).
    pub body: Vec<u8>,
    pub status: u16,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub struct State {
    pub got: Vec<Got>,
    pub records: Vec<serde_json::Value>,
    pub script: VecDeque<Fault>,
    /// Bodies over this (as sent) get 413.
    pub max_body: Option<usize>,
    /// The Authorization header every request must carry (else 401).
    pub authorization: Option<String>,
}

pub struct Receiver {
    pub port: u16,
    pub state: Arc<Mutex<State>>,
    scheme: &'static str,
}

impl Receiver {
    pub fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let (st, tls) = (st.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let raw = tcp.try_clone().unwrap();
                    match tls {
                        Some(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                return;
                            };
                            let mut s = rustls::StreamOwned::new(conn, tcp);
                            serve(&st, &mut s, &raw);
                            s.conn.send_close_notify();
                            let _ = s.flush();
                        }
                        None => {
                            let mut s = tcp;
                            serve(&st, &mut s, &raw);
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            state,
            scheme,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub fn script(&self, f: Fault) {
        self.state.lock().unwrap().script.push_back(f);
    }

    pub fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    pub fn records(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().records.clone()
    }
}

fn serve(st: &Arc<Mutex<State>>, s: &mut (impl Read + Write), raw: &TcpStream) {
    // Head first: a reset must come before the body is read.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let fault = st.lock().unwrap().script.pop_front();
    if matches!(fault, Some(Fault::ResetMidBody)) {
        let _ = raw.shutdown(std::net::Shutdown::Both);
        record(st, &first, headers, body, 0);
        return;
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    while body.len() < len {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&tmp[..n]),
        }
    }
    let (status, extra, text) = match fault {
        Some(Fault::Slow(d)) => {
            record(st, &first, headers, body, 0);
            std::thread::sleep(d);
            return;
        }
        Some(Fault::Status {
            status,
            headers: h,
            body: b,
        }) => (status, h, b),
        _ => decide(st, &headers, &body),
    };
    if status / 100 == 2 && !first.starts_with("HEAD") && !first.starts_with("OPTIONS") {
        let recs = decode(&headers, &body);
        st.lock().unwrap().records.extend(recs);
    }
    record(st, &first, headers, body, status);
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {}\r\n", super::tls::expand_date(&v)));
    }
    out.push_str("\r\n");
    out.push_str(&text);
    let _ = s.write_all(out.as_bytes());
    let _ = s.flush();
}

fn decide(
    st: &Arc<Mutex<State>>,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let (auth, max) = {
        let s = st.lock().unwrap();
        (s.authorization.clone(), s.max_body)
    };
    if let Some(want) = auth {
        let got = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v);
        if got != Some(&want) {
            return (
                401,
                vec![("WWW-Authenticate".into(), "Basic realm=\"logs\"".into())],
                "{\"error\":\"bad credentials for the logs endpoint\"}".into(),
            );
        }
    }
    if max.is_some_and(|m| body.len() > m) {
        return (413, vec![], "{\"error\":\"payload too large\"}".into());
    }
    (202, vec![], "{\"accepted\":true}".into())
}

fn record(
    st: &Arc<Mutex<State>>,
    first: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
) {
    let mut parts = first.split_whitespace();
    let g = Got {
        at: Instant::now(),
        method: parts.next().unwrap_or_default().to_string(),
        target: parts.next().unwrap_or_default().to_string(),
        headers,
        body,
        status,
    };
    st.lock().unwrap().got.push(g);
}

/// The records in a body: decompressed by its Content-Encoding, then NDJSON, a JSON array, or
/// an object holding one (an envelope).
pub fn decode(headers: &[(String, String)], body: &[u8]) -> Vec<serde_json::Value> {
    let enc = headers
        .iter()
        .find(|(k, _)| k == "content-encoding")
        .map(|(_, v)| v.as_str());
    let raw = match enc {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::stream::decode_all(body).unwrap(),
        _ => body.to_vec(),
    };
    let text = String::from_utf8(raw).unwrap();
    let t = text.trim_start();
    if t.starts_with('[')
        || (t.starts_with('{') && serde_json::from_str::<serde_json::Value>(t).is_ok())
    {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        match v {
            serde_json::Value::Array(a) => return a,
            serde_json::Value::Object(o) => {
                if let Some(a) = o.values().find_map(|v| v.as_array()) {
                    return a.clone();
                }
                return vec![serde_json::Value::Object(o)];
            }
            _ => {}
        }
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
