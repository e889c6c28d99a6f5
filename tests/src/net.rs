//! Deliberately simple network parts for the unhappy paths: a static HTTP file server (Helm
//! repository, K3s release page) that honours `Range` and can cut a response short, and a TCP
//! proxy that cuts a connection after N bytes (or calls a hook there, e.g. to SIGSTOP the
//! server), can slow uploads, and records whether the client then asked for a `Range`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One request the file server saw: path and `Range` header.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    files: Mutex<HashMap<String, Vec<u8>>>,
    seen: Mutex<Vec<Seen>>,
    /// Cut the next full response of this path after this many body bytes.
    cut: Mutex<Option<(String, usize)>>,
}

/// A static file server on a random loopback port, one thread per connection.
pub struct FileServer {
    pub addr: String,
    state: Arc<State>,
}

impl FileServer {
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        FileServer { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn put(&self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.state
            .files
            .lock()
            .expect("lock")
            .insert(format!("/{}", path.trim_start_matches('/')), bytes.into());
    }

    /// The next full (non-Range) response for `path` stops after `bytes` body bytes.
    pub fn cut_next(&self, path: &str, bytes: usize) {
        *self.state.cut.lock().expect("lock") =
            Some((format!("/{}", path.trim_start_matches('/')), bytes));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }
}

fn serve(conn: TcpStream, st: &State) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("range")
            {
                range = Some(v.trim().to_string());
            }
        }
        st.seen.lock().expect("lock").push(Seen {
            path: path.clone(),
            range: range.clone(),
        });
        let body = st.files.lock().expect("lock").get(&path).cloned();
        let Some(body) = body else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
            continue;
        };
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < body.len());
        let (status, slice) = match start {
            Some(s) => (
                format!(
                    "206 Partial Content\r\ncontent-range: bytes {s}-{}/{}",
                    body.len() - 1,
                    body.len()
                ),
                &body[s..],
            ),
            None => ("200 OK".to_string(), &body[..]),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\naccept-ranges: bytes\r\n\r\n",
            slice.len()
        );
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        let cut = {
            let mut c = st.cut.lock().expect("lock");
            match c.as_ref() {
                Some((p, n)) if *p == path && start.is_none() => {
                    let n = *n;
                    *c = None;
                    Some(n)
                }
                _ => None,
            }
        };
        if let Some(n) = cut {
            let _ = out.write_all(&slice[..n.min(slice.len())]);
            let _ = out.flush();
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        if out.write_all(slice).is_err() {
            return;
        }
    }
}

/// What a [`Proxy`] does once, while armed, more than its limit of bytes has passed.
#[derive(Clone)]
pub enum OnLimit {
    /// Cut the connection (both ways).
    Cut,
    /// Call this (e.g. SIGSTOP the server) and go on passing whatever comes.
    Call(Arc<dyn Fn() + Send + Sync>),
}

/// How a [`Proxy`] behaves.
#[derive(Clone)]
pub struct ProxyOptions {
    /// Bytes passed in the counted direction before `on_limit` (once per arming).
    pub limit: u64,
    /// Count bytes towards the server (uploads) instead of towards the client (downloads).
    pub towards_server: bool,
    pub on_limit: OnLimit,
    /// Pass at most this many bytes per second towards the server (a slow link).
    pub rate: Option<u64>,
}

/// A TCP proxy to `upstream` that, while armed, acts (cuts the connection, or calls a hook)
/// once a connection has passed more than `limit` bytes in one direction (then disarms); it
/// can slow uploads to a rate, and notes any `Range:` request header.
pub struct Proxy {
    pub addr: String,
    armed: Arc<AtomicBool>,
    saw_range: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
}

/// The proxy of the cut-connection tests: cuts the first large response after `limit` bytes.
pub type CuttingProxy = Proxy;

impl Proxy {
    /// A proxy that cuts a connection after `limit` bytes towards the client.
    pub fn start(upstream: &str, limit: u64) -> Proxy {
        Proxy::start_with(
            upstream,
            ProxyOptions {
                limit,
                towards_server: false,
                on_limit: OnLimit::Cut,
                rate: None,
            },
        )
    }

    pub fn start_with(upstream: &str, opts: ProxyOptions) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let proxy = Proxy {
            addr,
            armed: Arc::new(AtomicBool::new(false)),
            saw_range: Arc::new(AtomicBool::new(false)),
            hits: Arc::new(AtomicU64::new(0)),
        };
        let shared = Shared {
            opts,
            armed: proxy.armed.clone(),
            saw_range: proxy.saw_range.clone(),
            hits: proxy.hits.clone(),
        };
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c, s) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let up = shared.clone();
                std::thread::spawn(move || forward(c, s, true, up));
                let down = shared.clone();
                std::thread::spawn(move || forward(server, client, false, down));
            }
        });
        proxy
    }

    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    pub fn saw_range(&self) -> bool {
        self.saw_range.load(Ordering::SeqCst)
    }

    /// How many times the limit was reached while armed (connections cut, hooks called).
    pub fn cuts(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Shared {
    opts: ProxyOptions,
    armed: Arc<AtomicBool>,
    saw_range: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
}

/// Pass bytes from `from` to `to` (`up`: client to server), acting on the limit when this is
/// the counted direction.
fn forward(mut from: TcpStream, mut to: TcpStream, up: bool, sh: Shared) {
    let counted = up == sh.opts.towards_server;
    let mut buf = [0u8; 16 << 10];
    let (mut passed, mut moved) = (0u64, 0u64);
    let started = std::time::Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if up {
            let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            if text.contains("\r\nrange: bytes=") {
                sh.saw_range.store(true, Ordering::SeqCst);
            }
        }
        if counted {
            passed += n as u64;
            if passed > sh.opts.limit && sh.armed.swap(false, Ordering::SeqCst) {
                sh.hits.fetch_add(1, Ordering::SeqCst);
                match &sh.opts.on_limit {
                    OnLimit::Cut => {
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                        return;
                    }
                    OnLimit::Call(hook) => hook(),
                }
            }
        }
        moved += n as u64;
        if up && let Some(rate) = sh.opts.rate {
            // Sleep until `moved` bytes are due at `rate` bytes per second.
            let due = std::time::Duration::from_secs_f64(moved as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A bare HTTP/1.1 request without a client library: (status, body).
pub fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/vnd.oci.image.index.v1+json\r\n\r\n"
    )
    .expect("write request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
