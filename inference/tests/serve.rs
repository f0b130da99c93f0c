//! The binary as Kubernetes runs it: refuses a bad artifact, becomes ready,
//! and on SIGTERM turns unready, stops, and exits 0.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-inference");
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/model/placement.json");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 GET; `None` when the connection is refused.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn serve(model: &str, port: u16, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args([
            "serve",
            "--model",
            model,
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn refuses_to_serve_a_tampered_artifact() {
    let dir = std::env::temp_dir().join(format!("ferry-inference-tampered-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(MODEL).unwrap();
    std::fs::write(&path, text.replacen("\"rows\":670", "\"rows\":671", 1)).unwrap();
    let port = free_port();
    let output = serve(path.to_str().unwrap(), port, &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve"), "{stderr}");
    assert!(stderr.contains("corrupted or was edited"), "{stderr}");
    assert!(
        get(port, "/health").is_none(),
        "the port must never have opened"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigterm_turns_readiness_false_then_exits_zero() {
    let port = free_port();
    let mut child = serve(MODEL, port, &["--shutdown-delay", "1.5"]);
    wait_until("readiness", || {
        get(port, "/v2/health/ready").is_some_and(|(s, _)| s == 200)
    });

    sigterm(&child);
    // During the shutdown delay the server still answers, but not ready.
    wait_until("readiness to turn false", || {
        get(port, "/v2/health/ready").is_some_and(|(s, _)| s == 503)
    });
    assert_eq!(get(port, "/health").map(|(s, _)| s), Some(200));

    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(get(port, "/health").is_none(), "stopped accepting");
    let mut log = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.lines().any(|l| l.contains("readiness is false")),
        "{log}"
    );
}

#[test]
fn a_request_in_flight_at_sigterm_completes() {
    let port = free_port();
    let mut child = serve(MODEL, port, &[]);
    wait_until("readiness", || {
        get(port, "/v2/health/ready").is_some_and(|(s, _)| s == 200)
    });

    let body = r#"[{"gender":"F","ssc_p":80,"ssc_b":"Others","hsc_p":75,"hsc_b":"Others","hsc_s":"Commerce","degree_p":70,"degree_t":"Comm&Mgmt","etest_p":80,"mba_p":65,"specialisation":"Mkt&Fin","workex":"No"}]"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    let (first, rest) = body.split_at(40);
    stream.write_all(first.as_bytes()).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));

    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(rest.as_bytes()).unwrap();
    let mut response = String::new();
    BufReader::new(stream)
        .read_to_string(&mut response)
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"Placement_Probability\":"),
        "{response}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
