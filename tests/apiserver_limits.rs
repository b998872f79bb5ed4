//! What one client may hold of the embedded API server, tried with raw sockets as a careless or
//! hostile client would: a connection that trickles its request, or says nothing, is cut off
//! within the head timeout; connections beyond the cap are closed as they arrive; watches
//! beyond the cap get 429 with Retry-After.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lxd_operator_tests::operator::{Mode, Operator};

/// Reads until the server closes the connection (or `limit` passes), and returns how long that
/// took and what came.
fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
        if started.elapsed() > limit {
            break;
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&received).into_owned(),
    )
}

/// The status line's code of a request sent on a new connection, read with its headers.
fn status_of(operator: &Operator, request: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(&operator.listen).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

fn plain_http(extra: &[&str]) -> Operator {
    let mut args = vec!["--insecure-http"];
    args.extend_from_slice(extra);
    Operator::start_with(Mode::Apiserver, &args)
}

#[test]
fn a_client_that_trickles_or_stays_silent_is_cut_off_and_connections_beyond_the_cap_are_closed() {
    let operator = plain_http(&[
        "--request-head-timeout-seconds",
        "2",
        "--max-connections",
        "3",
    ]);

    // A request head sent a byte every 200 ms, never finished, before any token.
    let mut trickling = TcpStream::connect(&operator.listen).unwrap();
    let started = Instant::now();
    let mut cut_off = None;
    for byte in b"GET /apis HTTP/1.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .iter()
        .cycle()
    {
        if trickling.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(15) {
            cut_off = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut probe = [0u8; 1];
        trickling.set_nonblocking(true).unwrap();
        let closed = matches!(trickling.read(&mut probe), Ok(0));
        trickling.set_nonblocking(false).unwrap();
        if closed {
            cut_off = Some(started.elapsed());
            break;
        }
    }
    let cut_off = cut_off.unwrap();
    assert!(
        cut_off >= Duration::from_millis(1500) && cut_off < Duration::from_secs(6),
        "a trickling client was cut off after {cut_off:?}, not at the 2 s head timeout"
    );

    // Connections that say nothing hold the three slots; the fourth is closed at once.
    let mut silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&operator.listen).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(&operator.listen).unwrap();
    let (waited, _) = until_closed(&mut fourth, Duration::from_secs(5));
    assert!(
        waited < Duration::from_secs(1),
        "the fourth connection was kept {waited:?}"
    );
    for stream in &mut silent {
        let (waited, received) = until_closed(stream, Duration::from_secs(10));
        assert!(
            waited < Duration::from_secs(6) && received.is_empty(),
            "a silent connection was kept {waited:?} ({received:?})"
        );
    }

    // Their slots are free again: a real client is served.
    let request = format!(
        "GET /version HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
        operator.token()
    );
    let (_, head) = status_of(&operator, &request);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn watches_beyond_the_cap_get_429_with_retry_after_until_one_ends() {
    let operator = plain_http(&["--max-watches", "2"]);
    let watch = format!(
        "GET /apis/lxd-operator.dev/v1alpha1/namespaces/default/lxdcontainers?watch=1 HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
        operator.token()
    );
    let (first, head) = status_of(&operator, &watch);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_second, head) = status_of(&operator, &watch);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, head) = status_of(&operator, &watch);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_third, head) = status_of(&operator, &watch);
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended watch's slot never came back: {head}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
