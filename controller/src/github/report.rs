//! What GitHub is told, decided from what happened: pure, so the mapping
//! from the audit history to deployment statuses is tested without a
//! server.
//!
//! Guarantees: every status names its verdict and the history's chain
//! head at that moment (the outside witness of the history), within
//! GitHub's 140 characters, and [`witnessed`] reads that head back; only
//! a rollback opens a second deployment of a commit; a commit superseded
//! before it was applied is reported `inactive`; entries that are not
//! about a commit are not reported (the next one that is witnesses them,
//! as each head covers every entry before it).

use crate::audit::chain::{Entry, Witnessed};

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
    /// Never applied: a newer commit came first.
    Inactive,
}

impl State {
    pub fn deployment(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::InProgress => "in_progress",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
            State::Inactive => "inactive",
        }
    }

    /// The commit status that says the same, if one does (a commit that
    /// was never applied gets none).
    pub fn commit(self) -> Option<&'static str> {
        match self {
            State::Queued | State::InProgress => Some("pending"),
            State::Success => Some("success"),
            State::Failure => Some("failure"),
            State::Error => Some("error"),
            State::Inactive => None,
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
    /// Nothing new: the Environment was reconciled. Lets the reporter
    /// post what GitHub missed (after a restart, or statuses it dropped)
    /// even when nothing happens.
    Reconciled,
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
            let (state, verdict) = match entry.result.as_str() {
                "Superseded" => (State::Inactive, format!("never applied: {}", entry.summary)),
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
        Step::Reconciled => Vec::new(),
    }
}

/// The chain head a status description names (`... [#12 sha256:...]`), if
/// it names one. Descriptions are read back from GitHub: untrusted.
pub fn witnessed(description: &str, by: &str) -> Option<Witnessed> {
    let (_, head) = description.trim_end().rsplit_once("[#")?;
    let (sequence, sha256) = head.strip_suffix(']')?.split_once(' ')?;
    let hex = sha256.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(())?;
    Some(Witnessed {
        sequence: sequence.parse().ok().filter(|s| *s > 0)?,
        sha256: sha256.to_owned(),
        by: by.to_owned(),
    })
}

/// At most this many commits get their statuses posted again by
/// [`catch_up`]; older ones keep what GitHub has (the newest head still
/// witnesses every entry before it).
pub const CATCH_UP_COMMITS: usize = 10;

/// What to post so GitHub tells what the history after entry `witnessed`
/// (the newest head GitHub holds) tells: the last status of each commit
/// named there, oldest first. When GitHub holds no head at all, only the
/// newest commit's (an Environment that starts reporting does not open a
/// deployment for each commit it ever applied).
pub fn catch_up(entries: &[Entry], witnessed: u64) -> Vec<Post> {
    let mut last_of_commit: Vec<Post> = Vec::new();
    for entry in entries.iter().filter(|e| e.sequence > witnessed) {
        for post in posts(&Step::Recorded(Box::new(entry.clone()))) {
            last_of_commit.retain(|p| p.commit != post.commit);
            last_of_commit.push(post);
        }
    }
    let keep = if witnessed == 0 { 1 } else { CATCH_UP_COMMITS };
    let skip = last_of_commit.len().saturating_sub(keep);
    last_of_commit.split_off(skip)
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
        let superseded = posts(&recorded(entry(
            1,
            BAD,
            "Superseded",
            "main@3333333 came first",
        )));
        assert_eq!(superseded[0].state, State::Inactive);
        assert_eq!(superseded[0].state.commit(), None);
        assert!(
            superseded[0]
                .description
                .starts_with("never applied: main@3333333 came first [#1 ")
        );
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

    #[test]
    fn the_head_a_status_names_is_read_back() {
        let post = &posts(&recorded(entry(42, BAD, "HealthCheckFailed", "x ]")))[0];
        let head = witnessed(&post.description, "GitHub").unwrap();
        assert_eq!((head.sequence, head.sha256.len()), (42, 71));
        for text in [
            "fetched and rendered; applying",
            "[#0 sha256:abab]",
            "healthy [#x sha256:abababababababababababababababababababababababababababababababab]",
            "healthy [#3 sha1:abababababababababababababababababababababababababababababababab]",
            "healthy [#3 sha256:zbababababababababababababababababababababababababababababababab]",
        ] {
            assert_eq!(witnessed(text, "GitHub"), None, "{text}");
        }
    }

    #[test]
    fn catching_up_posts_the_last_status_of_each_commit_github_missed() {
        let history = [
            entry(1, GOOD, "Applied", "1 created"),
            entry(2, GOOD, "Healthy", ""),
            entry(3, BAD, "Applied", "1 updated"),
            entry(4, BAD, "HealthCheckFailed", "crash loop"),
            entry(5, GOOD, "RollingBack", "back to good"),
            entry(6, GOOD, "RolledBack", "bad failed"),
        ];
        let missed = catch_up(&history, 2);
        let told: Vec<_> = missed
            .iter()
            .map(|p| (p.commit.chars().next(), p.state, p.sequence))
            .collect();
        assert_eq!(
            told,
            [
                (Some('2'), State::Failure, Some(4)),
                (Some('1'), State::Success, Some(6))
            ]
        );
        assert!(catch_up(&history, 6).is_empty());
        // GitHub knows nothing yet: only the newest commit.
        assert_eq!(catch_up(&history, 0).len(), 1);
        let many: Vec<Entry> = (1..=30)
            .map(|i| entry(i, &format!("main@sha1:{:040x}", i), "Healthy", ""))
            .collect();
        assert_eq!(catch_up(&many, 5).len(), CATCH_UP_COMMITS);
        assert_eq!(catch_up(&many, 5).last().unwrap().sequence, Some(30));
    }

    proptest! {
        #[test]
        fn any_description_is_read_without_panic(text in "\\PC{0,200}") {
            let _ = witnessed(&text, "GitHub");
        }

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
