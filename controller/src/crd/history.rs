//! The audit history's entry, as the Environment's status and the
//! journal hold it. Sealing and verifying the chain is [`crate::audit`]'s.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
