//! Which Environment owns an object in the cluster, and what that allows.
//!
//! Every object ferry applies for an Environment carries the label
//! [`ENVIRONMENT_LABEL`] with the Environment's identity ([`owner_id`]).
//! An object that existed before ferry first applied it also carries
//! [`ADOPTED_ANNOTATION`]: when it leaves git it is released (the label
//! and annotation removed, the object left as it is), never deleted.
//!
//! Guarantees (pure functions, unit-tested): an object labelled for
//! another Environment is never applied or pruned by this one
//! ([`Ownership::Elsewhere`] is a conflict naming the owner); prune may
//! delete only objects labelled for this Environment and not adopted.

use serde_json::Value;
use sha2::{Digest, Sha256};

use ferry_manifests::render::transform::set;

/// Label naming the owning Environment: `NAMESPACE.NAME` (apart from the
/// `ferry.dev/environment` label overlays may set for their own use).
pub const ENVIRONMENT_LABEL: &str = "ferry.dev/owned-by";
/// Set to `"true"` on objects that existed before ferry applied them.
pub const ADOPTED_ANNOTATION: &str = "ferry.dev/adopted";
/// Opt-out of drift correction per object, as Flux's
/// `kustomize.toolkit.fluxcd.io/ssa`: `Override` (default: git wins, hand
/// edits of fields git sets are reverted), `IfNotPresent` (created from
/// git when missing, then left to people), `Ignore` (never applied nor
/// pruned).
pub const SSA_ANNOTATION: &str = "ferry.dev/ssa";

/// The label value for Environment `namespace/name`. Label values hold at
/// most 63 characters: longer identities keep a prefix and a hash.
pub fn owner_id(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    if full.len() <= 63 {
        return full;
    }
    let hash = hex::encode(Sha256::digest(full.as_bytes()));
    let prefix: String = full.chars().take(52).collect();
    format!(
        "{}-{}",
        prefix.trim_end_matches(['.', '-', '_']),
        &hash[..10]
    )
}

/// The per-object policy of [`SSA_ANNOTATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsaPolicy {
    Override,
    IfNotPresent,
    Ignore,
}

/// The policy an object asks for; unknown values are errors so a typo
/// does not silently mean "Override".
pub fn ssa_policy(desired: &Value) -> Result<SsaPolicy, String> {
    match desired
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SSA_ANNOTATION))
        .and_then(Value::as_str)
    {
        None => Ok(SsaPolicy::Override),
        Some(v) if v.eq_ignore_ascii_case("override") => Ok(SsaPolicy::Override),
        Some(v) if v.eq_ignore_ascii_case("ifnotpresent") => Ok(SsaPolicy::IfNotPresent),
        Some(v) if v.eq_ignore_ascii_case("ignore") => Ok(SsaPolicy::Ignore),
        Some(v) => Err(format!(
            "annotation {SSA_ANNOTATION}: {v:?} is not Override, IfNotPresent or Ignore"
        )),
    }
}

/// Who owns a live object, from this Environment's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Not in the cluster: applying creates it, and it is ours.
    Absent,
    /// Labelled for this Environment (or in its inventory from before
    /// labels): ours.
    Ours { adopted: bool },
    /// In the cluster without an owner: applying adopts it.
    Unowned,
    /// Labelled for another Environment.
    Elsewhere(String),
}

fn label<'a>(live: &'a Value, key: &str) -> Option<&'a str> {
    live.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// Whether the live object carries the adopted mark.
pub fn is_adopted(live: &Value) -> bool {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(ADOPTED_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

/// Classifies `live` for the Environment `owner`. `in_inventory`: the
/// object is in this Environment's inventory (objects applied before
/// ferry labelled them are ours, not adopted).
pub fn classify(live: Option<&Value>, owner: &str, in_inventory: bool) -> Ownership {
    let Some(live) = live else {
        return Ownership::Absent;
    };
    match label(live, ENVIRONMENT_LABEL) {
        Some(o) if o == owner => Ownership::Ours {
            adopted: is_adopted(live),
        },
        Some(other) => Ownership::Elsewhere(other.to_owned()),
        None if in_inventory => Ownership::Ours { adopted: false },
        None => Ownership::Unowned,
    }
}

/// The object to apply: `desired` with the owner label, and the adopted
/// mark when the object was adopted (now or before).
pub fn stamp(desired: &Value, owner: &str, ownership: &Ownership) -> Value {
    let mut object = desired.clone();
    set(
        &mut object,
        &["metadata", "labels", ENVIRONMENT_LABEL],
        owner.into(),
    );
    let adopted = matches!(
        ownership,
        Ownership::Unowned | Ownership::Ours { adopted: true }
    );
    if adopted {
        set(
            &mut object,
            &["metadata", "annotations", ADOPTED_ANNOTATION],
            "true".into(),
        );
    }
    object
}

/// What pruning does with an object of the inventory that left git.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneVerdict {
    /// Ours and created by ferry: delete it.
    Delete,
    /// Ours but adopted: remove the label and mark, leave the object.
    Release,
    /// Not ours (label removed or changed by someone): leave it alone.
    Skip,
}

/// The prune verdict for a live object of the inventory.
pub fn prune_verdict(live: &Value, owner: &str) -> PruneVerdict {
    match label(live, ENVIRONMENT_LABEL) {
        Some(o) if o == owner && is_adopted(live) => PruneVerdict::Release,
        Some(o) if o == owner => PruneVerdict::Delete,
        _ => PruneVerdict::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels, "annotations": annotations}})
    }

    #[test]
    fn owner_ids_fit_a_label_value() {
        assert_eq!(owner_id("ferry-system", "dev"), "ferry-system.dev");
        let long = owner_id(&"n".repeat(63), &"e".repeat(200));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, owner_id(&"n".repeat(63), &"f".repeat(200)));
    }

    #[test]
    fn ownership_from_the_label() {
        let me = "sys.dev";
        assert_eq!(classify(None, me, false), Ownership::Absent);
        let ours = live(json!({ENVIRONMENT_LABEL: me}), json!({}));
        assert_eq!(
            classify(Some(&ours), me, false),
            Ownership::Ours { adopted: false }
        );
        let theirs = live(json!({ENVIRONMENT_LABEL: "sys.prod"}), json!({}));
        assert_eq!(
            classify(Some(&theirs), me, true),
            Ownership::Elsewhere("sys.prod".into())
        );
        let bare = live(json!({}), json!({}));
        assert_eq!(classify(Some(&bare), me, false), Ownership::Unowned);
        assert_eq!(
            classify(Some(&bare), me, true),
            Ownership::Ours { adopted: false }
        );
        // Labels that are not a mapping are no labels.
        let odd = json!({"metadata": {"labels": "x"}});
        assert_eq!(classify(Some(&odd), me, false), Ownership::Unowned);
    }

    #[test]
    fn adopted_objects_are_released_never_deleted() {
        let me = "sys.dev";
        let adopted = stamp(
            &json!({"metadata": {"name": "ns"}}),
            me,
            &Ownership::Unowned,
        );
        assert_eq!(
            adopted["metadata"]["annotations"][ADOPTED_ANNOTATION],
            "true"
        );
        assert_eq!(prune_verdict(&adopted, me), PruneVerdict::Release);
        let created = stamp(&json!({"metadata": {"name": "cm"}}), me, &Ownership::Absent);
        assert!(created["metadata"].get("annotations").is_none());
        assert_eq!(prune_verdict(&created, me), PruneVerdict::Delete);
        // The mark survives later applies.
        let again = stamp(
            &json!({"metadata": {"name": "ns"}}),
            me,
            &Ownership::Ours { adopted: true },
        );
        assert_eq!(prune_verdict(&again, me), PruneVerdict::Release);
        assert_eq!(prune_verdict(&created, "sys.prod"), PruneVerdict::Skip);
        assert_eq!(prune_verdict(&json!({}), me), PruneVerdict::Skip);
    }

    #[test]
    fn ssa_policies() {
        let with = |v: &str| json!({"metadata": {"annotations": {SSA_ANNOTATION: v}}});
        assert_eq!(ssa_policy(&json!({})), Ok(SsaPolicy::Override));
        assert_eq!(
            ssa_policy(&with("IfNotPresent")),
            Ok(SsaPolicy::IfNotPresent)
        );
        assert_eq!(ssa_policy(&with("Ignore")), Ok(SsaPolicy::Ignore));
        assert!(ssa_policy(&with("Sometimes")).is_err());
    }
}
