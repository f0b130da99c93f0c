//! Shards: when one controller is no longer enough, several share the
//! Environments by a label. A controller started with `--shard NAME`
//! reconciles only Environments labelled `ferry.dev/shard: NAME`; the one
//! without `--shard` takes those without the label. Each shard elects its
//! own leader (its own Lease), so two shards never wait for each other and
//! no Environment is reconciled by two controllers.
//!
//! The split is made by the API server (a label selector on the watches),
//! so a controller never even holds another shard's Environments. Moving
//! an Environment is relabelling it: the old shard's watch reports it
//! gone, the new one's reports it added.

/// The label that assigns an Environment to a shard.
pub const LABEL: &str = "ferry.dev/shard";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a shard name: 1 to 40 lowercase letters, digits and '-', starting and ending with a letter or digit (it names a Lease and a label value)"
)]
pub struct ShardError(String);

/// Which Environments this controller reconciles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shard {
    /// Those without the label.
    Unsharded,
    /// Those labelled with this name.
    Named(String),
}

impl Shard {
    /// `--shard NAME` (None: unsharded).
    pub fn new(name: Option<&str>) -> Result<Shard, ShardError> {
        let Some(name) = name else {
            return Ok(Shard::Unsharded);
        };
        let inner_ok = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ends_ok = !name.starts_with('-') && !name.ends_with('-');
        if name.is_empty() || name.len() > 40 || !inner_ok || !ends_ok {
            return Err(ShardError(name.to_owned()));
        }
        Ok(Shard::Named(name.to_owned()))
    }

    /// The label selector of this shard's watches.
    pub fn selector(&self) -> String {
        match self {
            Shard::Unsharded => format!("!{LABEL}"),
            Shard::Named(name) => format!("{LABEL}={name}"),
        }
    }

    /// The Lease this shard's replicas elect their leader with.
    pub fn lease(&self) -> String {
        match self {
            Shard::Unsharded => "ferry-controller".to_owned(),
            Shard::Named(name) => format!("ferry-controller-shard-{name}"),
        }
    }

    /// For logs and metrics: the name, or "" unsharded.
    pub fn name(&self) -> &str {
        match self {
            Shard::Unsharded => "",
            Shard::Named(name) => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selectors split the Environments without overlap: the
    /// unsharded controller asks for those without the label, a shard for
    /// its own value (the lab test
    /// `shards_split_the_environments_and_none_is_reconciled_by_two`
    /// shows the API server applying them).
    #[test]
    fn each_shard_selects_its_own_and_elects_with_its_own_lease() {
        let shards = [
            Shard::new(None).unwrap(),
            Shard::new(Some("a")).unwrap(),
            Shard::new(Some("b-2")).unwrap(),
        ];
        assert_eq!(shards[0].selector(), "!ferry.dev/shard");
        assert_eq!(shards[1].selector(), "ferry.dev/shard=a");
        assert_eq!(shards[2].selector(), "ferry.dev/shard=b-2");
        assert_eq!(shards[0].lease(), "ferry-controller");
        assert_eq!(shards[2].lease(), "ferry-controller-shard-b-2");
    }

    #[test]
    fn shard_names_are_label_values_and_lease_names() {
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a b", &"x".repeat(41)] {
            assert!(Shard::new(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(Shard::new(Some(&"x".repeat(40))).is_ok());
    }
}
