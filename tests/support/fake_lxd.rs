//! A fake LXD on a unix socket, only for what a real cluster cannot produce on demand: a 500 in
//! the middle of an operation, a member that hangs (before or after the head of its answer), a
//! slow member. Everything else is tested against the real cluster. It speaks LXD's envelope
//! (`sync`, `async` with an operation, `error`) and answers each request on a connection of its
//! own (`Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lxd_operator::lxd::Endpoint;
use serde_json::{Value, json};

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status and JSON body, after `delay`.
    Json {
        status: u16,
        body: Value,
        delay: Duration,
    },
    /// Reads the request and never answers, the connection open: a hung member.
    Hang,
    /// Sends the head of a 200 answer and never its body.
    HeadThenHang,
}

impl Reply {
    /// The same answer, `delay` later: a slow member.
    pub fn after(self, delay: Duration) -> Reply {
        match self {
            Reply::Json { status, body, .. } => Reply::Json {
                status,
                body,
                delay,
            },
            other => other,
        }
    }
}

/// A synchronous answer carrying `metadata`.
pub fn sync(metadata: Value) -> Reply {
    Reply::Json {
        status: 200,
        body: json!({"type": "sync", "status": "Success", "status_code": 200, "operation": "",
            "error_code": 0, "error": "", "metadata": metadata}),
        delay: Duration::ZERO,
    }
}

/// An asynchronous answer: the operation `id` was created and runs.
pub fn operation_created(id: &str, description: &str, instance: &str) -> Reply {
    Reply::Json {
        status: 202,
        body: json!({"type": "async", "status": "Operation created", "status_code": 100,
            "operation": format!("/1.0/operations/{id}"), "error_code": 0, "error": "",
            "metadata": {"id": id, "class": "task", "description": description,
                "status": "Running", "status_code": 103, "location": "none",
                "resources": {"instances": [format!("/1.0/instances/{instance}")]}}}),
        delay: Duration::ZERO,
    }
}

/// An error answer, as LXD sends one.
pub fn error(code: u16, message: &str) -> Reply {
    Reply::Json {
        status: code,
        body: json!({"type": "error", "error": message, "error_code": code, "metadata": null}),
        delay: Duration::ZERO,
    }
}

/// A running fake LXD; every request it got is kept as `METHOD /path?query`.
#[derive(Debug)]
pub struct FakeLxd {
    socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl FakeLxd {
    /// Serves until the process ends, answering each request with what `answer` makes of
    /// its method and path (without the query).
    pub fn start(answer: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> FakeLxd {
        let dir = tempfile::tempdir().expect("temporary folder");
        let socket = dir.path().join("unix.socket");
        let listener = UnixListener::bind(&socket).expect("bind the fake LXD's socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (answer, seen) = (answer.clone(), seen.clone());
                std::thread::spawn(move || serve(stream, answer.as_ref(), &seen));
            }
        });
        FakeLxd {
            socket,
            requests,
            _dir: dir,
        }
    }

    /// Its endpoint, for an [`lxd_operator::lxd::LxdClient`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::parse(&format!("unix://{}", self.socket.display())).expect("unix endpoint")
    }

    /// The requests so far whose `METHOD /path?query` starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<String> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|request| request.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn serve(
    stream: UnixStream,
    answer: &(dyn Fn(&str, &str) -> Reply + Sync),
    seen: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    if let Ok(mut seen) = seen.lock() {
        seen.push(format!("{method} {path}"));
    }
    let mut stream = reader.into_inner();
    match answer(&method, path.split('?').next().unwrap_or_default()) {
        Reply::Json {
            status,
            body,
            delay,
        } => {
            std::thread::sleep(delay);
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Reply::Hang => std::thread::sleep(Duration::from_secs(3600)),
        Reply::HeadThenHang => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
            );
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
