//! What GitHub is told, decided from what happened: pure, so the mapping
//! from the audit history to deployment statuses is tested without a
//! server.
//!
//! Guarantees: every status names its verdict and the history's chain
//! head at that moment (the outside witness of the history), within
//! GitHub's 140 characters; only a rollback opens a second deployment of
//! a commit; entries that are not about a commit are not reported.

use crate::audit::chain::Entry;

/// GitHub's limit on a status description.
pub const DESCRIPTION_LIMIT: usize = 140;

/// A deployment status state (GitHub's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Queued,
    InProgress,
    Success,
    Failure,
    Error,
}

impl State {
    pub fn deployment(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::InProgress => "in_progress",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }

    /// The commit status that says the same.
    pub fn commit(self) -> &'static str {
        match self {
            State::Queued | State::InProgress => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// What the reconciler hands the reporter.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A revision is about to be applied; `rollback_from` names the failed
    /// revision when this is a rollback to a healthy commit.
    Started {
        revision: String,
        rollback_from: Option<String>,
    },
    /// An entry was appended to the history.
    Recorded(Box<Entry>),
}

/// One status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub commit: String,
    /// Open a new deployment of the commit (a rollback) instead of using
    /// the commit's latest one.
    pub new_deployment: bool,
    pub state: State,
    pub description: String,
    /// The history entry it comes from, for `log_url`.
    pub sequence: Option<u64>,
}

/// The commit of `ref@sha1:commit`.
pub fn commit_of(revision: &str) -> Option<&str> {
    revision
        .rsplit_once("@sha1:")
        .map(|(_, commit)| commit)
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_hexdigit()))
}

/// `verdict`, then the chain head, cut so the whole fits GitHub's limit
/// (the head is never cut: it is the witness).
pub fn describe(verdict: &str, entry: Option<&Entry>) -> String {
    let witness = entry
        .map(|e| format!(" [#{} {}]", e.sequence, e.sha256))
        .unwrap_or_default();
    let room = DESCRIPTION_LIMIT.saturating_sub(witness.chars().count());
    let verdict = verdict.split_whitespace().collect::<Vec<_>>().join(" ");
    let verdict: String = if verdict.chars().count() > room {
        let mut cut: String = verdict.chars().take(room.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        verdict
    };
    let mut text = format!("{verdict}{witness}");
    if text.chars().count() > DESCRIPTION_LIMIT {
        text = text.chars().take(DESCRIPTION_LIMIT).collect();
    }
    text
}

/// The statuses a step calls for.
pub fn posts(step: &Step) -> Vec<Post> {
    match step {
        Step::Started {
            revision,
            rollback_from,
        } => {
            let Some(commit) = commit_of(revision) else {
                return Vec::new();
            };
            let verdict = match rollback_from {
                Some(failed) => format!("rolling back from {}", short(failed)),
                None => "fetched and rendered; applying".to_owned(),
            };
            vec![Post {
                commit: commit.to_owned(),
                new_deployment: rollback_from.is_some(),
                state: State::Queued,
                description: describe(&verdict, None),
                sequence: None,
            }]
        }
        Step::Recorded(entry) => {
            let Some(commit) = entry.revision.as_deref().and_then(commit_of) else {
                return Vec::new();
            };
            // A commit that was never tried has no deployment.
            if entry.result == "Superseded" {
                return Vec::new();
            }
            let (state, verdict) = match entry.result.as_str() {
                "Applied" => (
                    State::InProgress,
                    format!("applied ({}); health gate running", entry.summary),
                ),
                "RollingBack" => (
                    State::InProgress,
                    format!("{}; health gate running", entry.summary),
                ),
                "Healthy" => (State::Success, "healthy".to_owned()),
                "RolledBack" => (State::Success, format!("healthy again: {}", entry.summary)),
                "HealthCheckFailed" => (
                    State::Failure,
                    format!("failed its health gate: {}", entry.summary),
                ),
                "RollbackFailed" => (State::Failure, entry.summary.clone()),
                reason => (State::Error, format!("{reason}: {}", entry.summary)),
            };
            vec![Post {
                commit: commit.to_owned(),
                new_deployment: false,
                state,
                description: describe(&verdict, Some(entry)),
                sequence: Some(entry.sequence),
            }]
        }
    }
}

/// `ref@sha1:0123456789ab…` as `ref@0123456`.
fn short(revision: &str) -> String {
    match revision.rsplit_once("@sha1:") {
        Some((reference, commit)) => {
            format!("{reference}@{}", commit.chars().take(7).collect::<String>())
        }
        None => revision.chars().take(40).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "main@sha1:1111111111111111111111111111111111111111";
    const BAD: &str = "main@sha1:2222222222222222222222222222222222222222";

    fn recorded(entry: Entry) -> Step {
        Step::Recorded(Box::new(entry))
    }

    fn entry(sequence: u64, revision: &str, result: &str, summary: &str) -> Entry {
        Entry {
            sequence,
            revision: Some(revision.to_owned()),
            result: result.to_owned(),
            summary: summary.to_owned(),
            sha256: format!("sha256:{}", "ab".repeat(32)),
            ..Entry::default()
        }
    }

    #[test]
    fn a_release_goes_queued_in_progress_success() {
        let started = posts(&Step::Started {
            revision: GOOD.into(),
            rollback_from: None,
        });
        let applied = posts(&recorded(entry(1, GOOD, "Applied", "1 created")));
        let healthy = posts(&recorded(entry(2, GOOD, "Healthy", "")));
        let states: Vec<_> = [started, applied, healthy]
            .iter()
            .flatten()
            .map(|p| (p.state, p.new_deployment, p.commit.chars().next()))
            .collect();
        assert_eq!(
            states,
            [
                (State::Queued, false, Some('1')),
                (State::InProgress, false, Some('1')),
                (State::Success, false, Some('1'))
            ]
        );
    }

    #[test]
    fn a_rollback_fails_the_bad_commit_and_opens_a_deployment_of_the_good_one() {
        let failed = posts(&recorded(entry(3, BAD, "HealthCheckFailed", "crash loop")));
        assert_eq!(failed[0].state, State::Failure);
        assert!(failed[0].commit.starts_with('2'));
        assert!(failed[0].description.contains("crash loop"));
        let back = posts(&Step::Started {
            revision: GOOD.into(),
            rollback_from: Some(BAD.into()),
        });
        assert!(back[0].new_deployment);
        assert_eq!(back[0].description, "rolling back from main@2222222");
        let healthy = posts(&recorded(entry(5, GOOD, "RolledBack", "x failed")));
        assert_eq!(healthy[0].state, State::Success);
        assert!(!healthy[0].new_deployment);
    }

    #[test]
    fn failures_before_the_gate_are_errors_and_entries_without_a_commit_are_skipped() {
        assert!(posts(&recorded(entry(1, BAD, "Superseded", "never applied"))).is_empty());
        let render = posts(&recorded(entry(1, BAD, "RenderFailed", "no kind")));
        assert_eq!(render[0].state, State::Error);
        assert!(render[0].description.starts_with("RenderFailed: no kind"));
        let mut fetch = entry(2, GOOD, "FetchFailed", "timeout");
        fetch.revision = None;
        assert!(posts(&recorded(fetch)).is_empty());
        assert!(
            posts(&Step::Started {
                revision: "main@sha1:not-hex".into(),
                rollback_from: None
            })
            .is_empty()
        );
    }

    #[test]
    fn the_description_keeps_the_whole_chain_head() {
        let long = "why ".repeat(100);
        let post = posts(&recorded(entry(42, BAD, "HealthCheckFailed", &long)));
        let text = &post[0].description;
        assert!(text.chars().count() <= DESCRIPTION_LIMIT, "{text}");
        assert!(text.ends_with(&format!("[#42 sha256:{}]", "ab".repeat(32))));
        assert!(text.contains('…'));
    }

    proptest! {
        #[test]
        fn descriptions_always_fit(verdict in ".{0,400}", sequence in any::<u64>()) {
            let e = entry(sequence, GOOD, "Healthy", "");
            prop_assert!(describe(&verdict, Some(&e)).chars().count() <= DESCRIPTION_LIMIT);
            prop_assert!(describe(&verdict, None).chars().count() <= DESCRIPTION_LIMIT);
        }

        #[test]
        fn any_revision_text_is_handled(revision in ".{0,80}", result in "[A-Za-z]{0,20}") {
            let _ = posts(&Step::Started { revision: revision.clone(), rollback_from: Some(revision.clone()) });
            let _ = posts(&recorded(entry(1, &revision, &result, &revision)));
        }
    }
}
