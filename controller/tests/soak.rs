//! The soak: a benchmark, not part of the suite (`#[ignore]`; run it with
//! `bench/soak/run`). For FERRY_SOAK_MINUTES (30) the rollout fixture gets
//! a commit every FERRY_SOAK_EVERY seconds (30): good releases and bad ones
//! (a crash loop, a release that never becomes ready) mixed, every other
//! commit announced by a signed webhook delivery and the rest left to the
//! interval, with clients through the LoadBalancer all along. It prints
//! the failed requests, the controller's resident memory over time, the
//! latencies from commit to applied and to healthy or rolled back (from
//! the history's own timestamps), the reconcile durations the controller
//! measured, and the history's length and verification.
//!
//! It asserts only what must hold however fast the machine is: every
//! commit is in the history, the history verifies, and the last release
//! ends healthy.

mod common;
mod rollout;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{webhook_post, webhook_sign};
use ferry_lab_testkit::lab_enabled;
use k8s_openapi::jiff::Timestamp;
use rollout::{Traffic, healthy_release, register_images, release};
use serde_json::Value;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of `pid` in MiB: the whole (`VmRSS`), its anonymous
/// part (heap, stacks: what a leak grows) and its file-backed part (the
/// binary's pages, faulted in as code runs for the first time).
#[derive(Clone, Copy)]
struct Resident {
    total: f64,
    anonymous: f64,
    file: f64,
}

fn resident_mib(pid: u32) -> Option<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    };
    Some(Resident {
        total: field("VmRSS:")?,
        anonymous: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

fn seconds_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn entry_time(entry: &Value) -> Option<f64> {
    let t: Timestamp = entry["time"].as_str()?.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1000.0)
}

/// p50, p90, p99 and max of `values` (nearest rank), formatted.
fn percentiles(values: &[f64]) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "n={} p50 {:.1} s, p90 {:.1} s, p99 {:.1} s, max {:.1} s",
        v.len(),
        rank(0.5),
        rank(0.9),
        rank(0.99),
        v[v.len() - 1]
    )
}

/// Quantiles of a Prometheus histogram's cumulative buckets: the upper
/// bound of the bucket the quantile falls in.
fn histogram_quantiles(metrics: &str, name: &str) -> String {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let (mut sum, mut count) = (0.0, 0.0);
    for line in metrics.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if let Some(rest) = key.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let le = rest.trim_end_matches("\"}");
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            buckets.push((bound, value));
        } else if key == format!("{name}_sum") {
            sum = value;
        } else if key == format!("{name}_count") {
            count = value;
        }
    }
    if count == 0.0 {
        return format!("{name}: no samples");
    }
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * count)
            .map(|(b, _)| format!("≤ {b} s"))
            .unwrap_or_default()
    };
    format!(
        "{count} reconciles, mean {:.3} s, p50 {}, p90 {}, p99 {}",
        sum / count,
        quantile(0.5),
        quantile(0.9),
        quantile(0.99)
    )
}

struct Release {
    commit: String,
    bad: bool,
    webhook: bool,
    at: f64,
}

#[test]
#[ignore = "a 30-minute benchmark: bench/soak/run"]
fn soak() {
    if !lab_enabled("soak") {
        return;
    }
    let minutes = setting("FERRY_SOAK_MINUTES", 30);
    let every = Duration::from_secs(setting("FERRY_SOAK_EVERY", 30));
    register_images();
    let (lab, address, _first) = healthy_release("soak", "\n  interval: 20s");
    let pid = lab.controller_pid().expect("the controller runs");

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                if let Some(resident) = resident_mib(pid) {
                    samples.push((started.elapsed().as_secs_f64(), resident));
                }
                std::thread::sleep(Duration::from_secs(5));
            }
            samples
        })
    };
    let traffic = Traffic::start(address);

    let goods = ["ferry-lab-test/inference:2", "ferry-lab-test/inference:1"];
    let bads = ["ferry-lab-test/crash:1", "ferry-lab-test/never-ready:1"];
    let mut releases = Vec::new();
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut i = 0usize;
    while Instant::now() < end {
        let tick = Instant::now();
        // Every fourth release is bad, alternating the two kinds.
        let bad = i % 4 == 3;
        let image = if bad { bads[(i / 4) % 2] } else { goods[i % 2] };
        let commit = release(&lab, image, &format!("soak {i}: {image}"));
        let at = seconds_since_epoch(SystemTime::now());
        let webhook = i % 2 == 0;
        if webhook {
            // As GitHub's: each push names the commit it pushed.
            let body = format!(
                r#"{{"ref": "refs/heads/main", "after": "{commit}", "repository": {{"clone_url": "{}"}}, "pusher": {{"name": "soak"}}}}"#,
                lab.url()
            );
            let code = webhook_post(
                &lab,
                &format!("soak-{i}"),
                Some(&webhook_sign(&body)),
                &body,
            );
            assert_eq!(code, 202, "the webhook refused delivery soak-{i}");
        }
        eprintln!(
            "[{:>5.0} s] commit {i} {} {image} ({})",
            started.elapsed().as_secs_f64(),
            &commit[..8],
            if webhook { "webhook" } else { "interval" }
        );
        releases.push(Release {
            commit,
            bad,
            webhook,
            at,
        });
        i += 1;
        std::thread::sleep(every.saturating_sub(tick.elapsed()));
    }

    // The last commit settles: healthy, or rolled back (a release that
    // never becomes ready takes its health timeout, 300 s).
    let last = releases.last().expect("at least one commit");
    let revision = format!("main@sha1:{}", last.commit);
    let settle = Instant::now() + Duration::from_secs(480);
    loop {
        let history = lab.history("test");
        let settled = history.iter().any(|e| {
            if last.bad {
                e["result"] == "RolledBack"
                    && e["summary"].as_str().unwrap_or("").contains(&revision)
            } else {
                e["result"] == "Healthy" && e["revision"] == revision.as_str()
            }
        });
        if settled {
            break;
        }
        assert!(
            Instant::now() < settle,
            "the last release never settled: {:#}",
            lab.status("test")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let (ok, failed) = traffic.stop();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().expect("the sampler ran");
    let metrics = lab.metrics();

    let verified = lab.verified_history("test");
    let history = lab.history("test");
    let mut by_revision: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for entry in &history {
        if let Some(r) = entry["revision"].as_str() {
            by_revision.entry(r.to_owned()).or_default().push(entry);
        }
    }
    let mut results: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &history {
        *results
            .entry(entry["result"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let (mut applied_hook, mut applied_interval, mut healthy, mut rolled_back) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut missing = Vec::new();
    let mut never_applied = 0;
    for r in &releases {
        let Some(entries) = by_revision.get(&format!("main@sha1:{}", r.commit)) else {
            missing.push(r.commit.clone());
            continue;
        };
        let first_of = |result: &str| {
            entries
                .iter()
                .find(|e| e["result"] == result)
                .and_then(|e| entry_time(e))
        };
        match first_of("Applied") {
            Some(t) if r.webhook => applied_hook.push(t - r.at),
            Some(t) => applied_interval.push(t - r.at),
            None => never_applied += 1,
        }
        if let Some(t) = first_of("Healthy") {
            healthy.push(t - r.at);
        }
        if r.bad {
            // The rollback's verdict names the restored revision; its
            // summary names the failed one.
            let revision = format!("main@sha1:{}", r.commit);
            if let Some(t) = history
                .iter()
                .find(|e| {
                    e["result"] == "RolledBack"
                        && e["summary"].as_str().unwrap_or("").contains(&revision)
                })
                .and_then(entry_time)
            {
                rolled_back.push(t - r.at);
            }
        }
    }

    let good_count = releases.iter().filter(|r| !r.bad).count();
    println!("soak: {minutes} min, a commit every {} s", every.as_secs());
    println!(
        "commits: {} ({} good, {} bad; {} announced by webhook, {} left to the 20 s interval)",
        releases.len(),
        good_count,
        releases.len() - good_count,
        releases.iter().filter(|r| r.webhook).count(),
        releases.iter().filter(|r| !r.webhook).count()
    );
    println!("client requests through the LoadBalancer: {ok} ok, {failed} failed");
    println!(
        "commit -> applied, webhook:  {}",
        percentiles(&applied_hook)
    );
    println!(
        "commit -> applied, interval: {}",
        percentiles(&applied_interval)
    );
    println!("commit -> healthy (good):    {}", percentiles(&healthy));
    println!("commit -> rolled back (bad): {}", percentiles(&rolled_back));
    println!("commits never applied (superseded before their turn): {never_applied}");
    println!(
        "reconcile duration (controller's histogram): {}",
        histogram_quantiles(&metrics, "ferry_reconcile_duration_seconds")
    );
    let mean = |from: f64, to: f64| {
        let v: Vec<Resident> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .collect();
        let n = v.len() as f64;
        Resident {
            total: v.iter().map(|r| r.total).sum::<f64>() / n,
            anonymous: v.iter().map(|r| r.anonymous).sum::<f64>() / n,
            file: v.iter().map(|r| r.file).sum::<f64>() / n,
        }
    };
    let total = samples.last().map_or(0.0, |(t, _)| *t);
    let peak = samples.iter().map(|(_, r)| r.total).fold(0.0, f64::max);
    let (first, last) = (mean(0.0, 300.0), mean(total - 300.0, total + 1.0));
    println!(
        "controller resident memory: first 5 min {:.1} MiB, last 5 min {:.1} MiB, peak {peak:.1} MiB",
        first.total, last.total
    );
    println!(
        "  of which anonymous (heap, stacks) {:.1} -> {:.1} MiB, file-backed (the binary) {:.1} -> {:.1} MiB",
        first.anonymous, last.anonymous, first.file, last.file
    );
    let per_five = |part: fn(&Resident) -> f64| -> String {
        (0..)
            .map(|k| k as f64 * 300.0)
            .take_while(|from| *from < total)
            .map(|from| format!("{:.1}", part(&mean(from, from + 300.0))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("  every 5 min (MiB): {}", per_five(|r| r.total));
    println!("    anonymous:       {}", per_five(|r| r.anonymous));
    println!("    file-backed:     {}", per_five(|r| r.file));
    println!("history: {} entries, by result {results:?}", history.len());
    println!("history verify: {}", verified.trim());
    assert!(
        missing.is_empty(),
        "commits missing from the history: {missing:?}"
    );
}
