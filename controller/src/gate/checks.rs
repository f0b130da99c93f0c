//! The health gate's HTTP checks: pure rules for a response, a streak and
//! a verdict, and one attempt per check (the I/O edge, kept small).
//!
//! Guarantees: HTTP checks never block: each reconcile makes one attempt
//! per check and keeps streaks in the status, so a restarted controller
//! goes on counting where it stopped.

use std::time::Duration;

use serde_json::Value;

use crate::crd::HttpCheck;
use crate::source::cache::redact;

use super::health::{Evidence, Verdict};
use super::observe::cap;

/// Consecutive failures of one HTTP check that fail the release.
pub const HTTP_FAILURES: i32 = 3;

/// The result of one attempt of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub ok: bool,
    /// `GET http://10.244.1.5:9696/v2/health/ready: 503` on failure.
    pub detail: String,
}

/// The next streak (positive: consecutive successes, negative:
/// consecutive failures) after an attempt.
pub fn next_streak(streak: i32, ok: bool) -> i32 {
    match (ok, streak) {
        (true, s) if s > 0 => s.saturating_add(1),
        (true, _) => 1,
        (false, s) if s < 0 => s.saturating_sub(1),
        (false, _) => -1,
    }
}

/// The state of all checks from their streaks: passed, failed (with the
/// failing check's detail) or waiting (how far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checks {
    Passed,
    Waiting(String),
    Failed(String),
}

/// Judges the streaks of `checks` (with the last attempts' details).
pub fn judge_checks(checks: &[HttpCheck], streaks: &[i32], attempts: &[Attempt]) -> Checks {
    let mut waiting = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        let streak = streaks.get(i).copied().unwrap_or(0);
        if streak <= -HTTP_FAILURES {
            let detail = attempts
                .get(i)
                .map(|a| a.detail.clone())
                .unwrap_or_default();
            return Checks::Failed(format!(
                "HTTP check {} failed {} times in a row: {detail}",
                redact(&check.url),
                streak.unsigned_abs()
            ));
        }
        let needed = i32::try_from(check.success_threshold.max(1)).unwrap_or(i32::MAX);
        if streak < needed {
            waiting.push(format!(
                "{}: {} of {needed} successes",
                redact(&check.url),
                streak.max(0)
            ));
        }
    }
    if waiting.is_empty() {
        Checks::Passed
    } else {
        Checks::Waiting(waiting.join("; "))
    }
}

/// The verdict once the checks are counted: what the rollout rules found
/// healthy is healthy only when every check passed; checks still waiting
/// after `timeout` (counted from `elapsed` seconds of judging) fail it.
pub fn with_checks(checks: Checks, elapsed: i64, timeout: Duration) -> Verdict {
    match checks {
        Checks::Passed => Verdict::Healthy,
        Checks::Waiting(what)
            if elapsed >= i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX) =>
        {
            Verdict::Failed(Evidence {
                object: "HTTP checks".into(),
                summary: format!("not passed within {} s: {what}", timeout.as_secs()),
                pods: Vec::new(),
            })
        }
        Checks::Waiting(what) => Verdict::Progressing(vec![what]),
        Checks::Failed(why) => Verdict::Failed(Evidence {
            object: "HTTP checks".into(),
            summary: why,
            pods: Vec::new(),
        }),
    }
}

/// The most of a response body a check reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A response's body, read up to [`BODY_LIMIT`]: a larger one fails the
/// attempt instead of being held.
pub async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > BODY_LIMIT => {
                return Err(format!(
                    "the body is over {} KiB; point the check at an endpoint that answers less, or leave out expectJSON and check the status only",
                    BODY_LIMIT / 1024
                ));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("the body broke off: {}", e.without_url())),
        }
    }
}

/// Whether a response passes a check.
pub fn response_passes(check: &HttpCheck, status: u16, body: &[u8]) -> Result<(), String> {
    if status != check.expect_status {
        return Err(format!("status {status}, expected {}", check.expect_status));
    }
    if let Some(expect) = &check.expect_json {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let found = value.pointer(&expect.pointer);
        if found != Some(&expect.equals) {
            return Err(format!(
                "{} is {}, expected {}",
                expect.pointer,
                found.map_or("missing".to_owned(), |v| cap(&v.to_string(), 200)),
                expect.equals
            ));
        }
    }
    Ok(())
}

/// The URLs one check is made against: one per pod IP when the URL names
/// `{{.podIP}}`, else the URL itself.
pub fn targets(check: &HttpCheck, pod_ips: &[String]) -> Vec<String> {
    if check.url.contains("{{.podIP}}") {
        pod_ips.iter().map(|ip| pod_url(&check.url, ip)).collect()
    } else {
        vec![check.url.clone()]
    }
}

/// `url` with `{{.podIP}}` replaced by `ip` (an IPv6 address in brackets,
/// as a URL needs it).
pub fn pod_url(url: &str, ip: &str) -> String {
    let host = if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    url.replace("{{.podIP}}", &host)
}

/// Makes one attempt of `check` against each of its targets; it passes
/// when every target passes (and there is at least one).
pub async fn attempt(client: &reqwest::Client, check: &HttpCheck, pod_ips: &[String]) -> Attempt {
    let urls = targets(check, pod_ips);
    if urls.is_empty() {
        return Attempt {
            ok: false,
            detail: format!(
                "{}: no pod of the new revision has an IP yet",
                redact(&check.url)
            ),
        };
    }
    for url in urls {
        let method = reqwest::Method::from_bytes(check.method.to_ascii_uppercase().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut request = client
            .request(method.clone(), &url)
            .timeout(Duration::from_secs(5));
        for (k, v) in &check.headers {
            request = request.header(k, v);
        }
        if let Some(body) = &check.body {
            request = request.body(body.clone());
        }
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Only expectJSON looks at the body.
                let body = match &check.expect_json {
                    Some(_) => read_body(response).await,
                    None => Ok(Vec::new()),
                };
                body.and_then(|body| response_passes(check, status, &body))
            }
            // Without the URL, which may carry credentials.
            Err(e) => Err(format!("no answer: {}", e.without_url())),
        };
        if let Err(why) = outcome {
            return Attempt {
                ok: false,
                detail: format!("{method} {}: {why}", redact(&url)),
            };
        }
    }
    Attempt {
        ok: true,
        detail: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ExpectJson;
    use serde_json::json;

    fn check(url: &str) -> HttpCheck {
        serde_json::from_value(json!({"url": url})).unwrap()
    }

    #[test]
    fn streaks_count_runs_of_successes_and_failures() {
        assert_eq!(next_streak(0, true), 1);
        assert_eq!(next_streak(2, true), 3);
        assert_eq!(next_streak(2, false), -1);
        assert_eq!(next_streak(-2, false), -3);
        assert_eq!(next_streak(-2, true), 1);
    }

    #[test]
    fn checks_pass_after_their_threshold_and_fail_after_three_failures() {
        let checks = [check("http://a/ready"), check("http://b/predict")];
        let ok = Attempt {
            ok: true,
            detail: String::new(),
        };
        let bad = Attempt {
            ok: false,
            detail: "POST http://b/predict: status 500, expected 200".into(),
        };
        assert_eq!(
            judge_checks(&checks, &[3, 3], &[ok.clone(), ok.clone()]),
            Checks::Passed
        );
        assert_eq!(
            judge_checks(&checks, &[3, 1], &[ok.clone(), ok.clone()]),
            Checks::Waiting("http://b/predict: 1 of 3 successes".into())
        );
        let Checks::Failed(why) = judge_checks(&checks, &[3, -3], &[ok, bad]) else {
            panic!()
        };
        assert!(
            why.contains("http://b/predict failed 3 times in a row") && why.contains("status 500"),
            "{why}"
        );
    }

    #[test]
    fn responses_are_judged_by_status_and_json() {
        let mut c = check("http://x");
        assert!(response_passes(&c, 200, b"").is_ok());
        assert!(response_passes(&c, 503, b"").is_err());
        c.expect_json = Some(ExpectJson {
            pointer: "/status".into(),
            equals: json!("healthy"),
        });
        assert!(response_passes(&c, 200, br#"{"status":"healthy"}"#).is_ok());
        assert!(
            response_passes(&c, 200, br#"{"status":"sick"}"#)
                .unwrap_err()
                .contains("expected \"healthy\"")
        );
        assert!(response_passes(&c, 200, b"<html>").is_err());
    }

    #[test]
    fn pod_ip_urls_fan_out_to_every_new_pod() {
        let c = check("http://{{.podIP}}:9696/v2/health/ready");
        assert_eq!(
            targets(&c, &["10.244.0.2".into(), "10.244.1.3".into()]),
            [
                "http://10.244.0.2:9696/v2/health/ready",
                "http://10.244.1.3:9696/v2/health/ready"
            ]
        );
        assert_eq!(
            targets(&check("http://svc/ready"), &[]),
            ["http://svc/ready"]
        );
    }

    #[test]
    fn checks_waiting_past_the_deadline_fail_the_release() {
        let timeout = Duration::from_secs(60);
        assert_eq!(with_checks(Checks::Passed, 0, timeout), Verdict::Healthy);
        assert_eq!(
            with_checks(Checks::Waiting("a: 1 of 3".into()), 59, timeout),
            Verdict::Progressing(vec!["a: 1 of 3".into()])
        );
        let Verdict::Failed(late) = with_checks(Checks::Waiting("a: 1 of 3".into()), 60, timeout)
        else {
            panic!("past the deadline");
        };
        assert_eq!(late.summary, "not passed within 60 s: a: 1 of 3");
        assert!(matches!(
            with_checks(Checks::Failed("503".into()), 0, timeout),
            Verdict::Failed(Evidence { summary, .. }) if summary == "503"
        ));
    }

    /// Streaks come back from the status, which is not ours alone to write.
    #[test]
    fn any_streak_read_back_is_judged_without_overflow() {
        let checks = [check("http://a/")];
        let failed = judge_checks(&checks, &[i32::MIN], &[]);
        assert_eq!(
            failed,
            Checks::Failed("HTTP check http://a/ failed 2147483648 times in a row: ".into())
        );
        assert_eq!(judge_checks(&checks, &[i32::MAX], &[]), Checks::Passed);
    }

    #[test]
    fn ipv6_pods_are_addressed_in_brackets_and_credentials_never_shown() {
        let per_pod = check("http://{{.podIP}}:9696/ready");
        assert_eq!(
            targets(&per_pod, &["10.0.0.1".into(), "fd00::5".into()]),
            ["http://10.0.0.1:9696/ready", "http://[fd00::5]:9696/ready"]
        );
        let secret = check("http://bot:s3cr3t@svc/ready");
        let waiting = judge_checks(std::slice::from_ref(&secret), &[1], &[]);
        let failed = judge_checks(std::slice::from_ref(&secret), &[-3], &[]);
        for said in [format!("{waiting:?}"), format!("{failed:?}")] {
            assert!(
                !said.contains("s3cr3t") && said.contains("***@svc"),
                "{said}"
            );
        }
    }
}
