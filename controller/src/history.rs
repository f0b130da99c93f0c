//! The audit history: one entry per thing that happened to an Environment
//! (a revision applied, a verdict of its health gate, a rollback, a
//! failure), each holding the previous entry's sha256 and its own over a
//! canonical form, so a changed, removed or reordered entry breaks the
//! chain. Pure: entries, canonical form, sealing, verification.
//!
//! Guarantees: [`verify`] recomputes every hash and names the first entry
//! that does not fit (changed, missing, out of order, or not linked to the
//! one before it); the canonical form is compact JSON with sorted keys and
//! without the entry's own hash, so any reader can recompute it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::status::Outcome;

/// The `previous` of the first entry.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Who made a commit, and its title.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    pub id: String,
    pub author: String,
    pub committer: String,
    pub title: String,
}

/// One entry of the history.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// 1, 2, 3, ... per Environment, without gaps.
    pub sequence: u64,
    /// RFC 3339.
    pub time: String,
    /// `namespace/name`.
    pub environment: String,
    /// `ref@sha1:commit` the entry is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_digest: Option<String>,
    /// Container images of what was applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// What started it: `interval`, `requested` (the requested-at
    /// annotation), `retry` (ferry.dev/retry), `spec` (the Environment
    /// changed), `start` (the controller started), `gate` (the health gate).
    pub trigger: String,
    /// `Applied`, `Healthy`, `HealthCheckFailed`, `RolledBack`,
    /// `RollbackFailed`, or a failure reason (`RenderFailed`, ...).
    pub result: String,
    /// Milliseconds per phase (`fetch`, `render`, `plan`, `apply`, `health`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub durations: BTreeMap<String, u64>,
    /// One line: what happened, or the evidence of a failure.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// sha256 of the entry before (or [`GENESIS`]).
    pub previous: String,
    /// sha256 of this entry's canonical form.
    pub sha256: String,
}

/// The canonical form: compact JSON, keys sorted, without `sha256`.
pub fn canonical(entry: &Entry) -> String {
    let mut value = serde_json::to_value(entry).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("sha256");
    }
    // serde_json's maps are sorted by key (no preserve_order feature).
    serde_json::to_string(&value).unwrap_or_default()
}

/// sha256 of the canonical form, as `sha256:<hex>`.
pub fn hash(entry: &Entry) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical(entry).as_bytes()))
    )
}

/// Links `entry` after `last` (or first): sets its sequence, previous and
/// own hash.
pub fn seal(mut entry: Entry, last: Option<&Entry>) -> Entry {
    entry.sequence = last.map_or(1, |l| l.sequence + 1);
    entry.previous = last.map_or_else(|| GENESIS.to_owned(), |l| l.sha256.clone());
    entry.sha256 = hash(&entry);
    entry
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("entry {sequence} was changed: its content hashes to {actual}, it records {recorded}")]
    Changed {
        sequence: u64,
        recorded: String,
        actual: String,
    },
    #[error("entries {from} to {to} are missing (removed, or a chunk of the history was deleted)")]
    Missing { from: u64, to: u64 },
    #[error("entry {sequence} is out of order: expected entry {expected} here")]
    Reordered { sequence: u64, expected: u64 },
    #[error(
        "entry {sequence} does not follow the entry before it: it records previous {recorded}, the entry before hashes to {actual}"
    )]
    Unlinked {
        sequence: u64,
        recorded: String,
        actual: String,
    },
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: usize,
    /// sha256 of the last entry (the chain head), [`GENESIS`] when empty.
    pub head: String,
}

/// Verifies a history read in order (oldest first). `first` is the
/// sequence the history should start with (1 unless older entries were
/// deliberately rotated away).
pub fn verify(entries: &[Entry], first: u64) -> Result<Verified, Break> {
    let mut previous: Option<&Entry> = None;
    for (expected, entry) in (first..).zip(entries) {
        let actual = hash(entry);
        if actual != entry.sha256 {
            return Err(Break::Changed {
                sequence: entry.sequence,
                recorded: entry.sha256.clone(),
                actual,
            });
        }
        if entry.sequence > expected {
            return Err(Break::Missing {
                from: expected,
                to: entry.sequence - 1,
            });
        }
        if entry.sequence < expected {
            return Err(Break::Reordered {
                sequence: entry.sequence,
                expected,
            });
        }
        let linked_to = previous.map_or_else(
            || (expected == 1).then(|| GENESIS.to_owned()),
            |p| Some(p.sha256.clone()),
        );
        if let Some(linked_to) = linked_to
            && entry.previous != linked_to
        {
            return Err(Break::Unlinked {
                sequence: entry.sequence,
                recorded: entry.previous.clone(),
                actual: linked_to,
            });
        }
        previous = Some(entry);
    }
    Ok(Verified {
        entries: entries.len(),
        head: previous.map_or_else(|| GENESIS.to_owned(), |p| p.sha256.clone()),
    })
}

/// The entries `outcome` records, in order: none for what is not worth
/// one (a release still being judged, a revision held, a sync that
/// changed nothing, the same failure again), two for a rollback (the
/// failed verdict, then the healthy revision applied again). `last`: the
/// newest entry so far.
pub fn entries_for(
    outcome: &Outcome,
    environment: &str,
    trigger: &str,
    time: &str,
    health_ms: Option<u64>,
    last: Option<&Entry>,
) -> Vec<Entry> {
    let base = |revision: Option<String>, result: &str, summary: String| Entry {
        time: time.to_owned(),
        environment: environment.to_owned(),
        revision,
        trigger: trigger.to_owned(),
        result: result.to_owned(),
        summary,
        ..Entry::default()
    };
    let with_health = |mut e: Entry| {
        if let Some(ms) = health_ms {
            e.durations.insert("health".into(), ms);
        }
        e
    };
    match outcome {
        Outcome::Applied {
            revision,
            digest,
            applied,
            judge: true,
            rollback_from,
            images,
            durations,
            superseded,
            ..
        } => {
            let commit_of = |r: &crate::source::Revision| Commit {
                id: r.commit.clone(),
                author: format!("{} <{}>", r.author, r.email),
                committer: r.committer.clone(),
                title: r.subject().to_owned(),
            };
            // What was skipped comes first: it was committed before.
            let mut skipped: Vec<Entry> = superseded
                .iter()
                .map(|r| {
                    let mut e = base(
                        Some(r.id()),
                        "Superseded",
                        format!(
                            "never applied: {} came before it was tried",
                            crate::status::short_id(&revision.id())
                        ),
                    );
                    e.commit = Some(commit_of(r));
                    e
                })
                .collect();
            let counts = format!(
                "{} created, {} updated, {} pruned, {} released",
                applied.created, applied.updated, applied.pruned, applied.released
            );
            let mut entries = Vec::new();
            entries.append(&mut skipped);
            let (result, summary) = match rollback_from {
                Some((failed, why)) => {
                    entries.push(with_health(base(
                        Some(failed.clone()),
                        "HealthCheckFailed",
                        why.clone(),
                    )));
                    (
                        "RollingBack",
                        format!("rolling back from {failed}: {counts}"),
                    )
                }
                None => ("Applied", counts),
            };
            let mut e = base(Some(revision.id()), result, summary);
            e.commit = Some(commit_of(revision));
            e.manifests_digest = Some(digest.clone());
            e.images = images.clone();
            e.durations = durations.clone();
            entries.push(e);
            entries
        }
        Outcome::Applied { .. }
        | Outcome::Progressing { .. }
        | Outcome::Held { .. }
        | Outcome::Suspended => Vec::new(),
        Outcome::Healthy { revision } => vec![with_health(base(
            Some(revision.clone()),
            "Healthy",
            String::new(),
        ))],
        Outcome::RolledBack {
            healthy,
            failed,
            reason,
        } => vec![with_health(base(
            Some(healthy.clone()),
            "RolledBack",
            format!("{failed} failed its health gate: {reason}"),
        ))],
        Outcome::HealthFailed {
            revision, reason, ..
        } => {
            vec![with_health(base(
                Some(revision.clone()),
                "HealthCheckFailed",
                reason.clone(),
            ))]
        }
        Outcome::RollbackFailed {
            failed,
            reason,
            rollback,
        } => vec![with_health(base(
            Some(failed.clone()),
            "RollbackFailed",
            format!("{reason}; the rollback failed: {rollback}"),
        ))],
        Outcome::Failed {
            revision,
            reason,
            message,
            ..
        } => {
            let revision = revision.as_ref().map(|r| r.id());
            let repeated = last.is_some_and(|l| l.result == *reason && l.revision == revision);
            if repeated {
                Vec::new()
            } else {
                vec![base(
                    revision,
                    reason,
                    message
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(300)
                        .collect(),
                )]
            }
        }
    }
}

/// The skipped commits that the recent history does not already tell of
/// (after a force-push, what lies between the last commit tried and the
/// new head may include commits applied before).
pub fn unrecorded(
    skipped: Vec<crate::source::Revision>,
    recent: &[Entry],
) -> Vec<crate::source::Revision> {
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
    use super::*;
    use proptest::prelude::*;

    fn entry(result: &str) -> Entry {
        Entry {
            time: "2027-01-01T00:00:00Z".into(),
            environment: "ferry-system/dev".into(),
            revision: Some("main@sha1:abc".into()),
            trigger: "interval".into(),
            result: result.into(),
            ..Entry::default()
        }
    }

    fn chain(results: &[&str]) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for r in results {
            let sealed = seal(entry(r), out.last());
            out.push(sealed);
        }
        out
    }

    #[test]
    fn a_sealed_chain_verifies_and_names_its_head() {
        let entries = chain(&["Applied", "HealthCheckFailed", "RolledBack"]);
        assert_eq!(entries[0].previous, GENESIS);
        assert_eq!(entries[2].sequence, 3);
        let verified = verify(&entries, 1).unwrap();
        assert_eq!(
            (verified.entries, verified.head.as_str()),
            (3, entries[2].sha256.as_str())
        );
        assert_eq!(verify(&[], 1).unwrap().head, GENESIS);
    }

    #[test]
    fn a_changed_entry_is_named() {
        let mut entries = chain(&["Applied", "HealthCheckFailed", "RolledBack"]);
        entries[1].result = "Healthy".into();
        assert!(matches!(
            verify(&entries, 1),
            Err(Break::Changed { sequence: 2, .. })
        ));
        // Rehashing the changed entry does not help: the next one no longer links.
        entries[1].sha256 = hash(&entries[1]);
        assert!(matches!(
            verify(&entries, 1),
            Err(Break::Unlinked { sequence: 3, .. })
        ));
    }

    #[test]
    fn removed_and_reordered_entries_are_named() {
        let entries = chain(&["a", "b", "c", "d"]);
        let removed = [entries[0].clone(), entries[2].clone(), entries[3].clone()];
        assert_eq!(verify(&removed, 1), Err(Break::Missing { from: 2, to: 2 }));
        let reordered = [entries[0].clone(), entries[2].clone(), entries[1].clone()];
        assert!(matches!(
            verify(&reordered, 1),
            Err(Break::Missing { from: 2, to: 2 })
        ));
        let swapped = [entries[1].clone(), entries[0].clone()];
        assert!(matches!(verify(&swapped, 1), Err(Break::Missing { .. })));
        let first_gone = &entries[1..];
        assert_eq!(
            verify(first_gone, 1),
            Err(Break::Missing { from: 1, to: 1 })
        );
        // Rotated away on purpose: verification starts where the kept part does.
        assert!(verify(first_gone, 2).is_ok());
        let duplicated = [entries[0].clone(), entries[1].clone(), entries[1].clone()];
        assert!(matches!(
            verify(&duplicated, 1),
            Err(Break::Reordered {
                sequence: 2,
                expected: 3
            })
        ));
    }

    #[test]
    fn images_are_found_in_pod_templates() {
        let objects = vec![
            serde_json::json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"image": "b:1"}, {"image": "a:2"}], "initContainers": [{"image": "a:2"}]}}}}),
            serde_json::json!({"kind": "ConfigMap", "data": {"image": "not-an-image"}}),
        ];
        assert_eq!(images(&objects), ["a:2", "b:1"]);
    }

    fn revision(commit: &str) -> crate::source::Revision {
        crate::source::Revision {
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

    #[test]
    fn outcomes_record_what_an_auditor_asks_for() {
        use crate::apply::Applied;
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
        let results: Vec<(&str, Option<&str>)> = e
            .iter()
            .map(|e| (e.result.as_str(), e.revision.as_deref()))
            .collect();
        assert_eq!(
            results,
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
        let results: Vec<&str> = e.iter().map(|e| e.result.as_str()).collect();
        assert_eq!(results, ["HealthCheckFailed", "RollingBack"]);
        assert_eq!(e[0].revision.as_deref(), Some("main@sha1:bad"));
        assert_eq!(e[0].durations.get("health"), Some(&6000));

        let progressing = Outcome::Progressing {
            message: "waiting".into(),
            http_streaks: vec![],
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

    proptest! {
        /// Untrusted history read back from the cluster: verifying never
        /// panics, and any single changed byte of a summary is caught.
        #[test]
        fn verification_catches_any_edit(summary in "\\PC{0,20}", other in "\\PC{1,20}", at in 0usize..3) {
            let mut entries = chain(&["a", "b", "c"]);
            for e in &mut entries { e.summary = summary.clone(); }
            let entries = {
                let mut fixed: Vec<Entry> = Vec::new();
                for e in entries { let s = seal(e, fixed.last()); fixed.push(s); }
                fixed
            };
            prop_assert!(verify(&entries, 1).is_ok());
            let mut edited = entries.clone();
            if edited[at].summary != other {
                edited[at].summary = other;
                prop_assert!(verify(&edited, 1).is_err());
            }
        }
    }
}
