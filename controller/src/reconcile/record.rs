//! What a reconcile records: the history entries an outcome leads to
//! (pure), and the images and skipped commits they name.

use serde_json::Value;

use crate::crd::history::{Commit, Entry};
use crate::gate::observe::cap_marked;
use crate::source::cache::Revision;

use super::outcome::Outcome;
use super::status::short_id;

/// The most bytes an entry keeps of a commit's author, committer or title
/// (git holds whatever was committed; a history entry must stay small).
pub const NAME_LIMIT: usize = 256;
/// The most bytes an entry keeps of its summary.
pub const SUMMARY_LIMIT: usize = 1024;
/// What a cut text ends with, so nobody mistakes it for the whole.
pub const TRUNCATED: &str = "… [truncated]";

/// `text` in at most `limit` bytes, marked [`TRUNCATED`] when cut.
pub fn capped(text: &str, limit: usize) -> String {
    cap_marked(text, limit, TRUNCATED)
}

/// What every entry of one reconcile shares.
struct Recording<'a> {
    environment: &'a str,
    trigger: &'a str,
    time: &'a str,
    health_ms: Option<u64>,
}

impl Recording<'_> {
    fn entry(&self, revision: Option<String>, result: &str, summary: String) -> Entry {
        Entry {
            time: self.time.to_owned(),
            environment: self.environment.to_owned(),
            revision,
            trigger: self.trigger.to_owned(),
            result: result.to_owned(),
            summary: capped(&summary, SUMMARY_LIMIT),
            ..Entry::default()
        }
    }

    /// An entry about a verdict, with the time the gate took.
    fn verdict(&self, revision: &str, result: &str, summary: String) -> Entry {
        let mut e = self.entry(Some(revision.to_owned()), result, summary);
        if let Some(ms) = self.health_ms {
            e.durations.insert("health".into(), ms);
        }
        e
    }
}

/// The entries `outcome` records, in order: none for what is not worth
/// one (a release still being judged, a revision held, a sync that
/// changed nothing, the same failure again); a rollback is two steps, so
/// two entries from two reconciles (the failed verdict when it is
/// decided, then the healthy revision applied again). `last`: the newest
/// entry so far.
pub fn entries_for(
    outcome: &Outcome,
    environment: &str,
    trigger: &str,
    time: &str,
    health_ms: Option<u64>,
    last: Option<&Entry>,
) -> Vec<Entry> {
    let at = Recording {
        environment,
        trigger,
        time,
        health_ms,
    };
    match outcome {
        Outcome::Applied { judge: true, .. } => applied(outcome, &at),
        Outcome::Applied { .. }
        | Outcome::Progressing { .. }
        | Outcome::Held { .. }
        | Outcome::Suspended => Vec::new(),
        Outcome::Healthy { revision, verified } => {
            vec![at.verdict(revision, "Healthy", verified.clone().unwrap_or_default())]
        }
        Outcome::RollbackStarted { failed, reason, .. } => {
            vec![at.verdict(failed, "HealthCheckFailed", reason.clone())]
        }
        Outcome::RolledBack {
            healthy,
            failed,
            reason,
        } => vec![at.verdict(
            healthy,
            "RolledBack",
            format!("{failed} failed its health gate: {reason}"),
        )],
        Outcome::HealthFailed {
            revision, reason, ..
        } => vec![at.verdict(revision, "HealthCheckFailed", reason.clone())],
        Outcome::RollbackFailed {
            failed,
            reason,
            rollback,
        } => vec![at.verdict(
            failed,
            "RollbackFailed",
            format!("{reason}; the rollback failed: {rollback}"),
        )],
        Outcome::Failed {
            revision,
            reason,
            message,
            ..
        } => {
            let revision = revision.as_ref().map(|r| r.id());
            let repeated = last.is_some_and(|l| l.result == *reason && l.revision == revision);
            if repeated {
                return Vec::new();
            }
            let line = message.lines().next().unwrap_or("").chars().take(300);
            vec![at.entry(revision, reason, line.collect())]
        }
    }
}

/// An apply whose gate starts: the commits it superseded, the release it
/// replaced before its verdict, and the apply itself.
fn applied(outcome: &Outcome, at: &Recording<'_>) -> Vec<Entry> {
    let Outcome::Applied {
        revision,
        digest,
        applied,
        rollback_from,
        images,
        durations,
        superseded,
        preempted,
        ..
    } = outcome
    else {
        return Vec::new();
    };
    let commit_of = |r: &Revision| Commit {
        id: r.commit.clone(),
        author: capped(&format!("{} <{}>", r.author, r.email), NAME_LIMIT),
        committer: capped(&r.committer, NAME_LIMIT),
        title: capped(r.subject(), NAME_LIMIT),
    };
    // What was skipped comes first: it was committed before.
    let mut entries: Vec<Entry> = superseded
        .iter()
        .map(|r| {
            let never = format!(
                "never applied: {} came before it was tried",
                short_id(&revision.id())
            );
            let mut e = at.entry(Some(r.id()), "Superseded", never);
            e.commit = Some(commit_of(r));
            e
        })
        .collect();
    if let Some(replaced) = preempted {
        let why = format!(
            "replaced before its verdict by {}, a newer commit",
            short_id(&revision.id())
        );
        entries.push(at.entry(Some(replaced.clone()), "Superseded", why));
    }
    let counts = format!(
        "{} created, {} updated, {} pruned, {} released",
        applied.created, applied.updated, applied.pruned, applied.released
    );
    // The failed verdict was recorded when the rollback was decided.
    let (result, summary) = match rollback_from {
        Some((failed, _)) => (
            "RollingBack",
            format!("rolling back from {failed}: {counts}"),
        ),
        None => ("Applied", counts),
    };
    let mut e = at.entry(Some(revision.id()), result, summary);
    e.commit = Some(commit_of(revision));
    e.manifests_digest = Some(digest.clone());
    e.images = images.clone();
    e.durations = durations.clone();
    entries.push(e);
    entries
}

/// The skipped commits that the recent history does not already tell of
/// (after a force-push, what lies between the last commit tried and the
/// new head may include commits applied before).
pub fn unrecorded(skipped: Vec<Revision>, recent: &[Entry]) -> Vec<Revision> {
    skipped
        .into_iter()
        .filter(|r| {
            let id = r.id();
            !recent
                .iter()
                .any(|e| e.revision.as_deref() == Some(id.as_str()))
        })
        .collect()
}

/// Container images in rendered objects, sorted and unique.
pub fn images(objects: &[Value]) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "image"
                        && let Some(image) = v.as_str()
                    {
                        out.push(image.to_owned());
                    } else {
                        walk(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for object in objects {
        walk(object.get("spec").unwrap_or(&Value::Null), &mut out);
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    /// The review's reproduction: a 400 KB commit subject was copied into
    /// the history whole, and chunks grew toward the ConfigMap limit.
    #[test]
    fn what_git_holds_is_capped_in_the_history() {
        let mut big = revision("abc");
        big.message = "é".repeat(200_000);
        big.author = "a".repeat(10_000);
        let outcome = Outcome::Applied {
            revision: big,
            digest: "sha256:d".into(),
            applied: crate::cluster::apply::Applied::default(),
            judge: true,
            rollback_from: Some(("main@sha1:bad".into(), "x".repeat(5000))),
            retry: None,
            images: Vec::new(),
            durations: BTreeMap::new(),
            superseded: Vec::new(),
            preempted: None,
            placement: crate::crd::Placement {
                path: "environments/dev".into(),
                target_namespace: None,
            },
        };
        let entries = entries_for(&outcome, "ns/dev", "gate", "t", None, None);
        for e in &entries {
            assert!(e.summary.len() <= SUMMARY_LIMIT);
            if let Some(c) = &e.commit {
                assert!(c.title.len() <= NAME_LIMIT && c.title.ends_with(TRUNCATED));
                assert!(c.author.len() <= NAME_LIMIT && c.author.ends_with(TRUNCATED));
            }
        }
        let decided = Outcome::RollbackStarted {
            to: "main@sha1:good".into(),
            failed: "main@sha1:bad".into(),
            reason: "x".repeat(5000),
        };
        let verdict = entries_for(&decided, "ns/dev", "gate", "t", None, None);
        assert!(
            verdict[0].summary.len() <= SUMMARY_LIMIT && verdict[0].summary.ends_with(TRUNCATED),
            "{}",
            verdict[0].summary
        );
    }

    proptest! {
        #[test]
        fn capping_keeps_within_the_limit_and_marks_the_cut(text in "\\PC{0,300}", limit in 16usize..200) {
            let cut = capped(&text, limit);
            prop_assert!(cut.len() <= limit);
            prop_assert_eq!(cut == text, text.len() <= limit);
            if cut != text {
                prop_assert!(cut.ends_with(TRUNCATED));
            }
        }
    }

    #[test]
    fn images_are_found_in_pod_templates() {
        let objects = vec![
            serde_json::json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"image": "b:1"}, {"image": "a:2"}], "initContainers": [{"image": "a:2"}]}}}}),
            serde_json::json!({"kind": "ConfigMap", "data": {"image": "not-an-image"}}),
        ];
        assert_eq!(images(&objects), ["a:2", "b:1"]);
    }

    fn revision(commit: &str) -> Revision {
        Revision {
            reference: "main".into(),
            commit: commit.into(),
            author: "Ada".into(),
            email: "ada@example.com".into(),
            committer: "release-bot".into(),
            time: 0,
            message: "dev: release 0.1.2\n\nbody".into(),
        }
    }

    #[test]
    fn commits_the_history_already_tells_of_are_not_superseded() {
        let recent = vec![Entry {
            revision: Some("main@sha1:old".into()),
            result: "Healthy".into(),
            ..Entry::default()
        }];
        let kept = unrecorded(vec![revision("old"), revision("new")], &recent);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].commit, "new");
    }

    /// Each entry's result and revision, in order.
    fn results(entries: &[Entry]) -> Vec<(&str, Option<&str>)> {
        entries
            .iter()
            .map(|e| (e.result.as_str(), e.revision.as_deref()))
            .collect()
    }

    #[test]
    fn outcomes_record_what_an_auditor_asks_for() {
        use crate::cluster::apply::Applied;
        use crate::failure::FailureClass;
        let applied = |rollback_from: Option<(String, String)>| Outcome::Applied {
            revision: revision("abc"),
            digest: "sha256:d".into(),
            applied: Applied {
                created: 1,
                ..Applied::default()
            },
            judge: true,
            rollback_from,
            retry: None,
            images: vec!["img:1".into()],
            durations: BTreeMap::from([("plan".into(), 5)]),
            superseded: Vec::new(),
            preempted: None,
            placement: crate::crd::Placement {
                path: "environments/dev".into(),
                target_namespace: None,
            },
        };
        let e = entries_for(&applied(None), "ns/dev", "requested", "t", None, None);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].result.as_str(), e[0].trigger.as_str()),
            ("Applied", "requested")
        );
        let commit = e[0].commit.as_ref().unwrap();
        assert_eq!(
            (
                commit.author.as_str(),
                commit.committer.as_str(),
                commit.title.as_str()
            ),
            ("Ada <ada@example.com>", "release-bot", "dev: release 0.1.2")
        );
        assert_eq!(e[0].images, ["img:1"]);

        let mut skipping = applied(None);
        if let Outcome::Applied { superseded, .. } = &mut skipping {
            *superseded = vec![revision("s1"), revision("s2")];
        }
        let e = entries_for(&skipping, "ns/dev", "interval", "t", None, None);
        assert_eq!(
            results(&e),
            [
                ("Superseded", Some("main@sha1:s1")),
                ("Superseded", Some("main@sha1:s2")),
                ("Applied", Some("main@sha1:abc"))
            ]
        );
        assert!(e[0].summary.contains("never applied"), "{}", e[0].summary);
        assert_eq!(e[0].commit.as_ref().unwrap().id, "s1");

        let rollback = applied(Some(("main@sha1:bad".into(), "crash loop".into())));
        let e = entries_for(&rollback, "ns/dev", "gate", "t", Some(6000), None);
        let rolling: Vec<&str> = e.iter().map(|e| e.result.as_str()).collect();
        assert_eq!(rolling, ["RollingBack"]);
        let decided = Outcome::RollbackStarted {
            to: "main@sha1:good".into(),
            failed: "main@sha1:bad".into(),
            reason: "crash loop".into(),
        };
        let e = entries_for(&decided, "ns/dev", "gate", "t", Some(6000), None);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].result, "HealthCheckFailed");
        assert_eq!(e[0].revision.as_deref(), Some("main@sha1:bad"));
        assert_eq!(e[0].durations.get("health"), Some(&6000));

        let mut replacing = applied(None);
        if let Outcome::Applied { preempted, .. } = &mut replacing {
            *preempted = Some("main@sha1:slow".into());
        }
        let e = entries_for(&replacing, "ns/dev", "webhook: push", "t", None, None);
        assert_eq!(
            results(&e),
            [
                ("Superseded", Some("main@sha1:slow")),
                ("Applied", Some("main@sha1:abc"))
            ]
        );

        let progressing = Outcome::Progressing {
            message: "waiting".into(),
            http_streaks: vec![],
            http_attempted_at: vec![],
        };
        assert!(entries_for(&progressing, "ns/dev", "gate", "t", None, None).is_empty());
        let mut settled = applied(None);
        if let Outcome::Applied { judge, .. } = &mut settled {
            *judge = false;
        }
        assert!(entries_for(&settled, "ns/dev", "interval", "t", None, None).is_empty());

        let failure = Outcome::Failed {
            revision: None,
            class: FailureClass::Transient,
            reason: "FetchFailed",
            message: "unreachable".into(),
        };
        let first = entries_for(&failure, "ns/dev", "interval", "t", None, None);
        assert_eq!(first.len(), 1);
        assert!(
            entries_for(&failure, "ns/dev", "interval", "t", None, first.last()).is_empty(),
            "the same failure again is not a new entry"
        );
    }
}
