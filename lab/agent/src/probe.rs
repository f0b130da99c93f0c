//! Container probes: what a probe checks, how its results add up to a
//! verdict (the kubelet's thresholds), and running one check.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::Confinement;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

/// What one check does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Http {
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
    /// A probe this agent cannot run (gRPC, HTTPS, an unknown named port);
    /// it always fails, and the reason is reported.
    Unsupported(String),
}

/// A probe with its timing and thresholds, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(0) as u64)
}

/// Resolves a port that is a number or the name of a container port.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

impl ProbeSpec {
    /// Reads a Kubernetes probe with the API's defaults (period 10 s,
    /// timeout 1 s, thresholds 1 and 3).
    pub fn from_probe(probe: &Probe, container: &Container) -> Self {
        let action = if let Some(http) = &probe.http_get {
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                Action::Unsupported("HTTPS probes are not supported by the lab agent".into())
            } else {
                match resolve_port(&http.port, container) {
                    Ok(port) => Action::Http {
                        host: http.host.clone().filter(|h| !h.is_empty()),
                        port,
                        path: http.path.clone().unwrap_or_else(|| "/".into()),
                        headers: http
                            .http_headers
                            .iter()
                            .flatten()
                            .map(|h| (h.name.clone(), h.value.clone()))
                            .collect(),
                    },
                    Err(e) => Action::Unsupported(e),
                }
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            match resolve_port(&tcp.port, container) {
                Ok(port) => Action::Tcp {
                    host: tcp.host.clone().filter(|h| !h.is_empty()),
                    port,
                },
                Err(e) => Action::Unsupported(e),
            }
        } else if let Some(exec) = &probe.exec {
            Action::Exec {
                command: exec.command.clone().unwrap_or_default(),
            }
        } else {
            Action::Unsupported("gRPC and empty probes are not supported by the lab agent".into())
        };
        ProbeSpec {
            action,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// The running tally of one probe for one container start.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeState {
    pub spec: ProbeSpec,
    successes: u32,
    failures: u32,
    /// The verdict: `None` until a threshold is first reached.
    pub verdict: Option<bool>,
}

impl ProbeState {
    pub fn new(spec: ProbeSpec) -> Self {
        ProbeState {
            spec,
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// Adds one result; returns the verdict when it changes. A verdict
    /// needs `success_threshold` successes or `failure_threshold` failures
    /// in a row.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= self.spec.success_threshold {
            Some(true)
        } else if self.failures >= self.spec.failure_threshold {
            Some(false)
        } else {
            self.verdict
        };
        let changed = verdict != self.verdict;
        self.verdict = verdict;
        changed.then_some(verdict).flatten()
    }
}

/// Runs one check against a pod at `pod_ip`; an exec check runs confined
/// as the container is. Returns success, or the reason for failure.
pub async fn check(
    action: &Action,
    pod_ip: &str,
    confinement: &Confinement,
    timeout: Duration,
) -> Result<(), String> {
    let attempt = async {
        match action {
            Action::Http {
                host,
                port,
                path,
                headers,
            } => {
                let host = host.as_deref().unwrap_or(pod_ip);
                http_get(host, *port, path, headers).await
            }
            Action::Tcp { host, port } => {
                TcpStream::connect((host.as_deref().unwrap_or(pod_ip), *port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("dial tcp {pod_ip}:{port}: {e}"))
            }
            Action::Exec { command } => exec(confinement, command).await,
            Action::Unsupported(reason) => Err(reason.clone()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// A plain HTTP/1.1 GET; 200..400 is success, as for the kubelet.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let status = parse_status(&head[..n]).ok_or("malformed HTTP response")?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

async fn exec(confinement: &Confinement, command: &[String]) -> Result<(), String> {
    if command.is_empty() {
        return Err("exec probe has no command".into());
    }
    let mut nsenter = tokio::process::Command::new("nsenter");
    if let Some(before_exec) = confinement.before_exec().map_err(|e| e.to_string())? {
        // SAFETY: see Confinement::before_exec.
        unsafe {
            nsenter.pre_exec(before_exec);
        }
    }
    let status = nsenter
        .args(confinement.nsenter())
        .args(command)
        .current_dir(&confinement.rootfs)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("exec {:?}: {e}", command[0]))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("command {command:?} exited with {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};

    fn spec(success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            action: Action::Unsupported(String::new()),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn verdicts_follow_consecutive_thresholds() {
        let mut p = ProbeState::new(spec(2, 3));
        assert_eq!(p.record(true), None);
        assert_eq!(p.record(true), Some(true));
        assert_eq!(p.record(true), None, "no change, no new verdict");
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(true), None, "a success resets the failure run");
        for _ in 0..2 {
            assert_eq!(p.record(false), None);
        }
        assert_eq!(p.record(false), Some(false));
        assert_eq!(p.verdict, Some(false));
    }

    #[test]
    fn reads_defaults_and_named_ports() {
        let container = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 9696,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("/v2/health/ready".into()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        let spec = ProbeSpec::from_probe(&probe, &container);
        assert_eq!(
            spec.action,
            Action::Http {
                host: None,
                port: 9696,
                path: "/v2/health/ready".into(),
                headers: vec![]
            }
        );
        assert_eq!(
            (spec.period, spec.timeout),
            (Duration::from_secs(10), Duration::from_secs(1))
        );
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
        let unnamed = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("metrics".into()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        assert!(matches!(
            ProbeSpec::from_probe(&unnamed, &container).action,
            Action::Unsupported(_)
        ));
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0"), None);
    }

    #[tokio::test]
    async fn http_and_tcp_checks_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let http = Action::Http {
            host: None,
            port,
            path: "/".into(),
            headers: vec![],
        };
        let t = Duration::from_secs(2);
        let none = Confinement {
            netns: "none".into(),
            rootfs: "/".into(),
            working_dir: "/".into(),
            uid: 0,
            gid: 0,
            mounts: Vec::new(),
        };
        assert_eq!(check(&http, "127.0.0.1", &none, t).await, Ok(()));
        let err = check(&http, "127.0.0.1", &none, t).await.unwrap_err();
        assert!(err.contains("statuscode: 500"), "{err}");
        let closed = Action::Tcp { host: None, port };
        assert!(check(&closed, "127.0.0.1", &none, t).await.is_err());
    }
}
