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

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::crd::history::{Commit, Entry, GENESIS};

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
    #[error(
        "entries {from} to {to} are missing at the end: {by} names entry {to}, the history ends before it (its newest chunk was deleted or trimmed)"
    )]
    TailMissing { from: u64, to: u64, by: String },
    #[error(
        "entry {sequence} is not the one {by} names: the history holds {recorded}, the witness {witnessed}"
    )]
    Replaced {
        sequence: u64,
        recorded: String,
        witnessed: String,
        by: String,
    },
}

/// A chain head seen outside the journal: in the Environment's
/// `status.history`, or in a GitHub deployment status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    pub sequence: u64,
    pub sha256: String,
    /// Who saw it, for the message ("the Environment's status", "GitHub
    /// deployment 12").
    pub by: String,
}

/// The heads the Environment's `status.history` names.
pub fn witnessed_by_status(entries: &[Entry]) -> Vec<Witnessed> {
    entries
        .iter()
        .map(|e| Witnessed {
            sequence: e.sequence,
            sha256: e.sha256.clone(),
            by: "the Environment's status".to_owned(),
        })
        .collect()
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

/// [`verify`], and the entries the witnesses name (the Environment's
/// `status.history`, written with every status write; the heads in GitHub's
/// deployment statuses) are there, the same: a deleted or trimmed tail,
/// which the chain alone cannot show (the entries left still link), is
/// caught up to the newest witnessed entry.
pub fn verify_against(
    entries: &[Entry],
    first: u64,
    witness: &[Witnessed],
) -> Result<Verified, Break> {
    let verified = verify(entries, first)?;
    let last = entries
        .last()
        .map_or(first.saturating_sub(1), |e| e.sequence);
    if let Some(newest) = witness.iter().max_by_key(|w| w.sequence)
        && newest.sequence > last
    {
        return Err(Break::TailMissing {
            from: last + 1,
            to: newest.sequence,
            by: newest.by.clone(),
        });
    }
    for w in witness {
        let held = entries.iter().find(|e| e.sequence == w.sequence);
        if let Some(e) = held
            && e.sha256 != w.sha256
        {
            return Err(Break::Replaced {
                sequence: w.sequence,
                recorded: e.sha256.clone(),
                witnessed: w.sha256.clone(),
                by: w.by.clone(),
            });
        }
    }
    Ok(verified)
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
    fn a_truncated_tail_and_a_replaced_entry_are_named_against_the_status() {
        let entries = chain(&["a", "b", "c", "d", "e"]);
        let status = &witnessed_by_status(&entries[2..]);
        assert!(verify_against(&entries, 1, status).is_ok());
        // The newest chunk deleted, or its last entries trimmed: the rest
        // still links, the status names what is gone.
        assert!(verify(&entries[..3], 1).is_ok());
        assert_eq!(
            verify_against(&entries[..3], 1, status),
            Err(Break::TailMissing {
                from: 4,
                to: 5,
                by: "the Environment's status".into()
            })
        );
        assert_eq!(
            verify_against(&[], 1, status),
            Err(Break::TailMissing {
                from: 1,
                to: 5,
                by: "the Environment's status".into()
            })
        );
        // The tail rewritten by someone who re-sealed it: the chain holds,
        // the status names other hashes.
        let mut rewritten = entries[..3].to_vec();
        let mut forged = entries[3].clone();
        forged.result = "Healthy".into();
        let forged = seal(forged, rewritten.last());
        rewritten.push(forged);
        rewritten.push(seal(entries[4].clone(), rewritten.last()));
        assert!(verify(&rewritten, 1).is_ok());
        assert!(matches!(
            verify_against(&rewritten, 1, status),
            Err(Break::Replaced { sequence: 4, .. })
        ));
        // A middle chunk dropped is the chain's own finding.
        let dropped = [&entries[..1], &entries[3..]].concat();
        assert_eq!(
            verify_against(&dropped, 1, status),
            Err(Break::Missing { from: 2, to: 3 })
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
