//! `GET /`: the status page for people. Server-rendered HTML, no script,
//! no build step: each Environment with its revision, health and age, its
//! recent history (rollbacks highlighted, commits linked where the
//! repository is on a web host) and whether its history's chain verifies.
//!
//! Guarantees: everything that comes from git, the cluster or a request is
//! HTML-escaped; links are made only for `https` repositories, from the
//! commit id (hex) alone.

use std::fmt::Write;

use kube::ResourceExt;

use crate::audit::chain::Entry;
use crate::crd::Environment;

/// `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The web address of a commit, for `https` (and `git@`) remotes of a web
/// host; `None` for anything else (file://, a bad id).
pub fn commit_url(repository: &str, commit: &str) -> Option<String> {
    let web = repository.starts_with("https://")
        || repository.starts_with("git@")
        || repository.starts_with("ssh://");
    let hex = commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit());
    if !web || !hex {
        return None;
    }
    let key = crate::serve::webhook::repository_key(repository);
    let (host, path) = key.split_once('/')?;
    (host.contains('.') && !path.is_empty())
        .then(|| format!("https://{host}/{path}/commit/{commit}"))
}

fn commit_of(revision: &str) -> &str {
    revision.split_once("@sha1:").map_or("", |(_, c)| c)
}

fn revision_cell(repository: &str, revision: Option<&str>) -> String {
    let Some(revision) = revision else {
        return "—".into();
    };
    let short = crate::reconcile::status::short_id(revision);
    match commit_url(repository, commit_of(revision)) {
        Some(url) => format!("<a href=\"{}\">{}</a>", escape(&url), escape(&short)),
        None => format!("<code>{}</code>", escape(&short)),
    }
}

fn age(created: i64, now: i64) -> String {
    let s = (now - created).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn condition(env: &Environment, kind: &str) -> (String, String) {
    env.status
        .as_ref()
        .and_then(|s| s.condition(kind))
        .map(|c| (c.status.clone(), c.message.clone()))
        .unwrap_or_else(|| ("Unknown".into(), String::new()))
}

/// The verification of one Environment's history: the head, or the break.
pub type Verification = Option<Result<String, String>>;

/// The page, for `environments` (each with its history's verification)
/// at time `now` (seconds since the epoch).
pub fn render(environments: &[(Environment, Verification)], now: i64) -> String {
    let mut html = String::from(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>ferry: environments</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1b1f24}",
        "table{border-collapse:collapse;margin:.5em 0 2em}td,th{padding:.3em .8em;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top}",
        ".True{color:#1a7f37;font-weight:600}.False{color:#cf222e;font-weight:600}.Unknown{color:#9a6700}",
        "tr.rollback td{background:#fff8c5}tr.failure td{background:#ffebe9}",
        ".badge{display:inline-block;padding:0 .5em;border-radius:1em;font-size:12px}.ok{background:#dafbe1}.broken{background:#ffebe9}",
        "code{font-size:13px}</style></head><body><h1>ferry</h1>",
    ));
    if environments.is_empty() {
        html.push_str("<p>No Environments yet.</p>");
    }
    let _ = write!(
        html,
        "<table><tr><th>environment</th><th>healthy</th><th>ready</th><th>running</th><th>git asks for</th><th>age</th><th>history</th></tr>"
    );
    for (env, verification) in environments {
        let status = env.status.clone().unwrap_or_default();
        let repository = &env.spec.source.url;
        let (healthy, _) = condition(env, "Healthy");
        let (ready, ready_message) = condition(env, "Ready");
        let created = env.creation_timestamp().map_or(now, |t| t.0.as_second());
        let badge = match verification {
            Some(Ok(head)) => format!(
                "<span class=\"badge ok\" title=\"{}\">chain verified</span>",
                escape(head)
            ),
            Some(Err(why)) => format!(
                "<span class=\"badge broken\" title=\"{}\">chain broken</span>",
                escape(why)
            ),
            None => "<span class=\"badge\">not checked</span>".into(),
        };
        let _ = write!(
            html,
            "<tr><td><a href=\"#{id}\">{ns}/{name}</a></td><td class=\"{h}\">{h}</td><td class=\"{r}\" title=\"{rm}\">{r}</td><td>{running}</td><td>{asked}</td><td>{age}</td><td>{badge}</td></tr>",
            id = escape(&format!(
                "{}-{}",
                env.namespace().unwrap_or_default(),
                env.name_any()
            )),
            ns = escape(&env.namespace().unwrap_or_default()),
            name = escape(&env.name_any()),
            h = escape(&healthy),
            r = escape(&ready),
            rm = escape(&ready_message),
            running = revision_cell(repository, status.last_applied_revision.as_deref()),
            asked = revision_cell(repository, status.last_attempted_revision.as_deref()),
            age = age(created, now),
        );
    }
    html.push_str("</table>");
    for (env, _) in environments {
        let status = env.status.clone().unwrap_or_default();
        let _ = write!(
            html,
            "<h2 id=\"{}\">{}/{}: recent history</h2><table><tr><th>#</th><th>time</th><th>result</th><th>revision</th><th>trigger</th><th>summary</th></tr>",
            escape(&format!(
                "{}-{}",
                env.namespace().unwrap_or_default(),
                env.name_any()
            )),
            escape(&env.namespace().unwrap_or_default()),
            escape(&env.name_any())
        );
        for entry in status.history.iter().rev() {
            html.push_str(&history_row(&env.spec.source.url, entry));
        }
        html.push_str("</table>");
    }
    html.push_str("<p>JSON: <a href=\"/api/v1/environments\">/api/v1/environments</a>, <a href=\"/api/v1/openapi.json\">OpenAPI</a></p></body></html>\n");
    html
}

fn history_row(repository: &str, entry: &Entry) -> String {
    let class = match entry.result.as_str() {
        "RolledBack" | "RollingBack" => "rollback",
        "Healthy" | "Applied" => "",
        _ => "failure",
    };
    format!(
        "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        entry.sequence,
        escape(&entry.time),
        escape(&entry.result),
        revision_cell(repository, entry.revision.as_deref()),
        escape(&entry.trigger),
        escape(&entry.summary)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(url: &str, history: serde_json::Value) -> Environment {
        serde_json::from_value(json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "dev", "namespace": "ferry-system", "creationTimestamp": "2027-01-01T00:00:00Z"},
            "spec": {"source": {"url": url, "path": "environments/dev"}},
            "status": {"lastAppliedRevision": "main@sha1:1f3c2ab0aaaaaaaaaaaa",
                       "conditions": [{"type": "Healthy", "status": "True", "reason": "Healthy", "message": "", "lastTransitionTime": "2027-01-01T00:00:00Z"}],
                       "history": history}}))
        .unwrap()
    }

    #[test]
    fn untrusted_text_is_escaped() {
        let history = json!([{"sequence": 3, "time": "t", "environment": "e", "trigger": "webhook: <script>alert(1)</script>",
                              "result": "RolledBack", "summary": "a \"quoted\" & <b>bold</b> claim", "previous": "p", "sha256": "h"}]);
        let page = render(
            &[(
                env("https://github.com/ferry-dev/ferry.git", history),
                Some(Err("entry 2 was changed".into())),
            )],
            1_798_761_600,
        );
        assert!(!page.contains("<script>alert(1)"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt; claim"));
        assert!(page.contains("class=\"rollback\""));
        assert!(page.contains("chain broken"));
        assert!(page.contains("<a href=\"https://github.com/ferry-dev/ferry/commit/1f3c2ab0aaaaaaaaaaaa\">main@1f3c2ab0aaaa</a>"));
    }

    #[test]
    fn commits_are_linked_only_for_web_repositories() {
        assert_eq!(
            commit_url("git@github.com:a/b.git", "abcdef1").as_deref(),
            Some("https://github.com/a/b/commit/abcdef1")
        );
        assert_eq!(commit_url("file:///srv/repo", "abcdef1"), None);
        assert_eq!(
            commit_url("https://github.com/a/b", "javascript:alert(1)"),
            None
        );
        assert_eq!(age(0, 90), "90s");
        assert_eq!(age(0, 3 * 86400), "3d");
    }
}
